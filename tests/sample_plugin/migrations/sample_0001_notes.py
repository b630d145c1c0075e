"""Sample plugin: notes owned by a user and a team.

Revision ID: sample_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "sample_0001"
down_revision = None
branch_labels = ("sample",)
depends_on = "core_0001"


def upgrade() -> None:
    op.create_table(
        "sample_note",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False, unique=True),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("ab_user.id", ondelete="SET NULL"), index=True),
        sa.Column("team_id", sa.Integer(), sa.ForeignKey("bl_team.id", ondelete="SET NULL"), index=True),
    )


def downgrade() -> None:
    op.drop_table("sample_note")
