"""CRM: exact name matches first in search, and a customer's activities read from the indexes alone.

* `crm_contact.pinyin` and `crm_contact.initials`: a Chinese name's pinyin and initials (`zhangwei`, `zw`),
  filled here for the contacts there are. Search shows the records whose name, pinyin or initials equal the
  input first; three indexes give them shortest name first, so a common name reads 20 index entries instead
  of sorting the thousands of records that contain it. `ix_crm_contact_full_name_lower` gets the same order
  columns (likely duplicates still use it for `lower(full_name) = …`).
* PostgreSQL: a trigram index on the e-mail addresses of companies alone. Search looks for a company's
  e-mail among those; through the index of all addresses it read every person's matching address too.
* The 360° view counts a company's activities by kind and shows the newest page: every activity on the
  company, its subsidiaries or its people, two index ranges whose union is counted and sorted. The two
  activity indexes now carry what those reads need (time, id, kind, and on the contact index the company), so
  a customer with 10,000 activities is counted and paged without visiting the table.

Revision ID: crm_0007
Revises: crm_0006
"""
import sqlalchemy as sa
from alembic import op

revision = "crm_0007"
down_revision = "crm_0006"
branch_labels = None
depends_on = None

BATCH = 5000
ORDER = [sa.text("length(full_name)"), "full_name", "id"]
ACTIVITY_BEFORE = {"ix_crm_activity_company_time": ["company_id", "occurred_at"],
                   "ix_crm_activity_contact_time": ["contact_id", "occurred_at"]}
ACTIVITY_AFTER = {"ix_crm_activity_company_time": ["company_id", "occurred_at", "id", "kind"],
                  "ix_crm_activity_contact_time": ["contact_id", "occurred_at", "id", "kind", "company_id"]}


def _activity_indexes(indexes: dict[str, list[str]]) -> None:
    for name, columns in indexes.items():
        op.drop_index(name, table_name="crm_activity")
        op.create_index(name, "crm_activity", columns)


def _fill_keys() -> None:
    """Pinyin and initials of every contact with a Chinese name, in batches by id."""
    from plugins.crm.normalize import has_chinese, name_keys

    bind = op.get_bind()
    contact = sa.table("crm_contact", sa.column("id", sa.Integer), sa.column("full_name", sa.Text),
                       sa.column("pinyin", sa.Text), sa.column("initials", sa.Text))
    update = sa.update(contact).where(contact.c.id == sa.bindparam("key")).values(
        pinyin=sa.bindparam("pinyin"), initials=sa.bindparam("initials"))
    known: dict[str, tuple[str | None, str | None]] = {}
    last = 0
    while True:
        rows = bind.execute(sa.select(contact.c.id, contact.c.full_name).where(contact.c.id > last)
                            .order_by(contact.c.id).limit(BATCH)).all()
        if not rows:
            return
        last = rows[-1].id
        changes = []
        for row in rows:
            if has_chinese(row.full_name):
                if row.full_name not in known:
                    known[row.full_name] = name_keys(row.full_name)
                pinyin, initials = known[row.full_name]
                changes.append({"key": row.id, "pinyin": pinyin, "initials": initials})
        if changes:
            bind.execute(update, changes)


def upgrade() -> None:
    op.add_column("crm_contact", sa.Column("pinyin", sa.Text(), nullable=True))
    op.add_column("crm_contact", sa.Column("initials", sa.Text(), nullable=True))
    _fill_keys()
    op.drop_index("ix_crm_contact_full_name_lower", table_name="crm_contact")
    op.create_index("ix_crm_contact_full_name_lower", "crm_contact", [sa.text("lower(full_name)"), *ORDER])
    op.create_index("ix_crm_contact_pinyin", "crm_contact", ["pinyin", *ORDER])
    op.create_index("ix_crm_contact_initials", "crm_contact", ["initials", *ORDER])
    _activity_indexes(ACTIVITY_AFTER)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_crm_email_company_address_trgm", "crm_email", ["address"], postgresql_using="gin",
                        postgresql_ops={"address": "gin_trgm_ops"}, postgresql_where=sa.text("company_id IS NOT NULL"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_crm_email_company_address_trgm", table_name="crm_email")
    _activity_indexes(ACTIVITY_BEFORE)
    op.drop_index("ix_crm_contact_initials", table_name="crm_contact")
    op.drop_index("ix_crm_contact_pinyin", table_name="crm_contact")
    op.drop_index("ix_crm_contact_full_name_lower", table_name="crm_contact")
    op.create_index("ix_crm_contact_full_name_lower", "crm_contact", [sa.text("lower(full_name)")])
    # plain ALTER TABLE on SQLite as well: a batch would rebuild the table from a reflection that loses the
    # ON DELETE of its foreign keys
    for column in ("initials", "pinyin"):
        op.execute(f"ALTER TABLE crm_contact DROP COLUMN {column}")
