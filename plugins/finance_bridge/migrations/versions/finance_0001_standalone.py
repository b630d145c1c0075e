"""Finance bridge: invoices, invoice lines, payments, exchange rates, credit holds and the links from CRM
records to the invoices made for them.

Revision ID: finance_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "finance_0001"
down_revision = None
branch_labels = ("finance_bridge",)
depends_on = "core_0001"

MONEY = sa.Numeric(18, 2)


def upgrade() -> None:
    op.create_table(
        "finance_invoice",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(30), unique=True),
        sa.Column("idempotency_key", sa.String(100), unique=True),
        sa.Column("company_id", sa.Integer()),
        sa.Column("contact_id", sa.Integer()),
        sa.Column("customer_name", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("payment_terms_days", sa.Integer(), nullable=False),
        sa.Column("issued_on", sa.Date()),
        sa.Column("due_on", sa.Date()),
        sa.Column("total", MONEY, nullable=False),
        sa.Column("paid", MONEY, nullable=False),
        sa.Column("reference", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("paid >= 0", name="ck_finance_invoice_paid"),
    )
    op.create_index("ix_finance_invoice_company", "finance_invoice", ["company_id", "created_at"])
    op.create_index("ix_finance_invoice_contact", "finance_invoice", ["contact_id", "created_at"])
    op.create_table(
        "finance_invoice_line",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("invoice_id", sa.Integer(), sa.ForeignKey("finance_invoice.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(300), nullable=False),
        sa.Column("product_code", sa.String(60)),
        sa.Column("quantity", sa.Numeric(18, 4), nullable=False),
        sa.Column("unit_price", MONEY, nullable=False),
        sa.Column("discount", sa.Numeric(18, 4), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
    )
    op.create_index("ix_finance_invoice_line_invoice_id", "finance_invoice_line", ["invoice_id"])
    op.create_table(
        "finance_payment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("invoice_id", sa.Integer(), sa.ForeignKey("finance_invoice.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("company_id", sa.Integer()),
        sa.Column("contact_id", sa.Integer()),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reference", sa.String(100)),
        sa.Column("recorded_by_id", sa.Integer(), sa.ForeignKey("ab_user.id", ondelete="SET NULL")),
        sa.CheckConstraint("amount > 0", name="ck_finance_payment_amount"),
    )
    op.create_index("ix_finance_payment_invoice_id", "finance_payment", ["invoice_id"])
    op.create_index("ix_finance_payment_recorded_by_id", "finance_payment", ["recorded_by_id"])
    op.create_index("ix_finance_payment_company", "finance_payment", ["company_id", "received_at"])
    op.create_index("ix_finance_payment_contact", "finance_payment", ["contact_id", "received_at"])
    op.create_table(
        "finance_exchange_rate",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("from_currency", sa.String(3), nullable=False),
        sa.Column("to_currency", sa.String(3), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("rate", sa.Numeric(20, 10), nullable=False),
        sa.UniqueConstraint("from_currency", "to_currency", "valid_from", name="uq_finance_exchange_rate"),
        sa.CheckConstraint("rate > 0", name="ck_finance_exchange_rate_positive"),
    )
    op.create_table(
        "finance_credit_hold",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("company_id", sa.Integer(), nullable=False, unique=True),
        sa.Column("on_hold", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(300)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "finance_invoice_link",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source_kind", sa.String(10), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("invoice_ref", sa.String(64), nullable=False),
        sa.Column("invoice_number", sa.String(64)),
        sa.Column("invoice_status", sa.String(20)),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("source_kind", "source_id", name="uq_finance_invoice_link_source"),
    )


def downgrade() -> None:
    for table in ("finance_invoice_link", "finance_credit_hold", "finance_exchange_rate", "finance_payment",
                  "finance_invoice_line", "finance_invoice"):
        op.drop_table(table)
