"""Project bridge: project rules, delivery projects (one per won deal) and their milestones.

Revision ID: project_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "project_0001"
down_revision = None
branch_labels = ("project_bridge",)
depends_on = "core_0001"


def upgrade() -> None:
    op.create_table(
        "project_rule",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("pipeline_id", sa.Integer()),
        sa.Column("product_code", sa.String(60)),
        sa.Column("milestones", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_project_rule_order", "project_rule", ["active", "position", "id"])
    op.create_table(
        "project_project",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(64)),
        sa.Column("idempotency_key", sa.String(100), unique=True),
        sa.Column("deal_id", sa.Integer(), unique=True),
        sa.Column("deal_name", sa.String(200)),
        sa.Column("customer_name", sa.String(200)),
        sa.Column("company_id", sa.Integer()),
        sa.Column("contact_id", sa.Integer()),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("start_on", sa.Date()),
        sa.Column("due_on", sa.Date()),
        sa.Column("rule_id", sa.Integer(), sa.ForeignKey("project_rule.id", ondelete="SET NULL")),
        sa.Column("external_id", sa.String(64)),
        sa.Column("event_id", sa.String(36)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_project_project_rule_id", "project_project", ["rule_id"])
    op.create_index("ix_project_project_company", "project_project", ["company_id", "created_at"])
    op.create_index("ix_project_project_contact", "project_project", ["contact_id", "created_at"])
    op.create_index("ix_project_project_status", "project_project", ["status", "due_on"])
    op.create_table(
        "project_milestone",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("project_project.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("due_on", sa.Date()),
        sa.Column("done_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_project_milestone_project_id", "project_milestone", ["project_id"])


def downgrade() -> None:
    for table in ("project_milestone", "project_project", "project_rule"):
        op.drop_table(table)
