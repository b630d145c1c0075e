"""CRM: sales pipelines and stages, deals with line items, contacts and competitors, stage history;
activities may belong to a deal and the stage that created them.

Revision ID: crm_0003
Revises: crm_0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "crm_0003"
down_revision = "crm_0002"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(18, 2)
CUSTOM = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "crm_pipeline",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("name_en", sa.String(100)),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("key_language", sa.String(2), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "crm_stage",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pipeline_id", sa.Integer(), sa.ForeignKey("crm_pipeline.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("name_en", sa.String(100)),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Numeric(5, 4), nullable=False),
        sa.Column("activities", sa.JSON(), nullable=False),
        sa.Column("activities_required", sa.Boolean(), nullable=False),
        sa.Column("task_due_days", sa.Integer(), nullable=False),
        sa.UniqueConstraint("pipeline_id", "name", name="uq_crm_stage_pipeline_name"),
        sa.CheckConstraint("probability >= 0 AND probability <= 1", name="ck_crm_stage_probability"),
    )
    op.create_index("ix_crm_stage_pipeline_id", "crm_stage", ["pipeline_id"])
    op.create_table(
        "crm_competitor",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("website", sa.String(300)),
        sa.Column("notes", sa.Text()),
    )
    op.create_table(
        "crm_deal",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("company_id", sa.Integer(), sa.ForeignKey("crm_company.id", ondelete="RESTRICT")),
        sa.Column("contact_id", sa.Integer(), sa.ForeignKey("crm_contact.id", ondelete="SET NULL")),
        sa.Column("pipeline_id", sa.Integer(), sa.ForeignKey("crm_pipeline.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("stage_id", sa.Integer(), sa.ForeignKey("crm_stage.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("mrr", MONEY, nullable=False),
        sa.Column("probability", sa.Numeric(5, 4), nullable=False),
        sa.Column("probability_reason", sa.String(300)),
        sa.Column("forecast_category", sa.String(20)),
        sa.Column("expected_close", sa.Date()),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("close_reason", sa.String(500)),
        sa.Column("lost_to_id", sa.Integer(), sa.ForeignKey("crm_competitor.id", ondelete="SET NULL")),
        sa.Column("stage_entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(50)),
        sa.Column("channel", sa.String(100)),
        sa.Column("campaign", sa.String(200)),
        sa.Column("lead_id", sa.Integer()),
        sa.Column("description", sa.Text()),
        sa.Column("custom", CUSTOM, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("ab_user.id", ondelete="SET NULL")),
        sa.Column("team_id", sa.Integer(), sa.ForeignKey("bl_team.id", ondelete="SET NULL")),
        sa.CheckConstraint("company_id IS NOT NULL OR contact_id IS NOT NULL", name="ck_crm_deal_has_customer"),
        sa.CheckConstraint("probability >= 0 AND probability <= 1", name="ck_crm_deal_probability"),
    )
    for column in ("company_id", "contact_id", "stage_id", "lost_to_id", "source", "lead_id", "owner_id", "team_id"):
        op.create_index(f"ix_crm_deal_{column}", "crm_deal", [column])
    op.create_index("ix_crm_deal_board", "crm_deal", ["pipeline_id", "stage_id", "status"])
    op.create_index("ix_crm_deal_stage_cards", "crm_deal", ["stage_id", "status", "expected_close", "id"])
    op.create_index("ix_crm_deal_close", "crm_deal", ["status", "expected_close"])
    op.create_table(
        "crm_deal_line",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deal_id", sa.Integer(), sa.ForeignKey("crm_deal.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("product", sa.String(200), nullable=False),
        sa.Column("product_code", sa.String(100)),
        sa.Column("quantity", sa.Numeric(18, 4), nullable=False),
        sa.Column("unit_price", MONEY, nullable=False),
        sa.Column("discount", sa.Numeric(5, 4), nullable=False),
        sa.Column("billing_period", sa.String(10), nullable=False),
        sa.Column("term_months", sa.Integer()),
        sa.CheckConstraint("quantity >= 0", name="ck_crm_deal_line_quantity"),
        sa.CheckConstraint("discount >= 0 AND discount <= 1", name="ck_crm_deal_line_discount"),
    )
    op.create_index("ix_crm_deal_line_deal_id", "crm_deal_line", ["deal_id"])
    op.create_index("ix_crm_deal_line_product_code", "crm_deal_line", ["product_code"])
    op.create_table(
        "crm_deal_contact",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deal_id", sa.Integer(), sa.ForeignKey("crm_deal.id", ondelete="CASCADE"), nullable=False),
        sa.Column("contact_id", sa.Integer(), sa.ForeignKey("crm_contact.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role_id", sa.Integer(), sa.ForeignKey("crm_contact_role.id", ondelete="SET NULL")),
        sa.UniqueConstraint("deal_id", "contact_id", name="uq_crm_deal_contact"),
    )
    for column in ("deal_id", "contact_id", "role_id"):
        op.create_index(f"ix_crm_deal_contact_{column}", "crm_deal_contact", [column])
    op.create_table(
        "crm_deal_competitor",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deal_id", sa.Integer(), sa.ForeignKey("crm_deal.id", ondelete="CASCADE"), nullable=False),
        sa.Column("competitor_id", sa.Integer(), sa.ForeignKey("crm_competitor.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("notes", sa.Text()),
        sa.Column("strengths", sa.Text()),
        sa.Column("weaknesses", sa.Text()),
        sa.UniqueConstraint("deal_id", "competitor_id", name="uq_crm_deal_competitor"),
    )
    op.create_index("ix_crm_deal_competitor_deal_id", "crm_deal_competitor", ["deal_id"])
    op.create_index("ix_crm_deal_competitor_competitor_id", "crm_deal_competitor", ["competitor_id"])
    op.create_table(
        "crm_stage_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deal_id", sa.Integer(), sa.ForeignKey("crm_deal.id", ondelete="CASCADE"), nullable=False),
        sa.Column("stage_id", sa.Integer(), sa.ForeignKey("crm_stage.id", ondelete="SET NULL")),
        sa.Column("stage_name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True)),
        sa.Column("entered_by_id", sa.Integer(), sa.ForeignKey("ab_user.id", ondelete="SET NULL")),
        sa.Column("left_by_id", sa.Integer(), sa.ForeignKey("ab_user.id", ondelete="SET NULL")),
    )
    op.create_index("ix_crm_stage_history_deal", "crm_stage_history", ["deal_id", "entered_at"])
    op.create_index("ix_crm_stage_history_stage", "crm_stage_history", ["stage_id", "entered_at"])
    if op.get_bind().dialect.name == "postgresql":  # INCLUDE is PostgreSQL's; SQLite has (deal_id, entered_at)
        op.create_index("ix_crm_stage_history_conversion", "crm_stage_history", ["deal_id"],
                        postgresql_include=["stage_id", "status", "entered_at"])
    op.create_table(
        "crm_deal_summary",
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(24, 2), nullable=False),
        sa.Column("weighted", sa.Numeric(30, 6), nullable=False),
        sa.PrimaryKeyConstraint("pipeline_id", "stage_id", "status", "currency", "owner_id", "team_id", "month",
                                "category", name="pk_crm_deal_summary"),
    )
    if op.get_bind().dialect.name == "sqlite":  # SQLite adds a column's foreign key only inline
        op.execute("ALTER TABLE crm_activity ADD COLUMN deal_id INTEGER REFERENCES crm_deal (id) ON DELETE CASCADE")
        op.execute("ALTER TABLE crm_activity ADD COLUMN stage_id INTEGER REFERENCES crm_stage (id) ON DELETE SET NULL")
    else:
        op.add_column("crm_activity", sa.Column("deal_id", sa.Integer()))
        op.add_column("crm_activity", sa.Column("stage_id", sa.Integer()))
        op.create_foreign_key("fk_crm_activity_deal_id", "crm_activity", "crm_deal", ["deal_id"], ["id"],
                              ondelete="CASCADE")
        op.create_foreign_key("fk_crm_activity_stage_id", "crm_activity", "crm_stage", ["stage_id"], ["id"],
                              ondelete="SET NULL")
    op.create_index("ix_crm_activity_deal_id", "crm_activity", ["deal_id"])
    op.create_index("ix_crm_activity_stage_id", "crm_activity", ["stage_id"])


def downgrade() -> None:
    op.drop_index("ix_crm_activity_stage_id", "crm_activity")
    op.drop_index("ix_crm_activity_deal_id", "crm_activity")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("crm_activity", recreate="always") as batch:
            batch.drop_column("stage_id")
            batch.drop_column("deal_id")
    else:
        op.drop_constraint("fk_crm_activity_stage_id", "crm_activity", type_="foreignkey")
        op.drop_constraint("fk_crm_activity_deal_id", "crm_activity", type_="foreignkey")
        op.drop_column("crm_activity", "stage_id")
        op.drop_column("crm_activity", "deal_id")
    op.drop_table("crm_deal_summary")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_crm_stage_history_conversion", "crm_stage_history")
    for table in ("crm_stage_history", "crm_deal_competitor", "crm_deal_contact", "crm_deal_line", "crm_deal",
                  "crm_competitor", "crm_stage", "crm_pipeline"):
        op.drop_table(table)
