"""The deal summary (`crm_deal_summary`): deals added up by pipeline, stage, status, currency, owner, team,
month and forecast category, so that the board's column totals and the forecast read a few thousand summary
rows instead of every deal.

The summary is kept in the transaction of every deal change: a session listener (`after_flush`, when the
line-item listener has set the final amount and the flush has filled in defaults and foreign keys) takes,
for each new, changed or deleted deal, its old and new summary key and figures and applies the difference
as one `INSERT … ON CONFLICT DO UPDATE SET count = count + excluded.count …` — atomic under concurrent
writers on PostgreSQL and SQLite alike. Rows that drop to no deals are deleted.

Bulk UPDATE and DELETE statements on deals run through the session are followed too (`do_orm_execute`:
the touched deals' entries are read before and after). Changes that bypass the session (COPY, SQL on a raw
connection, a bulk INSERT statement) leave the summary behind: call `rebuild` afterwards.
"""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import (
    Date,
    case,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .forecast import BEST_CASE_FROM, COMMIT_FROM, category_expression, period_start
from .models import NO_MONTH, Deal, DealSummary

TABLE = DealSummary.__table__
KEY = ("pipeline_id", "stage_id", "status", "currency", "owner_id", "team_id", "month", "category")
FIGURES = ("count", "amount", "weighted")
# the deal attributes a summary row depends on
TRACKED = ("pipeline_id", "stage_id", "status", "currency", "owner_id", "team_id", "expected_close", "closed_at",
           "forecast_category", "amount", "probability")
CENT = Decimal("0.01")
PROBABILITY_STEP = Decimal("0.0001")
CHUNK = 1000  # rows per upsert statement, well under PostgreSQL's parameter limit
_DELETED = "crm_deal_summary_deleted"


def category(forecast_category: str | None, probability: Decimal) -> str:
    """A deal's forecast category, as `forecast.category_expression` computes it in SQL."""
    if forecast_category is not None:
        return forecast_category
    if probability >= COMMIT_FROM:
        return "commit"
    if probability >= BEST_CASE_FROM:
        return "best_case"
    return "pipeline"


def _month(value, *, utc: bool) -> dt.date:
    """First day of the month of a date or timestamp (NO_MONTH for none). PostgreSQL stores a timestamp in
    UTC; SQLite stores the wall-clock time it is given, which is what its queries then read."""
    if value is None:
        return NO_MONTH
    if isinstance(value, dt.datetime) and utc and value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return dt.date(value.year, value.month, 1)


def _entry(values: dict, *, utc: bool) -> tuple[tuple, tuple] | None:
    """(summary key, (count, amount, weighted)) of one deal's values; None for a deal without a stage."""
    if values["pipeline_id"] is None or values["stage_id"] is None:
        return None
    # the figures as the database stores them: Numeric(18, 2) and Numeric(5, 4)
    amount = Decimal(str(values["amount"] or 0)).quantize(CENT, ROUND_HALF_UP)
    probability = Decimal(str(values["probability"] or 0)).quantize(PROBABILITY_STEP, ROUND_HALF_UP)
    status = values["status"]
    month = _month(values["expected_close"], utc=utc) if status == "open" else _month(values["closed_at"], utc=utc)
    key = (values["pipeline_id"], values["stage_id"], status, values["currency"], values["owner_id"] or 0,
           values["team_id"] or 0, month, category(values["forecast_category"], probability))
    return key, (1, amount, amount * probability)


def _current(deal: Deal) -> dict:
    return {name: getattr(deal, name) for name in TRACKED}


def _committed(state) -> dict:
    """The values of the deal as the database held them before this flush."""
    values = {}
    for name in TRACKED:
        history = state.attrs[name].load_history()
        if history.deleted:
            values[name] = history.deleted[0]
        elif history.unchanged:
            values[name] = history.unchanged[0]
        else:  # not known: only for a pending deal (the set listeners below load a persistent one's first)
            values[name] = None
    return values


def _changed(state) -> bool:
    return any(state.attrs[name].history.has_changes() for name in TRACKED)


def _keep_old_value(_target, _value, _old, _initiator) -> None:
    """Nothing to do: listening with active_history is what makes the old value load."""


# Setting one of these attributes loads its old value first (when expired), so that the flush knows what the
# summary counted before.
for _name in TRACKED:
    event.listen(getattr(Deal, _name), "set", _keep_old_value, active_history=True)


def _utc(session: Session) -> bool:
    return session.get_bind(mapper=inspect(DealSummary)).dialect.name == "postgresql"


@event.listens_for(Session, "before_flush")
def _remember_deleted(session: Session, _context, _instances) -> None:
    """A deleted deal's row is gone after the flush: take its summary entry before."""
    utc = None
    remembered = {}
    for obj in session.deleted:
        if isinstance(obj, Deal):
            utc = _utc(session) if utc is None else utc
            state = inspect(obj)
            remembered[state] = _entry(_committed(state), utc=utc)
    session.info[_DELETED] = remembered


@event.listens_for(Session, "after_flush")
def _maintain(session: Session, _context) -> None:
    """Apply the summary differences of the deals this flush wrote, in the same transaction."""
    remembered = session.info.pop(_DELETED, {})
    new = [obj for obj in session.new if isinstance(obj, Deal)]
    dirty = [obj for obj in session.dirty if isinstance(obj, Deal)]
    deleted = [obj for obj in session.deleted if isinstance(obj, Deal)]
    if not (new or dirty or deleted):
        return
    utc = _utc(session)
    deltas: dict[tuple, list] = {}

    def add(entry, sign: int) -> None:
        if entry is None:
            return
        key, figures = entry
        total = deltas.setdefault(key, [0, Decimal(0), Decimal(0)])
        for i, value in enumerate(figures):
            total[i] += sign * value

    for deal in new:
        add(_entry(_current(deal), utc=utc), 1)
    for deal in dirty:
        state = inspect(deal)
        if _changed(state):
            before, after = _entry(_committed(state), utc=utc), _entry(_current(deal), utc=utc)
            if before != after:
                add(before, -1)
                add(after, 1)
    for deal in deleted:
        state = inspect(deal)
        add(remembered[state] if state in remembered else _entry(_committed(state), utc=utc), -1)
    apply(session, deltas)


def apply(session: Session, deltas: dict[tuple, list]) -> None:
    """Add `deltas` ({key: [count, amount, weighted]}) to the summary: upserts in key order (so concurrent
    writers lock rows in the same order), then delete the rows left with no deal."""
    rows = [{**dict(zip(KEY, key)), **dict(zip(FIGURES, figures))}
            for key, figures in sorted(deltas.items()) if any(figures)]
    if not rows:
        return
    connection = session.connection(bind_arguments={"mapper": inspect(DealSummary)})
    insert_for = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    emptied = []
    for start in range(0, len(rows), CHUNK):
        statement = insert_for(TABLE).values(rows[start:start + CHUNK])
        statement = statement.on_conflict_do_update(
            index_elements=[TABLE.c[k] for k in KEY],
            set_={name: TABLE.c[name] + statement.excluded[name] for name in FIGURES},
        ).returning(*(TABLE.c[k] for k in KEY), TABLE.c.count)
        emptied += [tuple(row[:len(KEY)]) for row in connection.execute(statement) if row.count == 0]
    if emptied:
        connection.execute(delete(TABLE).where(tuple_(*(TABLE.c[k] for k in KEY)).in_(emptied)))


def _per_deal(session: Session) -> list:
    """SQL for each deal's summary key and figures, in KEY then (amount, weighted) order."""
    month = case((Deal.status == "open", period_start(session, Deal.expected_close, "month")),
                 else_=period_start(session, Deal.closed_at, "month", timestamp=True))
    return [Deal.pipeline_id, Deal.stage_id, Deal.status, Deal.currency,
            func.coalesce(Deal.owner_id, 0).label("owner_id"), func.coalesce(Deal.team_id, 0).label("team_id"),
            func.coalesce(month, literal(NO_MONTH, Date)).label("month"), category_expression().label("category"),
            Deal.amount.label("amount"), (Deal.amount * Deal.probability).label("weighted")]


def _sums(session: Session, where) -> tuple[list, dict[tuple, list]]:
    """(ids, {key: [count, amount, weighted]}) of the deals matching `where`, read in one statement."""
    query = select(Deal.id, *_per_deal(session))
    ids, sums = [], {}
    for row in session.execute(query if where is None else query.where(where)):
        ids.append(row.id)
        month = row.month if isinstance(row.month, dt.date) else dt.date.fromisoformat(str(row.month)[:10])
        key = (*row[1:7], month, row.category)
        total = sums.setdefault(key, [0, Decimal(0), Decimal(0)])
        total[0] += 1
        total[1] += Decimal(row.amount)
        total[2] += Decimal(row.weighted)
    return ids, sums


@event.listens_for(Session, "do_orm_execute")
def _bulk_statements(state):
    """A bulk UPDATE or DELETE of deals run through the session (`session.execute(update(Deal)…)`): take the
    summary entries of the deals it touches before and after, and apply the difference."""
    if not (state.is_update or state.is_delete) or \
            getattr(getattr(state.statement, "table", None), "name", None) != Deal.__tablename__:
        return None
    session = state.session
    if isinstance(state.parameters, list):  # UPDATE by primary key, one parameter set per deal
        where = Deal.id.in_([p["id"] for p in state.parameters])
    else:
        where = state.statement.whereclause
    ids, before = _sums(session, where)
    result = state.invoke_statement()
    after = {}
    if state.is_update and ids:
        for start in range(0, len(ids), CHUNK):
            for key, figures in _sums(session, Deal.id.in_(ids[start:start + CHUNK]))[1].items():
                total = after.setdefault(key, [0, Decimal(0), Decimal(0)])
                for i, value in enumerate(figures):
                    total[i] += value
    deltas = {key: list(figures) for key, figures in after.items()}
    for key, figures in before.items():
        total = deltas.setdefault(key, [0, Decimal(0), Decimal(0)])
        for i, value in enumerate(figures):
            total[i] -= value
    apply(session, deltas)
    return result


def rebuild(session: Session) -> int:
    """Recompute the whole summary from the deals (one INSERT … SELECT … GROUP BY); returns its row count.
    For after changes that bypass the session (COPY, SQL run on a raw connection). On PostgreSQL the summary
    is locked against concurrent deal changes until the transaction ends; they wait, then apply their own."""
    connection = session.connection(bind_arguments={"mapper": inspect(DealSummary)})
    if connection.dialect.name == "postgresql":
        connection.execute(text("LOCK TABLE crm_deal_summary IN EXCLUSIVE MODE"))
    per_deal = select(*_per_deal(session)).subquery("per_deal")
    keys = [per_deal.c[k] for k in KEY]
    grouped = select(*keys, func.count(), func.sum(per_deal.c.amount), func.sum(per_deal.c.weighted)) \
        .group_by(*keys)
    connection.execute(delete(TABLE))
    connection.execute(insert(TABLE).from_select([*KEY, *FIGURES], grouped))
    return connection.execute(select(func.count()).select_from(TABLE)).scalar_one()
