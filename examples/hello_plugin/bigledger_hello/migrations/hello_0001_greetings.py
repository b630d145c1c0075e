"""Hello example: greetings.

Revision ID: hello_0001
Revises:
"""
from alembic import op
import sqlalchemy as sa

revision = "hello_0001"
down_revision = None
branch_labels = ("hello",)  # the module's own branch: its tables come and go with it
depends_on = "core_0001"     # owner and team refer to ab_user and bl_team


def upgrade() -> None:
    op.create_table(
        "hello_greeting",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message", sa.String(500), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("ab_user.id", ondelete="SET NULL"), index=True),
        sa.Column("team_id", sa.Integer(), sa.ForeignKey("bl_team.id", ondelete="SET NULL"), index=True),
    )


def downgrade() -> None:
    op.drop_table("hello_greeting")
