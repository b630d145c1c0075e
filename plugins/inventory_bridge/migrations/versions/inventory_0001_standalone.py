"""Inventory bridge: products, stock per warehouse, price lists with quantity tiers, customers' price lists.

Revision ID: inventory_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "inventory_0001"
down_revision = None
branch_labels = ("inventory_bridge",)
depends_on = None

QUANTITY = sa.Numeric(18, 4)
MONEY = sa.Numeric(18, 2)


def upgrade() -> None:
    op.create_table(
        "inventory_product",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(100), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_en", sa.String(200)),
        sa.Column("unit", sa.String(30)),
        sa.Column("stocked", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "inventory_stock",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("inventory_product.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("warehouse", sa.String(50), nullable=False),
        sa.Column("on_hand", QUANTITY, nullable=False),
        sa.Column("reserved", QUANTITY, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("product_id", "warehouse", name="uq_inventory_stock_product_warehouse"),
        sa.CheckConstraint("on_hand >= 0", name="ck_inventory_stock_on_hand"),
        sa.CheckConstraint("reserved >= 0", name="ck_inventory_stock_reserved"),
    )
    op.create_index("ix_inventory_stock_product_id", "inventory_stock", ["product_id"])
    op.create_index("ix_inventory_stock_warehouse", "inventory_stock", ["warehouse"])
    op.create_table(
        "inventory_price_list",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("valid_from", sa.Date()),
        sa.Column("valid_to", sa.Date()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from",
                           name="ck_inventory_price_list_validity"),
    )
    op.create_index("ix_inventory_price_list_currency", "inventory_price_list", ["currency", "is_default"])
    op.create_table(
        "inventory_price_list_item",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("price_list_id", sa.Integer(), sa.ForeignKey("inventory_price_list.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("inventory_product.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("min_quantity", QUANTITY, nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.UniqueConstraint("price_list_id", "product_id", "min_quantity", name="uq_inventory_price_list_item_tier"),
        sa.CheckConstraint("min_quantity >= 0", name="ck_inventory_price_list_item_min_quantity"),
        sa.CheckConstraint("price >= 0", name="ck_inventory_price_list_item_price"),
    )
    op.create_index("ix_inventory_price_list_item_price_list_id", "inventory_price_list_item", ["price_list_id"])
    op.create_index("ix_inventory_price_list_item_product_id", "inventory_price_list_item", ["product_id"])
    op.create_table(
        "inventory_customer_price_list",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("price_list_id", sa.Integer(), sa.ForeignKey("inventory_price_list.id", ondelete="CASCADE"),
                  nullable=False),
        sa.UniqueConstraint("company_id", "price_list_id", name="uq_inventory_customer_price_list"),
    )
    op.create_index("ix_inventory_customer_price_list_company_id", "inventory_customer_price_list", ["company_id"])
    op.create_index("ix_inventory_customer_price_list_price_list_id", "inventory_customer_price_list",
                    ["price_list_id"])


def downgrade() -> None:
    for table in ("inventory_customer_price_list", "inventory_price_list_item", "inventory_price_list",
                  "inventory_stock", "inventory_product"):
        op.drop_table(table)
