"""CRM: indexes for search and likely duplicates.

* lower(name) on crm_company and lower(full_name) on crm_contact: `likely_duplicates` compares names with
  `lower(...) = :name` (the list screens sort on the plain columns, which are indexed already);
* PostgreSQL: a GIN full-text index on `to_tsvector('simple', search_text)` of companies and contacts, for
  search inputs shorter than 3 characters, from which pg_trgm extracts no trigram.

Revision ID: crm_0002
Revises: crm_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "crm_0002"
down_revision = "crm_0001"
branch_labels = None
depends_on = None

FULLTEXT = {"crm_contact": "ix_crm_contact_search_fts", "crm_company": "ix_crm_company_search_fts"}


def upgrade() -> None:
    op.create_index("ix_crm_company_name_lower", "crm_company", [sa.text("lower(name)")])
    op.create_index("ix_crm_contact_full_name_lower", "crm_contact", [sa.text("lower(full_name)")])
    if op.get_bind().dialect.name == "postgresql":
        for table, name in FULLTEXT.items():
            op.create_index(name, table, [sa.text("to_tsvector('simple'::regconfig, search_text)")],
                            postgresql_using="gin")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, name in FULLTEXT.items():
            op.drop_index(name, table_name=table)
    op.drop_index("ix_crm_contact_full_name_lower", table_name="crm_contact")
    op.drop_index("ix_crm_company_name_lower", table_name="crm_company")
