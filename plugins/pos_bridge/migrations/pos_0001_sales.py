"""POS bridge: sales with their lines, loyalty cards.

Revision ID: pos_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "pos_0001"
down_revision = None
branch_labels = ("pos_bridge",)
depends_on = "crm_0001"


def upgrade() -> None:
    op.create_table(
        "pos_sale",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=50), nullable=False),
        sa.Column("receipt", sa.String(length=64), nullable=False),
        sa.Column("sold_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("card", sa.String(length=40), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("matched_by", sa.String(length=10), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["crm_contact.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store", "receipt", name="uq_pos_sale_store_receipt"),
    )
    op.create_index("ix_pos_sale_contact_sold_at", "pos_sale", ["contact_id", "sold_at"])
    op.create_index("ix_pos_sale_sold_at", "pos_sale", ["sold_at"])
    op.create_table(
        "pos_sale_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sale_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Numeric(12, 3), nullable=False),
        sa.Column("unit_price", sa.Numeric(14, 2), nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.ForeignKeyConstraint(["sale_id"], ["pos_sale.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pos_sale_line_sale_id", "pos_sale_line", ["sale_id"])
    op.create_table(
        "pos_loyalty_card",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("tier", sa.String(length=40), nullable=True),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["crm_contact.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
    )
    op.create_index("ix_pos_loyalty_card_contact_id", "pos_loyalty_card", ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_pos_loyalty_card_contact_id", table_name="pos_loyalty_card")
    op.drop_table("pos_loyalty_card")
    op.drop_index("ix_pos_sale_line_sale_id", table_name="pos_sale_line")
    op.drop_table("pos_sale_line")
    op.drop_index("ix_pos_sale_sold_at", table_name="pos_sale")
    op.drop_index("ix_pos_sale_contact_sold_at", table_name="pos_sale")
    op.drop_table("pos_sale")
