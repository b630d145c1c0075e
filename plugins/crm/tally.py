"""The activity tally (`crm_activity_tally`) against the activities it counts: checked, and rebuilt.

The database's triggers keep the tally exact through every change to `crm_activity`. Writes that bypass
triggers (a restore with `session_replication_role = replica`, a bulk load with triggers disabled) leave it
behind; `bigledger crm recount-activities` finds and repairs that.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, literal, select, text, union_all
from sqlalchemy.orm import Session

from .models import Activity, ActivityTally


@dataclass(frozen=True)
class Difference:
    """One count the tally has wrong: its key, what it holds (0: no row) and what the activities give."""

    company_id: int
    contact_id: int
    kind: str
    stored: int
    actual: int


def _counted():
    """(company_id, contact_id, kind, n) as the triggers keep them, counted from the activities."""
    a = Activity.__table__
    keys = union_all(
        select(a.c.company_id, literal(0).label("contact_id"), a.c.kind).where(a.c.company_id.is_not(None)),
        select(func.coalesce(a.c.company_id, 0), a.c.contact_id, a.c.kind).where(a.c.contact_id.is_not(None)),
    ).subquery("k")
    return select(keys.c.company_id, keys.c.contact_id, keys.c.kind, func.count().label("n")) \
        .group_by(keys.c.company_id, keys.c.contact_id, keys.c.kind)


def differences(session: Session, limit: int | None = None) -> list[Difference]:
    """The counts the tally has wrong, missing or left over, in key order (at most `limit`)."""
    t = ActivityTally.__table__
    counted = _counted().subquery("c")
    both = union_all(
        select(t.c.company_id, t.c.contact_id, t.c.kind, t.c.n.label("stored"), literal(0).label("actual")),
        select(counted.c.company_id, counted.c.contact_id, counted.c.kind, literal(0), counted.c.n),
    ).subquery("b")
    query = (select(both.c.company_id, both.c.contact_id, both.c.kind, func.sum(both.c.stored),
                    func.sum(both.c.actual))
             .group_by(both.c.company_id, both.c.contact_id, both.c.kind)
             .having(func.sum(both.c.stored) != func.sum(both.c.actual))
             .order_by(both.c.company_id, both.c.contact_id, both.c.kind).limit(limit))
    return [Difference(*row) for row in session.execute(query)]


def rebuild(session: Session) -> int:
    """Count the activities again into the tally, in the session's transaction (the caller commits); returns
    how many counts were wrong. On PostgreSQL activities cannot change meanwhile (SHARE lock until commit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE crm_activity IN SHARE MODE"))
    wrong = len(differences(session))
    if wrong:
        t = ActivityTally.__table__
        session.execute(delete(t))
        session.execute(insert(t).from_select(["company_id", "contact_id", "kind", "n"], _counted()))
    return wrong
