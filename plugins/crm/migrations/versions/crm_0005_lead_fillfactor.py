"""CRM: leads keep free space in their pages (PostgreSQL fillfactor 80).

A lead's score, e-mail opens and status change often, and a rule change rescores every lead. With room on
the page, such an update writes the new row version beside the old one without touching the table's
indexes (a heap-only tuple); on full pages every update also inserts into every index of crm_lead,
the trigram index on its search text included. Existing pages get the room once rewritten
(`VACUUM FULL crm_lead`); new ones have it at once.

Revision ID: crm_0005
Revises: crm_0004
"""
from alembic import op

revision = "crm_0005"
down_revision = "crm_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE crm_lead SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE crm_lead RESET (fillfactor)")
