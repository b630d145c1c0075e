"""The POS bridge's own storage: sales (receipts with lines) and loyalty cards, each matched to a CRM contact.

It answers the `pos_` module-service hooks when no POS module of the deployment does, so the 360° view and
segments show real purchases in a deployment (or a demo) without the BigLedger POS module.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask_appbuilder import Model
from sqlalchemy import (
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


class PosSale(Model):
    """One receipt of a store, recorded once: (store, receipt) is the idempotency key."""

    __tablename__ = "pos_sale"
    __table_args__ = (UniqueConstraint("store", "receipt", name="uq_pos_sale_store_receipt"),
                      Index("ix_pos_sale_contact_sold_at", "contact_id", "sold_at"),
                      Index("ix_pos_sale_sold_at", "sold_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store: Mapped[str] = mapped_column(String(50), nullable=False)
    receipt: Mapped[str] = mapped_column(String(64), nullable=False)
    sold_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    total: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    # who the terminal said the customer was, as given (card) and normalized (phone E.164, e-mail)
    card: Mapped[str | None] = mapped_column(String(40))
    phone: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="SET NULL"))
    matched_by: Mapped[str | None] = mapped_column(String(10))  # card, phone, email, created; None: unmatched
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    lines: Mapped[list[PosSaleLine]] = relationship(back_populates="sale", cascade="all, delete-orphan",
                                                    order_by="PosSaleLine.position")
    # the CRM contact, by the CRM model's name: the Store sales screen shows who bought (read only)
    contact = relationship("Contact", viewonly=True)


class PosSaleLine(Model):
    """One line of a receipt."""

    __tablename__ = "pos_sale_line"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sale_id: Mapped[int] = mapped_column(ForeignKey("pos_sale.id", ondelete="CASCADE"), nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    sku: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3), nullable=False)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)

    sale: Mapped[PosSale] = relationship(back_populates="lines")


class LoyaltyCard(Model):
    """A loyalty card with the tier and points the POS last reported, and the contact who holds it."""

    __tablename__ = "pos_loyalty_card"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="SET NULL"), index=True)
    tier: Mapped[str | None] = mapped_column(String(40))
    points: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)
