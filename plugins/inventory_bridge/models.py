"""The inventory bridge's own storage, used when no inventory module answers the `inventory_*` hooks: products,
stock per warehouse, price lists with quantity tiers, and which companies buy from which price list.

Companies are referred to by CRM id (no foreign key into the CRM's tables: the bridge's tables come and go with
the bridge). Quantities are Numeric(18, 4) like the CRM's line items; prices Numeric(18, 2) with the ISO currency
of their list.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask_appbuilder import Model
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bigledger_core.db import utcnow

QUANTITY = Numeric(18, 4)
MONEY = Numeric(18, 2)


class Product(Model):
    """Something we sell, known by the code sales reps put on line items. A product that is not stocked (a
    service, a subscription) is always available; an inactive one is no longer sold."""

    __tablename__ = "inventory_product"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    name_en: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(30))
    stocked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    stock: Mapped[list[Stock]] = relationship(back_populates="product", cascade="all, delete-orphan",
                                              order_by="Stock.warehouse")

    def __repr__(self) -> str:
        return f"{self.code} {self.name}"


class Stock(Model):
    """What one warehouse holds of a product: on hand, and how much of that is reserved for orders."""

    __tablename__ = "inventory_stock"
    __table_args__ = (
        UniqueConstraint("product_id", "warehouse", name="uq_inventory_stock_product_warehouse"),
        CheckConstraint("on_hand >= 0", name="ck_inventory_stock_on_hand"),
        CheckConstraint("reserved >= 0", name="ck_inventory_stock_reserved"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("inventory_product.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    warehouse: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    on_hand: Mapped[Decimal] = mapped_column(QUANTITY, nullable=False, default=Decimal(0))
    reserved: Mapped[Decimal] = mapped_column(QUANTITY, nullable=False, default=Decimal(0))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)

    product: Mapped[Product] = relationship(back_populates="stock")

    @property
    def available(self) -> Decimal:
        return Decimal(self.on_hand or 0) - Decimal(self.reserved or 0)


class PriceList(Model):
    """Prices in one currency. The default list of a currency prices every customer without a list of their own;
    a list applies from `valid_from` to `valid_to` (both included, either open)."""

    __tablename__ = "inventory_price_list"
    __table_args__ = (
        Index("ix_inventory_price_list_currency", "currency", "is_default"),
        CheckConstraint("valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from",
                        name="ck_inventory_price_list_validity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    valid_from: Mapped[dt.date | None] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    items: Mapped[list[PriceListItem]] = relationship(back_populates="price_list", cascade="all, delete-orphan",
                                                      order_by="PriceListItem.min_quantity")

    def __repr__(self) -> str:
        return self.name


class PriceListItem(Model):
    """The unit price of a product on a list from a quantity on (tiers: 1 and up, 50 and up…)."""

    __tablename__ = "inventory_price_list_item"
    __table_args__ = (
        UniqueConstraint("price_list_id", "product_id", "min_quantity", name="uq_inventory_price_list_item_tier"),
        CheckConstraint("min_quantity >= 0", name="ck_inventory_price_list_item_min_quantity"),
        CheckConstraint("price >= 0", name="ck_inventory_price_list_item_price"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    price_list_id: Mapped[int] = mapped_column(ForeignKey("inventory_price_list.id", ondelete="CASCADE"),
                                               nullable=False, index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("inventory_product.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    min_quantity: Mapped[Decimal] = mapped_column(QUANTITY, nullable=False, default=Decimal(1))
    price: Mapped[Decimal] = mapped_column(MONEY, nullable=False)

    price_list: Mapped[PriceList] = relationship(back_populates="items")
    product: Mapped[Product] = relationship()


class CustomerPriceList(Model):
    """A company (by CRM id) buys from this price list (in the list's currency) instead of the default list."""

    __tablename__ = "inventory_customer_price_list"
    __table_args__ = (UniqueConstraint("company_id", "price_list_id", name="uq_inventory_customer_price_list"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    company_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    price_list_id: Mapped[int] = mapped_column(ForeignKey("inventory_price_list.id", ondelete="CASCADE"),
                                               nullable=False, index=True)

    price_list: Mapped[PriceList] = relationship()
