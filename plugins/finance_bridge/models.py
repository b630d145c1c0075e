"""The finance bridge's own storage, used when no finance module answers the finance hooks: invoices with
their lines, payments, exchange rates and credit holds; and, in every mode, the link from a CRM record (a won
deal) to the invoice made for it, unique so that a repeated event makes no second invoice.

Customers are referred to by CRM ids (no foreign keys into the CRM's tables: the bridge's tables come and go
with the bridge). Money is Numeric with an ISO currency; times are UTC.
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

MONEY = Numeric(18, 2)
INVOICE_STATUSES = ("draft", "issued", "paid", "void")


class Invoice(Model):
    """A customer invoice. Drafts are not yet owed; issued ones are, until paid."""

    __tablename__ = "finance_invoice"
    __table_args__ = (
        Index("ix_finance_invoice_company", "company_id", "created_at"),
        Index("ix_finance_invoice_contact", "contact_id", "created_at"),
        CheckConstraint("paid >= 0", name="ck_finance_invoice_paid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str | None] = mapped_column(String(30), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    company_id: Mapped[int | None] = mapped_column(Integer)
    contact_id: Mapped[int | None] = mapped_column(Integer)
    customer_name: Mapped[str] = mapped_column(String(200), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="draft")
    payment_terms_days: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    issued_on: Mapped[dt.date | None] = mapped_column(Date)
    due_on: Mapped[dt.date | None] = mapped_column(Date)
    total: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("0.00"))
    paid: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("0.00"))
    reference: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    lines: Mapped[list[InvoiceLine]] = relationship(back_populates="invoice", cascade="all, delete-orphan",
                                                    order_by="InvoiceLine.position")

    @property
    def outstanding(self) -> Decimal:
        return (self.total or Decimal(0)) - (self.paid or Decimal(0))

    def __repr__(self) -> str:
        return self.number or f"#{self.id}"


class InvoiceLine(Model):
    __tablename__ = "finance_invoice_line"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("finance_invoice.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    description: Mapped[str] = mapped_column(String(300), nullable=False)
    product_code: Mapped[str | None] = mapped_column(String(60))
    quantity: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False, default=Decimal(1))
    unit_price: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("0.00"))
    discount: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False, default=Decimal(0))
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class Payment(Model):
    """Money received against an invoice (in the invoice's currency)."""

    __tablename__ = "finance_payment"
    __table_args__ = (
        Index("ix_finance_payment_company", "company_id", "received_at"),
        Index("ix_finance_payment_contact", "contact_id", "received_at"),
        CheckConstraint("amount > 0", name="ck_finance_payment_amount"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("finance_invoice.id", ondelete="RESTRICT"), nullable=False,
                                            index=True)
    # copied from the invoice so that a customer's payments are read without a join
    company_id: Mapped[int | None] = mapped_column(Integer)
    contact_id: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    reference: Mapped[str | None] = mapped_column(String(100))
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), index=True)

    invoice: Mapped[Invoice] = relationship()


class ExchangeRate(Model):
    """One unit of `from_currency` buys `rate` of `to_currency` from `valid_from` on (until a later rate)."""

    __tablename__ = "finance_exchange_rate"
    __table_args__ = (
        UniqueConstraint("from_currency", "to_currency", "valid_from", name="uq_finance_exchange_rate"),
        CheckConstraint("rate > 0", name="ck_finance_exchange_rate_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    from_currency: Mapped[str] = mapped_column(String(3), nullable=False)
    to_currency: Mapped[str] = mapped_column(String(3), nullable=False)
    valid_from: Mapped[dt.date] = mapped_column(Date, nullable=False)
    rate: Mapped[Decimal] = mapped_column(Numeric(20, 10), nullable=False)


class CreditHold(Model):
    """Finance's terms for a company: a hold (new deals for it warn the sales rep) and its own payment terms
    (else BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS)."""

    __tablename__ = "finance_credit_hold"
    __table_args__ = (CheckConstraint("payment_terms_days IS NULL OR (payment_terms_days >= 0 "
                                      "AND payment_terms_days <= 365)", name="ck_finance_credit_hold_terms"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    company_id: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    on_hold: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    reason: Mapped[str | None] = mapped_column(String(300))
    payment_terms_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)


class InvoiceLink(Model):
    """The invoice made for a CRM record (`source_kind` "deal", later "quote"): at most one per record."""

    __tablename__ = "finance_invoice_link"
    __table_args__ = (UniqueConstraint("source_kind", "source_id", name="uq_finance_invoice_link_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_kind: Mapped[str] = mapped_column(String(10), nullable=False)
    source_id: Mapped[int] = mapped_column(Integer, nullable=False)
    invoice_ref: Mapped[str] = mapped_column(String(64), nullable=False)
    invoice_number: Mapped[str | None] = mapped_column(String(64))
    invoice_status: Mapped[str | None] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(36), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
