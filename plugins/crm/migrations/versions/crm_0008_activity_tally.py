"""CRM: a tally of activities by company, person and kind, kept by the database.

The 360° view shows how many activities of each kind a customer has: for a company, those on it, its
subsidiaries and its people, each once. Counting them read every one of the customer's index entries (10,000
for a busy customer) on every view. `crm_activity_tally` holds counts in two families of rows:

* (company, 0, kind): every activity on the company, with or without a person;
* (company or 0, person, kind): the person's activities, by the company they are also on (0: none).

A company's counts are its tree's company rows plus its people's rows whose company is outside the tree; a
person's are their rows. Triggers on `crm_activity` keep the tally exact through inserts, deletes (ON DELETE
CASCADE of a company or person included), moves between customers (merges) and changes of kind; rows that fall
to 0 are removed. An activity on a lead alone counts nowhere.

* PostgreSQL: statement triggers with transition tables, so a statement touching many activities (a merge
  moving them, an import, COPY) updates the tally once per (company, contact, kind) it touched, in key order.
* SQLite: row triggers.

Filled here from the activities there are. A later migration that rebuilds `crm_activity` on SQLite (a batch
operation) must create the triggers again: `create_triggers()`.

Revision ID: crm_0008
Revises: crm_0007
"""
import sqlalchemy as sa
from alembic import op

revision = "crm_0008"
down_revision = "crm_0007"
branch_labels = None
depends_on = None


def _keys(rows: str) -> str:
    """The tally keys of `rows` (activities), one per activity for each family it counts in."""
    return (f"SELECT company_id, 0 AS contact_id, kind FROM {rows} WHERE company_id IS NOT NULL "
            f"UNION ALL SELECT coalesce(company_id, 0), contact_id, kind FROM {rows} WHERE contact_id IS NOT NULL")


CHANGED = "(SELECT {side}.* FROM removed AS o JOIN added AS a ON a.id = o.id WHERE " \
          "(o.company_id, o.contact_id, o.kind) IS DISTINCT FROM (a.company_id, a.contact_id, a.kind))"
UPSERT = "ON CONFLICT (company_id, contact_id, kind) DO UPDATE SET n = crm_activity_tally.n + excluded.n"
DROP_ZERO = """DELETE FROM crm_activity_tally AS t USING ({keys}) AS k
        WHERE t.n <= 0 AND t.company_id = k.company_id AND t.contact_id = k.contact_id AND t.kind = k.kind"""


def _count(rows: str, sign: str) -> str:
    """Add (sign "") or take away (sign "-") the activities of the transition table `rows`."""
    return (f"INSERT INTO crm_activity_tally (company_id, contact_id, kind, n) SELECT company_id, contact_id, kind, "
            f"{sign}count(*) FROM ({_keys(rows)}) AS k GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 {UPSERT}")


POSTGRESQL = [
    f"""
    CREATE FUNCTION crm_activity_tally_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_count("added", "")};
        RETURN NULL;
    END $$""",
    f"""
    CREATE FUNCTION crm_activity_tally_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_count("removed", "-")};
        {DROP_ZERO.format(keys=_keys("removed"))};
        RETURN NULL;
    END $$""",
    f"""
    CREATE FUNCTION crm_activity_tally_moved() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO crm_activity_tally (company_id, contact_id, kind, n)
        SELECT company_id, contact_id, kind, sum(n) FROM (
            SELECT *, -1 AS n FROM ({_keys(CHANGED.format(side="o") + " AS o")}) AS gone
            UNION ALL SELECT *, 1 FROM ({_keys(CHANGED.format(side="a") + " AS a")}) AS come) AS delta
        GROUP BY 1, 2, 3 HAVING sum(n) <> 0 ORDER BY 1, 2, 3 {UPSERT};
        {DROP_ZERO.format(keys=_keys(CHANGED.format(side="o") + " AS o"))};
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER crm_activity_tally_insert AFTER INSERT ON crm_activity
       REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION crm_activity_tally_added()""",
    """CREATE TRIGGER crm_activity_tally_delete AFTER DELETE ON crm_activity
       REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION crm_activity_tally_removed()""",
    """CREATE TRIGGER crm_activity_tally_update AFTER UPDATE ON crm_activity
       REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT
       EXECUTE FUNCTION crm_activity_tally_moved()""",
]

_COMPANY = "{row}.company_id, 0, {row}.kind"  # the company's family: every activity on the company
_PERSON = "coalesce({row}.company_id, 0), {row}.contact_id, {row}.kind"  # the person's, by company (0: none)


def _sqlite_add(key: str, present: str) -> str:
    return (f"INSERT INTO crm_activity_tally (company_id, contact_id, kind, n) SELECT {key.format(row='NEW')}, 1 "
            f"WHERE NEW.{present} IS NOT NULL ON CONFLICT (company_id, contact_id, kind) DO UPDATE SET n = n + 1;")


def _sqlite_remove(key: str) -> str:
    match = "(company_id, contact_id, kind) = ({})".format(key.format(row="OLD"))
    return (f"UPDATE crm_activity_tally SET n = n - 1 WHERE {match}; "
            f"DELETE FROM crm_activity_tally WHERE n <= 0 AND {match};")


_ADD = _sqlite_add(_COMPANY, "company_id") + " " + _sqlite_add(_PERSON, "contact_id")
_REMOVE = _sqlite_remove(_COMPANY) + " " + _sqlite_remove(_PERSON)
SQLITE = [
    f"CREATE TRIGGER crm_activity_tally_insert AFTER INSERT ON crm_activity BEGIN {_ADD} END",
    f"CREATE TRIGGER crm_activity_tally_delete AFTER DELETE ON crm_activity BEGIN {_REMOVE} END",
    f"""CREATE TRIGGER crm_activity_tally_update AFTER UPDATE OF company_id, contact_id, kind ON crm_activity
        WHEN OLD.company_id IS NOT NEW.company_id OR OLD.contact_id IS NOT NEW.contact_id OR OLD.kind IS NOT NEW.kind
        BEGIN {_REMOVE} {_ADD} END""",
]

TRIGGERS = ("crm_activity_tally_insert", "crm_activity_tally_delete", "crm_activity_tally_update")
FUNCTIONS = ("crm_activity_tally_added", "crm_activity_tally_removed", "crm_activity_tally_moved")


def create_triggers() -> None:
    for statement in POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "crm_activity_tally",
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("company_id", "contact_id", "kind"),
    )
    op.create_index("ix_crm_activity_tally_contact", "crm_activity_tally", ["contact_id", "company_id", "kind", "n"])
    op.execute("INSERT INTO crm_activity_tally (company_id, contact_id, kind, n) SELECT company_id, contact_id, "
               f"kind, count(*) FROM ({_keys('crm_activity')}) AS k GROUP BY company_id, contact_id, kind")
    create_triggers()
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE crm_activity_tally")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON crm_activity" if postgresql else ""))
    if postgresql:
        for name in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_index("ix_crm_activity_tally_contact", table_name="crm_activity_tally")
    op.drop_table("crm_activity_tally")
