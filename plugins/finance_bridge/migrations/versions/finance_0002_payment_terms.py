"""Finance bridge: a company's own payment terms, beside its credit hold.

Revision ID: finance_0002
Revises: finance_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "finance_0002"
down_revision = "finance_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("finance_credit_hold") as table:
        table.add_column(sa.Column("payment_terms_days", sa.Integer()))
        table.create_check_constraint("ck_finance_credit_hold_terms",
                                      "payment_terms_days IS NULL OR (payment_terms_days >= 0 "
                                      "AND payment_terms_days <= 365)")


def downgrade() -> None:
    with op.batch_alter_table("finance_credit_hold") as table:
        table.drop_constraint("ck_finance_credit_hold_terms", type_="check")
        table.drop_column("payment_terms_days")
