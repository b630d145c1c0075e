"""Forecast and pipeline analytics, computed in SQL (GROUP BY and window functions, never a loop over deals).

Definitions (docs/pipeline.md explains them for users):

- Open deals are bucketed by the period of their `expected_close`, won deals by the period of `closed_at`
  (UTC). Periods are calendar months or quarters.
- pipeline = sum(amount) of open deals; weighted = sum(amount × probability).
- A deal's forecast category is its own, or when it has none, from its probability: ≥ 75 % commit,
  ≥ 50 % best case, else pipeline. Deals in the category `omitted` are left out of every forecast figure
  (they are shown on their own, as `omitted`).
- commit = sum(amount) of commit deals; best case = commit + sum(amount) of best-case deals.
- closed won = sum(amount) of won deals.
- Stage conversion: of the deals that entered stage i, the share that afterwards entered a later stage
  (i + 1, a stage further on, or won). Win rate = won / (won + lost) of the deals closed in the period.
- Time in stage: average of left_at − entered_at of the stays that ended (history rows of open deals).
- Sales cycle: average closed_at − created_at of won deals. Sales velocity = open deals × win rate ×
  average won amount ÷ sales cycle (days): money per day.

Amounts are never added across currencies: every figure is for one currency (`currency`, by default the
one most of the deals use). `user` applies the record rules (None: every deal, for the CLI and jobs).
"""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    Float,
    Integer,
    and_,
    case,
    cast,
    extract,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session

from bigledger_core.models import Team

from .models import NO_MONTH, Deal, DealSummary, Pipeline, Stage, StageHistory

PERIODS = ("quarter", "month")
GROUPS = ("owner", "team")
CATEGORIES = ("pipeline", "best_case", "commit", "omitted")
DEFAULT_CURRENCY = "CNY"
COMMIT_FROM = Decimal("0.75")
BEST_CASE_FROM = Decimal("0.5")
CENT = Decimal("0.01")


class ForecastParameterError(ValueError):
    """A parameter the analytics cannot use; `parameter` names it."""

    def __init__(self, parameter: str, message: str):
        self.parameter = parameter
        super().__init__(message)


class MissingExchangeRate(ForecastParameterError):
    """Amounts cannot be converted into the report's currency: no rate for these pairs (never a silent 1:1)."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs
        super().__init__("exchange_rate", ", ".join(f"{source} → {target}" for source, target in pairs))


# -- SQL helpers ----------------------------------------------------------------------------------------

def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def period_start(session: Session, column, period: str, *, timestamp: bool = False):
    """SQL for the first day of the month or quarter that `column` falls in (a date on PostgreSQL, an ISO
    text on SQLite). `timestamp`: the column is a timestamp with time zone, bucketed in UTC."""
    if period not in PERIODS:
        raise ForecastParameterError("period", period)
    if _dialect(session) == "postgresql":
        value = func.timezone(literal_column("'UTC'"), column) if timestamp else cast(column, DateTime())
        # the field is a literal so that the GROUP BY expression is the same text as the SELECT's
        return cast(func.date_trunc(literal_column(f"'{period}'"), value), Date)
    if period == "month":
        return func.strftime(literal_column("'%Y-%m-01'"), column)
    month = cast(func.strftime(literal_column("'%m'"), column), Integer)
    return func.printf(literal_column("'%s-%02d-01'"), func.strftime(literal_column("'%Y'"), column),
                       (month - 1) // 3 * 3 + 1)


def days_between(session: Session, end, start):
    """SQL for `end − start` in days (a float), both timestamps."""
    if _dialect(session) == "postgresql":
        return extract("epoch", end - start) / 86400.0
    return cast(func.julianday(end) - func.julianday(start), Float)


def _as_date(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.date.fromisoformat(str(value)[:10])


def period_label(start: dt.date | None, period: str) -> str | None:
    """'2024-Q3' or '2024-07' for the period starting on `start`."""
    if start is None:
        return None
    if period == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return f"{start.year}-{start.month:02d}"


def _money(value) -> Decimal:
    if value is None:
        return Decimal("0.00")
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def _ratio(part, whole) -> float | None:
    return round(part / whole, 4) if whole else None


def _days(value) -> float | None:
    return None if value is None else round(float(value), 2)


def _start_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def _visible(session: Session, user) -> list:
    """Record rules as WHERE conditions on deals: nothing for None (every deal) or an all-seeing role."""
    if user is None:
        return []
    from bigledger_core.security import visibility_clause

    clause = visibility_clause(Deal, user, session)
    return [] if clause is None else [clause]


def _group_column(group_by: str | None):
    if group_by is None:
        return None
    if group_by not in GROUPS:
        raise ForecastParameterError("group_by", group_by)
    return Deal.owner_id if group_by == "owner" else Deal.team_id


def _group_names(session: Session, group_by: str | None, ids) -> dict[int, dict[str, Any]]:
    """Display names of the owners or teams in a result, in one query."""
    ids = {i for i in ids if i is not None}
    if not group_by or not ids:
        return {}
    if group_by == "owner":
        User = Deal.owner.property.mapper.class_
        rows = session.execute(select(User.id, User.username, User.first_name, User.last_name)
                               .where(User.id.in_(ids)))
        return {r.id: {"owner": r.username, "owner_name": " ".join(p for p in (r.first_name, r.last_name) if p)}
                for r in rows}
    rows = session.execute(select(Team.id, Team.name, Team.name_en).where(Team.id.in_(ids)))
    return {r.id: {"team": r.name, "team_en": r.name_en} for r in rows}


def _group_fields(group_by: str | None, key, names: dict) -> dict[str, Any]:
    if group_by == "owner":
        return {"owner_id": key, **names.get(key, {"owner": None, "owner_name": None})}
    if group_by == "team":
        return {"team_id": key, **names.get(key, {"team": None, "team_en": None})}
    return {}


def check_dates(date_from: dt.date | None, date_to: dt.date | None) -> None:
    if date_from and date_to and date_from > date_to:
        raise ForecastParameterError("date_to", "date_to")


# -- currency ---------------------------------------------------------------------------------------------

def currencies(session: Session, *, pipeline_id: int | None = None, user=None) -> list[tuple[str, int]]:
    """The currencies of the deals `user` may see, most used first: [(currency, deals)]."""
    query = select(Deal.currency, func.count().label("n")).where(*_visible(session, user))
    if pipeline_id is not None:
        query = query.where(Deal.pipeline_id == pipeline_id)
    rows = session.execute(query.group_by(Deal.currency).order_by(func.count().desc(), Deal.currency)).all()
    return [(r.currency, r.n) for r in rows]


def default_currency(session: Session, *, pipeline_id: int | None = None, user=None) -> str:
    """The currency most of the visible deals use (CNY when there are none)."""
    found = currencies(session, pipeline_id=pipeline_id, user=user)
    return found[0][0] if found else DEFAULT_CURRENCY


# -- forecast ---------------------------------------------------------------------------------------------

def category_expression():
    """A deal's forecast category: its own, else from its probability."""
    return case((Deal.forecast_category.is_not(None), Deal.forecast_category),
                (Deal.probability >= COMMIT_FROM, "commit"),
                (Deal.probability >= BEST_CASE_FROM, "best_case"),
                else_="pipeline")


def whole_months(date_from: dt.date | None, date_to: dt.date | None) -> bool:
    """Whether a date range (either end may be open) starts on the first day of a month and ends on the last
    day of one: then it can be read from monthly totals."""
    if date_from is not None and date_from.day != 1:
        return False
    return date_to is None or date_to == dt.date.max or (date_to + dt.timedelta(days=1)).day == 1


def _summary_covers(date_from: dt.date | None, date_to: dt.date | None) -> bool:
    """Whether the deal summary answers the forecast for this date range."""
    return whole_months(date_from, date_to)


def _figures(is_open, is_won, category, count, amount, weighted) -> list:
    """The forecast's sums over deals (count 1, amount, amount × probability) or summary rows."""
    counted = and_(is_open, category != "omitted")

    def when(condition, value):
        return func.sum(case((condition, value), else_=0))

    return [func.sum(count).label("deals"),
            when(counted, count).label("open_deals"),
            when(counted, amount).label("pipeline"),
            when(counted, weighted).label("weighted"),
            when(and_(is_open, category == "commit"), amount).label("commit"),
            when(and_(is_open, category == "best_case"), amount).label("best_case"),
            when(and_(is_open, category == "omitted"), amount).label("omitted"),
            when(is_won, count).label("won_deals"),
            when(is_won, amount).label("won")]


FIGURES = ("deals", "open_deals", "pipeline", "weighted", "commit", "best_case", "omitted", "won_deals", "won")


def _live_sums(session: Session, period: str, group, date_from, date_to, common: list) -> list[dict[str, Any]]:
    """Per period start, currency (and group): the forecast's sums, from the deals themselves."""
    # One scan for open and won deals: open ones in the period of their expected close, won ones in the period
    # they closed (UTC).
    is_open, is_won = Deal.status == "open", Deal.status == "won"
    open_when = [is_open]
    won_when = [is_won, Deal.closed_at.is_not(None)]
    if date_from:
        open_when.append(Deal.expected_close >= date_from)
        won_when.append(Deal.closed_at >= _start_of(date_from))
    if date_to:
        open_when.append(Deal.expected_close <= date_to)
        won_when.append(Deal.closed_at < _start_of(date_to + dt.timedelta(days=1)))
    # (SQLite's quarter text of a missing date is not NULL: say so first)
    start = case((and_(is_open, Deal.expected_close.is_(None)), None),
                 (is_open, period_start(session, Deal.expected_close, period)),
                 else_=period_start(session, Deal.closed_at, period, timestamp=True))
    keys = [start, Deal.currency, *([group] if group is not None else [])]
    query = select(start.label("start"), Deal.currency.label("currency"),
                   *([group.label("grp")] if group is not None else []),
                   *_figures(is_open, is_won, category_expression(), literal_column("1"), Deal.amount,
                             Deal.amount * Deal.probability)) \
        .where(or_(and_(*open_when), and_(*won_when)), *common).group_by(*keys)
    return [{"start": _as_date(r.start), "currency": r.currency, "grp": r.grp if group is not None else None,
             **{name: r._mapping[name] for name in FIGURES}} for r in session.execute(query)]


def _summary_sums(session: Session, period: str, group, date_from, date_to, common: list) -> list[dict[str, Any]]:
    """The same sums as `_live_sums`, from the deal summary: added up per month in SQL, months into quarters
    here (a few hundred rows)."""
    summary = DealSummary
    is_open, is_won = summary.status == "open", summary.status == "won"
    open_when = [is_open]
    won_when = [is_won, summary.month != NO_MONTH]  # a won deal without a close date is in no period
    if date_from or date_to:
        open_when.append(summary.month != NO_MONTH)
    if date_from:
        open_when.append(summary.month >= date_from)
        won_when.append(summary.month >= date_from)
    if date_to:
        open_when.append(summary.month <= date_to)
        won_when.append(summary.month <= date_to)
    keys = [summary.month, summary.currency, *([group] if group is not None else [])]
    query = select(summary.month.label("month"), summary.currency.label("currency"),
                   *([group.label("grp")] if group is not None else []),
                   *_figures(is_open, is_won, summary.category, summary.count, summary.amount, summary.weighted)) \
        .where(or_(and_(*open_when), and_(*won_when)), *common).group_by(*keys)
    sums: dict[tuple, dict[str, Any]] = {}
    for r in session.execute(query):
        month = _as_date(r.month)
        start = None if month == NO_MONTH else month if period == "month" else \
            month.replace(month=(month.month - 1) // 3 * 3 + 1)
        grp = (r.grp or None) if group is not None else None  # owner and team 0 stand for none
        item = sums.setdefault((start, r.currency, grp), {"start": start, "currency": r.currency, "grp": grp,
                                                         **dict.fromkeys(FIGURES, 0)})
        for name in FIGURES:
            item[name] += r._mapping[name] or 0
    return list(sums.values())


def convert(found: list[dict[str, Any]], report_currency: str, rate, on: dt.date) -> list[dict[str, Any]]:
    """Sums in several currencies as sums in `report_currency`: each currency's figures times
    `rate(from_currency, report_currency, on)` (a Decimal, or None when there is none), added up per period and
    group. The same currency needs no rate; MissingExchangeRate names every pair without one."""
    rates: dict[str, Decimal | None] = {report_currency: Decimal(1)}
    for r in found:
        if r["currency"] not in rates:
            rates[r["currency"]] = rate(r["currency"], report_currency, on)
    missing = sorted((c, report_currency) for c, value in rates.items() if value is None)
    if missing:
        raise MissingExchangeRate(missing)
    counts = {"deals", "open_deals", "won_deals"}
    merged: dict[tuple, dict[str, Any]] = {}
    for r in found:
        item = merged.setdefault((r["start"], r["grp"]), {"start": r["start"], "currency": report_currency,
                                                        "grp": r["grp"], **dict.fromkeys(FIGURES, 0)})
        factor = rates[r["currency"]]
        for name in FIGURES:
            value = r[name] or 0
            item[name] += value if name in counts else Decimal(str(value)) * factor
    return list(merged.values())


def forecast(session: Session, *, period: str = "quarter", group_by: str | None = None,
             date_from: dt.date | None = None, date_to: dt.date | None = None, pipeline_id: int | None = None,
             currency: str | None = None, report_currency: str | None = None, rate=None,
             rate_date: dt.date | None = None, user=None) -> list[dict[str, Any]]:
    """Pipeline, weighted pipeline, commit, best case and closed won per period (and owner or team), in one
    currency. Rows are ordered by period (open deals without an expected close last), then group.

    Each row: period ('2024-Q3', None for open deals without expected close), period_start, currency,
    owner_id/owner/owner_name or team_id/team/team_en, open_deals, pipeline, weighted, commit, best_case,
    omitted, won_deals, closed_won. Amounts are Decimals with two places. Read from the deal summary unless
    the date range does not cover whole months.

    `report_currency`: every currency's deals, converted into this one with `rate(from, to, on)` on `rate_date`
    (today, UTC, by default); a currency without a rate raises MissingExchangeRate naming the pair.
    """
    if period not in PERIODS:
        raise ForecastParameterError("period", period)
    group_by_column = _group_column(group_by)
    check_dates(date_from, date_to)
    source = DealSummary if _summary_covers(date_from, date_to) else Deal
    common = []
    if user is not None:
        from bigledger_core.security import visibility_clause

        clause = visibility_clause(source, user, session)
        if clause is not None:
            common.append(clause)
    if currency:
        common.append(source.currency == currency)
    if pipeline_id is not None:
        common.append(source.pipeline_id == pipeline_id)
    group = None if group_by_column is None else getattr(source, group_by_column.key)
    sums = _summary_sums if source is DealSummary else _live_sums
    found = sums(session, period, group, date_from, date_to, common)
    if report_currency:
        found = convert(found, report_currency, rate or (lambda *_args: None),
                        rate_date or dt.datetime.now(dt.UTC).date())
        currency = report_currency
    # Without a currency every currency is summed apart and the most used one is kept.
    if not currency:
        used: dict[str, int] = {}
        for r in found:
            used[r["currency"]] = used.get(r["currency"], 0) + int(r["deals"])
        currency = min(used, key=lambda c: (-used[c], c != DEFAULT_CURRENCY, c)) if used else DEFAULT_CURRENCY

    rows: dict[tuple, dict[str, Any]] = {}
    for r in found:
        if r["currency"] != currency:
            continue
        day = r["start"]
        commit = _money(r["commit"])
        rows[(day, r["grp"])] = {
            "period": period_label(day, period), "period_start": day, "currency": currency,
            "_key": r["grp"], "open_deals": int(r["open_deals"] or 0),
            "pipeline": _money(r["pipeline"]), "weighted": _money(r["weighted"]), "commit": commit,
            "best_case": commit + _money(r["best_case"]), "omitted": _money(r["omitted"]),
            "won_deals": int(r["won_deals"] or 0), "closed_won": _money(r["won"])}

    names = _group_names(session, group_by, (key for _day, key in rows))
    result = []
    for item in rows.values():
        key = item.pop("_key")
        fields = _group_fields(group_by, key, names)
        result.append({"period": item.pop("period"), "period_start": item.pop("period_start"), **fields, **item})

    def order(item):
        name = item.get("owner") or item.get("team") or ""
        return (item["period_start"] is None, item["period_start"] or dt.date.min, name,
                item.get("owner_id") or item.get("team_id") or 0)

    return sorted(result, key=order)


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of forecast rows (one currency)."""
    keys = ("open_deals", "pipeline", "weighted", "commit", "best_case", "omitted", "won_deals", "closed_won")
    return {key: sum((r[key] for r in rows), 0 if key.endswith("deals") else Decimal("0.00")) for key in keys}


# -- stage conversion -------------------------------------------------------------------------------------

def _stages(session: Session, pipeline_id: int) -> list[Stage]:
    return list(session.scalars(select(Stage).where(Stage.pipeline_id == pipeline_id).order_by(Stage.position)))


def stage_conversion(session: Session, pipeline_id: int, *, date_from: dt.date | None = None,
                     date_to: dt.date | None = None, user=None) -> list[dict[str, Any]]:
    """Per stage of the pipeline (won stage last): how many deals entered it (first entered in the date
    range, when given), how many of them afterwards entered a later stage or were won (`advanced`), how many
    were lost in it, and the conversion rate advanced / entered (None for the won stage)."""
    check_dates(date_from, date_to)
    if session.get(Pipeline, pipeline_id) is None:
        raise ForecastParameterError("pipeline_id", str(pipeline_id))
    stages = _stages(session, pipeline_id)
    if not stages:
        return []
    # One row per deal (a single GROUP BY, no join to the stages): for each stage, when the deal first and
    # last entered it and whether it was lost there. A deal advanced from stage i when it entered any later
    # stage at or after its first entry into i.
    reached = StageHistory.status != "lost"
    per_deal_columns = []
    for index, stage in enumerate(stages):
        here = and_(StageHistory.stage_id == stage.id, reached)
        per_deal_columns += [
            func.min(case((here, StageHistory.entered_at))).label(f"first_{index}"),
            func.max(case((here, StageHistory.entered_at))).label(f"last_{index}"),
            func.max(case((and_(StageHistory.stage_id == stage.id, StageHistory.status == "lost"), 1), else_=0))
            .label(f"lost_{index}")]
    per_deal = select(*per_deal_columns).where(StageHistory.stage_id.in_([s.id for s in stages]))
    visible = _visible(session, user)
    if visible:
        per_deal = per_deal.join(Deal, Deal.id == StageHistory.deal_id).where(*visible)
    per_deal = per_deal.group_by(StageHistory.deal_id).subquery("per_deal")
    sums = []
    for index in range(len(stages)):
        first = per_deal.c[f"first_{index}"]
        entered = [first.is_not(None)]
        if date_from:
            entered.append(first >= _start_of(date_from))
        if date_to:
            entered.append(first < _start_of(date_to + dt.timedelta(days=1)))
        later = [per_deal.c[f"last_{j}"] >= first for j in range(index + 1, len(stages))]
        sums += [func.sum(case((and_(*entered), 1), else_=0)).label(f"entered_{index}"),
                 func.sum(case((and_(*entered, or_(*later)), 1), else_=0)).label(f"advanced_{index}")
                 if later else literal_column("0").label(f"advanced_{index}"),
                 func.sum(case((and_(*entered, per_deal.c[f"lost_{index}"] == 1), 1), else_=0))
                 .label(f"lost_{index}")]
    counts = session.execute(select(*sums)).one()._mapping
    result = []
    for index, stage in enumerate(stages):
        entered = int(counts[f"entered_{index}"] or 0)
        last = index == len(stages) - 1
        advanced = None if last else int(counts[f"advanced_{index}"] or 0)
        following = None if last else stages[index + 1]
        result.append({"stage_id": stage.id, "stage": stage.name, "stage_en": stage.name_en,
                       "position": stage.position, "won_stage": last, "entered": entered, "advanced": advanced,
                       "lost": int(counts[f"lost_{index}"] or 0),
                       "next_stage": following.name if following else None,
                       "next_stage_en": following.name_en if following else None,
                       "rate": None if last else _ratio(advanced, entered)})
    return result


# -- cycle metrics -----------------------------------------------------------------------------------------

def cycle_metrics(session: Session, *, pipeline_id: int | None = None, group_by: str | None = None,
                  date_from: dt.date | None = None, date_to: dt.date | None = None, currency: str | None = None,
                  user=None) -> dict[str, Any]:
    """Average time in each stage, and per group (or overall): win rate, sales cycle, average won amount
    and sales velocity, for the deals closed in the date range (all, when none) in one currency.

    Returns {"currency", "time_in_stage": [{stage_id, stage, stage_en, pipeline_id, position, stays,
    avg_days}], "summary": [{…group…, open_deals, won, lost, win_rate, avg_won_amount, sales_cycle_days,
    velocity}]} — velocity is money per day; None when a figure it needs is missing.
    """
    group = _group_column(group_by)
    check_dates(date_from, date_to)
    currency = currency or default_currency(session, pipeline_id=pipeline_id, user=user)
    visible = _visible(session, user)
    common = [Deal.currency == currency, *visible]
    if pipeline_id is not None:
        common.append(Deal.pipeline_id == pipeline_id)

    # time in stage: the stays that ended, of deals that were open in them
    stay_days = days_between(session, StageHistory.left_at, StageHistory.entered_at)
    stays = select(StageHistory.stage_id, func.count().label("stays"), func.avg(stay_days).label("avg_days")) \
        .where(StageHistory.status == "open", StageHistory.left_at.is_not(None), StageHistory.stage_id.is_not(None))
    if visible:
        stays = stays.join(Deal, Deal.id == StageHistory.deal_id).where(*visible)
    if pipeline_id is not None:
        stays = stays.where(StageHistory.stage_id.in_(select(Stage.id).where(Stage.pipeline_id == pipeline_id)))
    if date_from:
        stays = stays.where(StageHistory.left_at >= _start_of(date_from))
    if date_to:
        stays = stays.where(StageHistory.left_at < _start_of(date_to + dt.timedelta(days=1)))
    stay_rows = {r.stage_id: r for r in session.execute(stays.group_by(StageHistory.stage_id))}
    stage_query = select(Stage).order_by(Stage.pipeline_id, Stage.position)
    stage_query = stage_query.where(Stage.pipeline_id == pipeline_id) if pipeline_id is not None else \
        stage_query.where(Stage.id.in_(list(stay_rows)))
    time_in_stage = [{"stage_id": s.id, "stage": s.name, "stage_en": s.name_en, "pipeline_id": s.pipeline_id,
                      "position": s.position, "stays": int(stay_rows[s.id].stays) if s.id in stay_rows else 0,
                      "avg_days": _days(stay_rows[s.id].avg_days) if s.id in stay_rows else None}
                     for s in session.scalars(stage_query)]

    # closed deals in the range: won, lost, size and length of the won ones
    group_cols = [group.label("grp")] if group is not None else []
    group_by_cols = [group] if group is not None else []
    won = Deal.status == "won"
    closed = select(*group_cols,
                    func.sum(case((won, 1), else_=0)).label("won"),
                    func.sum(case((Deal.status == "lost", 1), else_=0)).label("lost"),
                    func.avg(case((won, Deal.amount))).label("avg_won"),
                    func.avg(case((won, days_between(session, Deal.closed_at, Deal.created_at)))).label("cycle")) \
        .where(Deal.status.in_(("won", "lost")), Deal.closed_at.is_not(None), *common)
    if date_from:
        closed = closed.where(Deal.closed_at >= _start_of(date_from))
    if date_to:
        closed = closed.where(Deal.closed_at < _start_of(date_to + dt.timedelta(days=1)))
    closed_rows = {(r.grp if group is not None else None): r for r in session.execute(closed.group_by(*group_by_cols))}
    open_query = select(*group_cols, func.count().label("n")).where(Deal.status == "open", *common) \
        .group_by(*group_by_cols)
    open_rows = {(r.grp if group is not None else None): int(r.n) for r in session.execute(open_query)}

    keys = set(closed_rows) | set(open_rows) if group is not None else {None}
    names = _group_names(session, group_by, keys)
    summary = []
    for key in keys:
        r = closed_rows.get(key)
        won_n, lost_n = (int(r.won or 0), int(r.lost or 0)) if r else (0, 0)
        open_n = open_rows.get(key, 0)
        avg_won = _money(r.avg_won) if r is not None and r.avg_won is not None else None
        cycle = float(r.cycle) if r is not None and r.cycle is not None else None
        velocity = None
        if won_n and avg_won is not None and cycle:
            rate = Decimal(won_n) / Decimal(won_n + lost_n)
            velocity = _money(Decimal(open_n) * rate * avg_won / Decimal(repr(cycle)))
        summary.append({**_group_fields(group_by, key, names), "currency": currency, "open_deals": open_n,
                        "won": won_n, "lost": lost_n, "win_rate": _ratio(won_n, won_n + lost_n),
                        "avg_won_amount": avg_won, "sales_cycle_days": _days(cycle), "velocity": velocity})
    summary.sort(key=lambda s: (s.get("owner") or s.get("team") or "", s.get("owner_id") or s.get("team_id") or 0))
    return {"currency": currency, "time_in_stage": time_in_stage, "summary": summary}
