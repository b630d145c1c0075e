"""The kanban board of a pipeline: a column per stage with its count, total and weighted total, cards loaded
page by page, moves and quick create through the pipeline commands.

`columns` and `cards` are set-based queries that know nothing of Flask; the screen (`BoardView`, session and
CSRF) and the REST API (`BoardApi`, JWT) both answer through the same small functions below.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from flask import abort, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.security.decorators import has_access_api
from flask_appbuilder.security.sqla.models import User
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.routing import BuildError

from bigledger_core.db import db, utcnow
from bigledger_core.i18n import current_locale
from bigledger_core.models import Team
from bigledger_core.security import visibility_clause, visible_record

from ..models import Activity, Company, Contact
from .forecast import whole_months
from .models import NO_MONTH, Deal, DealSummary, Pipeline, Stage
from .services import (
    StageChangeRefused,
    create_deal,
    deal_warnings,
    default_pipeline,
    move_deal,
)

CENT = Decimal("0.01")
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
BOARD_STATUSES = ("open", "won")  # lost deals are never on the board


# -- queries -----------------------------------------------------------------------------------------------

def _statuses(status) -> tuple[str, ...]:
    """`"open"` (also when empty), `"won"`, `"open,won"` or a sequence of those; lost deals are never shown."""
    values = status.split(",") if isinstance(status, str) else list(status or ())
    values = [v.strip() for v in values if v.strip()] or ["open"]
    return tuple(v for v in values if v in BOARD_STATUSES)


def _conditions(session: Session, user, *, owner_id=None, team_id=None, close_from=None, close_to=None) -> list:
    conditions = []
    if user is not None:
        clause = visibility_clause(Deal, user, session)
        if clause is not None:
            conditions.append(clause)
    if owner_id is not None:
        conditions.append(Deal.owner_id == owner_id)
    if team_id is not None:
        conditions.append(Deal.team_id == team_id)
    if close_from is not None:
        conditions.append(Deal.expected_close >= close_from)
    if close_to is not None:
        conditions.append(Deal.expected_close <= close_to)
    return conditions


def _money(value) -> Decimal:
    return Decimal(value or 0).quantize(CENT)


def _summary_covers(statuses: tuple[str, ...], close_from, close_to) -> bool:
    """Whether the deal summary answers these filters: always without close dates; with them only for open
    deals (the summary's month of a won deal is its close date) and whole months."""
    if close_from is None and close_to is None:
        return True
    return set(statuses) <= {"open"} and whole_months(close_from, close_to)


def _live_totals(session: Session, pipeline_id: int, statuses, user, **filters):
    """Per stage: count, total, weighted, currencies and a currency, added up from the deals themselves."""
    conditions = [Deal.pipeline_id == pipeline_id, Deal.status.in_(statuses)]
    conditions += _conditions(session, user, **filters)
    return (select(Deal.stage_id.label("stage_id"), func.count(Deal.id).label("count"),
                   func.sum(Deal.amount).label("total"),
                   func.sum(Deal.amount * Deal.probability).label("weighted"),
                   func.count(func.distinct(Deal.currency)).label("currencies"),
                   func.min(Deal.currency).label("currency"))
            .where(*conditions).group_by(Deal.stage_id).subquery("totals"))


def _summary_totals(session: Session, pipeline_id: int, statuses, user, *, owner_id=None, team_id=None,
                    close_from=None, close_to=None):
    """The same figures as `_live_totals`, from the deal summary (whole months of expected close only)."""
    summary = DealSummary
    conditions = [summary.pipeline_id == pipeline_id, summary.status.in_(statuses)]
    if user is not None:
        clause = visibility_clause(summary, user, session)  # owner and team as on the deals (0: none)
        if clause is not None:
            conditions.append(clause)
    if owner_id is not None:
        conditions.append(summary.owner_id == owner_id)
    if team_id is not None:
        conditions.append(summary.team_id == team_id)
    if close_from is not None or close_to is not None:
        conditions.append(summary.month != NO_MONTH)
    if close_from is not None:
        conditions.append(summary.month >= close_from)
    if close_to is not None:
        conditions.append(summary.month <= close_to)
    return (select(summary.stage_id.label("stage_id"), func.sum(summary.count).label("count"),
                   func.sum(summary.amount).label("total"), func.sum(summary.weighted).label("weighted"),
                   func.count(func.distinct(summary.currency)).label("currencies"),
                   func.min(summary.currency).label("currency"))
            .where(*conditions).group_by(summary.stage_id).subquery("totals"))


def columns(session: Session, pipeline_id: int, user, *, owner_id=None, team_id=None, close_from=None,
            close_to=None, status="open") -> list[dict]:
    """One row per stage of the pipeline, in order: `stage_id, name, name_en, probability, count, total,
    weighted, currency, mixed_currencies`. Totals add amounts as they are (no currency conversion);
    `mixed_currencies` is true when a column holds more than one currency, else `currency` names it.
    `user` None applies no record rule (command line, benchmarks). One statement, on the deal summary unless
    a close date range does not cover whole months."""
    statuses = _statuses(status)
    filters = {"owner_id": owner_id, "team_id": team_id, "close_from": close_from, "close_to": close_to}
    source = _summary_totals if _summary_covers(statuses, close_from, close_to) else _live_totals
    totals = source(session, pipeline_id, statuses, user, **filters)
    rows = session.execute(
        select(Stage.id, Stage.name, Stage.name_en, Stage.probability, totals.c.count, totals.c.total,
               totals.c.weighted, totals.c.currencies, totals.c.currency)
        .select_from(Stage).outerjoin(totals, totals.c.stage_id == Stage.id)
        .where(Stage.pipeline_id == pipeline_id).order_by(Stage.position)).all()
    return [{"stage_id": row.id, "name": row.name, "name_en": row.name_en,
             "probability": Decimal(row.probability), "count": row.count or 0, "total": _money(row.total),
             "weighted": _money(row.weighted), "currency": row.currency if (row.currencies or 0) == 1 else None,
             "mixed_currencies": (row.currencies or 0) > 1} for row in rows]


def cards(session: Session, stage_id: int, user, *, owner_id=None, team_id=None, close_from=None, close_to=None,
          offset=0, limit=50, status="open") -> list[dict]:
    """One page of the cards in a stage, soonest expected close first (no date last), then by id:
    `id, name, company, amount, currency, owner, expected_close, overdue, status, version`. `company` is the
    deal's company, or its contact when it has none; `overdue` is true when the deal has an open activity
    past its due time. One statement."""
    overdue = _overdue(Deal.id)
    conditions = [Deal.stage_id == stage_id, Deal.status.in_(_statuses(status))]
    conditions += _conditions(session, user, owner_id=owner_id, team_id=team_id, close_from=close_from,
                              close_to=close_to)
    rows = session.execute(
        select(Deal.id, Deal.name, func.coalesce(Company.name, Contact.full_name).label("company"), Deal.amount,
               Deal.currency, User.first_name, User.last_name, Deal.expected_close, overdue.label("overdue"),
               Deal.status, Deal.version, Deal.stage_id)
        .select_from(Deal).outerjoin(Company, Company.id == Deal.company_id)
        .outerjoin(Contact, Contact.id == Deal.contact_id).outerjoin(User, User.id == Deal.owner_id)
        .where(*conditions)
        .order_by(Deal.expected_close.asc().nulls_last(), Deal.id)  # PostgreSQL reads this from an index
        .offset(max(0, int(offset))).limit(max(1, int(limit)))).all()
    return [{"id": row.id, "name": row.name, "company": row.company, "amount": _money(row.amount),
             "currency": row.currency, "owner": _person(row.first_name, row.last_name),
             "expected_close": row.expected_close, "overdue": bool(row.overdue), "status": row.status,
             "version": row.version, "stage_id": row.stage_id} for row in rows]


def _overdue(deal_id):
    """EXISTS: the deal (an id or the Deal.id column) has an activity not done and past its due time."""
    return exists().where(Activity.deal_id == deal_id, Activity.done.is_(False), Activity.due_at.is_not(None),
                          Activity.due_at < utcnow())


def _person(first: str | None, last: str | None) -> str | None:
    parts = [p for p in (first, last) if p]
    return " ".join(parts) or None


# -- request handling shared by the screen and the API -----------------------------------------------------

class BoardRequestError(Exception):
    """A board request that cannot be answered: HTTP status and translated message(s)."""

    def __init__(self, status: int, reasons: list[str]):
        self.status, self.reasons = status, reasons
        super().__init__("\n".join(reasons))


def _date(name: str) -> dt.date | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BoardRequestError(400, [gettext("%(field)s: give a date as YYYY-MM-DD, not “%(value)s”.",
                                              field=name, value=raw)]) from None


def period_dates(period: str | None, today: dt.date | None = None) -> tuple[dt.date | None, dt.date | None]:
    """First and last day of `month` or `quarter` around `today`; (None, None) otherwise."""
    today = today or dt.date.today()
    if period == "month":
        start = today.replace(day=1)
    elif period == "quarter":
        start = today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
    else:
        return None, None
    months = 1 if period == "month" else 3
    year, month = divmod(start.month - 1 + months, 12)
    return start, dt.date(start.year + year, month + 1, 1) - dt.timedelta(days=1)


def filters_from_request() -> dict:
    """The board's filters from the query string: owner, team, period (month, quarter, custom with from/to)
    and won (1 to show won deals too)."""
    period = request.args.get("period") or ""
    if period in ("month", "quarter"):
        close_from, close_to = period_dates(period)
    else:
        close_from, close_to = _date("from"), _date("to")
    return {"owner_id": request.args.get("owner", type=int), "team_id": request.args.get("team", type=int),
            "close_from": close_from, "close_to": close_to,
            "status": "open,won" if request.args.get("won") in ("1", "true", "on") else "open"}


def _json(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def _pipeline(pipeline_id: int | None) -> Pipeline:
    pipeline = db.session.get(Pipeline, pipeline_id) if pipeline_id else default_pipeline(db.session)
    if pipeline is None:
        raise BoardRequestError(404, [gettext("There is no sales pipeline yet: load one first.")])
    return pipeline


def _visible_deal(deal_id) -> Deal:
    if not isinstance(deal_id, int) or isinstance(deal_id, bool):
        raise BoardRequestError(400, [gettext("deal_id: give the id of a deal")])
    deal = visible_record(Deal, deal_id, g.user, db.session)
    if deal is None:
        raise BoardRequestError(404, [gettext("There is no deal %(id)s, or it is not yours to see.", id=deal_id)])
    return deal


def stage_label(name: str, name_en: str | None) -> str:
    """A stage's (or pipeline's) name in the user's language: the English name when it has one."""
    return name_en if current_locale() == "en" and name_en else name


def columns_payload(pipeline_id: int | None) -> dict:
    pipeline = _pipeline(pipeline_id)
    rows = columns(db.session, pipeline.id, g.user, **filters_from_request())
    for row in rows:
        row["label"] = stage_label(row["name"], row["name_en"])
    return _json({"pipeline_id": pipeline.id, "columns": rows})


def cards_payload(stage_id: int) -> dict:
    stage = db.session.get(Stage, stage_id)
    if stage is None:
        raise BoardRequestError(404, [gettext("There is no stage %(id)s.", id=stage_id)])
    offset = max(0, request.args.get("offset", 0, type=int))
    limit = min(MAX_PAGE_SIZE, max(1, request.args.get("limit", PAGE_SIZE, type=int)))
    # one row more than asked says whether another page exists
    rows = cards(db.session, stage.id, g.user, offset=offset, limit=limit + 1, **filters_from_request())
    return _json({"stage_id": stage.id, "offset": offset, "cards": rows[:limit], "more": len(rows) > limit})


def _card(deal: Deal) -> dict:
    """The card of one deal, as `cards` gives it."""
    customer = deal.company.name if deal.company else (deal.contact.full_name if deal.contact else None)
    owner = _person(deal.owner.first_name, deal.owner.last_name) if deal.owner else None
    return _json({"id": deal.id, "name": deal.name, "company": customer, "amount": _money(deal.amount),
                  "currency": deal.currency, "owner": owner, "expected_close": deal.expected_close,
                  "overdue": bool(db.session.scalar(select(_overdue(deal.id)))), "status": deal.status, "version": deal.version,
                  "stage_id": deal.stage_id})




def move_payload(body: dict) -> dict:
    """Move a deal: {deal_id, stage_id, reason?, version?} through `move_deal` and commit."""
    deal = _visible_deal(body.get("deal_id"))
    stage_id = body.get("stage_id")
    if not isinstance(stage_id, int) or isinstance(stage_id, bool):
        raise BoardRequestError(400, [gettext("stage_id: give the id of a stage")])
    version = body.get("version")
    if isinstance(version, int) and version != deal.version:
        raise BoardRequestError(409, [gettext("Someone else changed this deal meanwhile: reload the board.")])
    reason = body.get("reason")
    try:
        move_deal(db.session, deal, stage_id, user_id=g.user.id, reason=reason if isinstance(reason, str) else None)
        db.session.commit()
    except StageChangeRefused as exc:
        db.session.rollback()
        raise BoardRequestError(409, exc.reasons) from None
    except StaleDataError:
        db.session.rollback()
        raise BoardRequestError(409, [gettext("Someone else changed this deal meanwhile: reload the board.")]) \
            from None
    return {"card": _card(deal)}


def _amount(raw) -> Decimal:
    try:
        value = Decimal(str(raw if raw not in (None, "") else "0").replace(",", "").strip())
    except InvalidOperation:
        raise BoardRequestError(400, [gettext("Amount: give a number, not “%(value)s”.", value=raw)]) from None
    if not value.is_finite() or value < 0:
        raise BoardRequestError(400, [gettext("Amount: give a number, not “%(value)s”.", value=raw)])
    return value.quantize(CENT)


def _visible_customer(model, record_id):
    if record_id in (None, ""):
        return None
    try:
        record_id = int(record_id)
    except (TypeError, ValueError):
        raise BoardRequestError(400, [gettext("Choose the company or contact of the deal.")]) from None
    clause = visibility_clause(model, g.user, db.session)
    query = select(model).where(model.id == record_id, model.merged_into_id.is_(None))
    record = db.session.scalar(query.where(clause) if clause is not None else query)
    if record is None:
        raise BoardRequestError(404, [gettext("Choose the company or contact of the deal.")])
    return record


def create_payload(pipeline_id: int | None, body: dict) -> dict:
    """Quick create: {name, company_id or contact_id, amount?, currency?, expected_close?} in the first stage."""
    pipeline = _pipeline(pipeline_id)
    name = (body.get("name") or "").strip() if isinstance(body.get("name"), str) else ""
    problems = []
    if not name:
        problems.append(gettext("Name: give the deal a name."))
    elif len(name) > 200:
        problems.append(gettext("Name: at most %(max)d characters.", max=200))
    company = _visible_customer(Company, body.get("company_id"))
    contact = _visible_customer(Contact, body.get("contact_id"))
    if company is None and contact is None:
        problems.append(gettext("Choose the company or contact of the deal."))
    amount = _amount(body.get("amount"))
    currency = (body.get("currency") or "CNY").strip().upper() if isinstance(body.get("currency") or "", str) else ""
    if len(currency) != 3 or not currency.isalpha():
        problems.append(gettext("Currency: give a three-letter ISO code such as CNY."))
    close = None
    if body.get("expected_close"):
        try:
            close = dt.date.fromisoformat(str(body["expected_close"]))
        except ValueError:
            problems.append(gettext("%(field)s: give a date as YYYY-MM-DD, not “%(value)s”.",
                                    field=gettext("Expected close"), value=body["expected_close"]))
    if problems:
        raise BoardRequestError(400, problems)
    if not pipeline.stages:
        raise BoardRequestError(400, [gettext("There is no sales pipeline yet: load one first.")])
    user = g.user
    team_id = user.teams[0].id if getattr(user, "teams", None) else None
    deal = Deal(name=name, company_id=company.id if company else None, contact_id=contact.id if contact else None,
                amount=amount, currency=currency, expected_close=close, owner_id=user.id, team_id=team_id,
                stage_id=pipeline.stages[0].id)
    try:
        create_deal(db.session, deal, user_id=user.id)
        db.session.commit()
    except StageChangeRefused as exc:
        db.session.rollback()
        raise BoardRequestError(400, exc.reasons) from None
    return {"card": _card(deal), "warnings": deal_warnings(deal)}


def customers_payload() -> dict:
    """Companies and contacts for the quick-create form's customer choice (the CRM's search)."""
    from ..queries import SearchTimeout, search

    q = (request.args.get("q") or "").strip()
    try:
        found = search(db.session, q, g.user, limit=15) if q else []
    except SearchTimeout:
        found = []
    return {"result": [{"kind": r["kind"], "id": r["id"], "name": r["name"]} for r in found]}


# -- screen ------------------------------------------------------------------------------------------------

def _strings() -> dict:
    """Every text board.js shows, in the user's language."""
    return {
        "empty": gettext("No deals"),
        "overdue": gettext("Has an overdue activity"), "noDate": gettext("No close date"),
        "saved": gettext("Moved to “%(stage)s”."), "refused": gettext("The move was refused:"),
        "failed": gettext("The board could not reach the server: try again."),
        "winCancelled": gettext("Not moved: a won deal needs a reason."), "created": gettext("Deal “%(name)s” created."),
        "createdWithWarnings": gettext("Deal “%(name)s” created. Please note:"),
        "weighted": gettext("weighted"), "noMatch": gettext("No match"),
        "chooseCustomer": gettext("Type to search companies and contacts"),
        "company": gettext("Company"), "contact": gettext("Contact"),
    }


def _deal_url() -> str | None:
    """Where a card's name links to: the deal's own page (`{deal}` stands for its id), when there is one."""
    try:
        return url_for("DealView.show", pk=0).removesuffix("0") + "{deal}"
    except BuildError:
        return None


class BoardView(BaseView):
    """The kanban board screen and the JSON it loads (session login, CSRF token on every POST)."""

    route_base = "/crm/board"
    default_view = "default_board"
    class_permission_name = "CrmBoard"
    method_permission_name = {"board": "list", "default_board": "list", "column_totals": "list",
                              "stage_cards": "list", "customers": "list", "move": "edit", "create": "add"}
    base_permissions = ["can_list", "can_edit", "can_add"]

    @expose("/")
    @has_access
    def default_board(self):
        pipeline = default_pipeline(db.session)
        if pipeline is None:
            return self.render_template("crm/board.html", pipeline=None, board=None, pipelines=[])
        return redirect(url_for("BoardView.board", pipeline_id=pipeline.id, **request.args))

    @expose("/<int:pipeline_id>")
    @has_access
    def board(self, pipeline_id):
        pipeline = db.session.get(Pipeline, pipeline_id)
        if pipeline is None:
            abort(404)
        try:
            filters = filters_from_request()
        except BoardRequestError:
            return redirect(url_for("BoardView.board", pipeline_id=pipeline_id))
        rows = columns(db.session, pipeline.id, g.user, **filters)
        for row in rows:
            row["label"] = stage_label(row["name"], row["name_en"])
        pipelines = db.session.execute(select(Pipeline.id, Pipeline.name, Pipeline.name_en)
                                       .where(Pipeline.active.is_(True)).order_by(Pipeline.name)).all()
        users = db.session.execute(select(User.id, User.first_name, User.last_name)
                                   .where(User.active.is_(True)).order_by(User.first_name, User.last_name)).all()
        teams = db.session.execute(select(Team.id, Team.name, Team.name_en).order_by(Team.name)).all()
        board = {
            "pipelineId": pipeline.id, "locale": current_locale(), "columns": _json(rows),
            "urls": {"columns": url_for("BoardView.column_totals", pipeline_id=pipeline.id),
                     "cards": url_for("BoardView.stage_cards", stage_id=0).replace("/stage/0/", "/stage/{stage}/"),
                     "move": url_for("BoardView.move"), "create": url_for("BoardView.create", pipeline_id=pipeline.id),
                     "customers": url_for("BoardView.customers"), "deal": _deal_url()},
            "pageSize": PAGE_SIZE, "strings": _strings(),
        }
        args = request.args
        return self.render_template(
            "crm/board.html", pipeline=pipeline, pipeline_label=stage_label(pipeline.name, pipeline.name_en),
            board=board, columns=rows, pipelines=[(p.id, stage_label(p.name, p.name_en)) for p in pipelines],
            users=[(u.id, _person(u.first_name, u.last_name)) for u in users],
            teams=[(t.id, stage_label(t.name, t.name_en)) for t in teams],
            chosen={"owner": args.get("owner", type=int), "team": args.get("team", type=int),
                    "period": args.get("period") or "", "from": args.get("from") or "", "to": args.get("to") or "",
                    "won": args.get("won") in ("1", "true", "on")})

    @expose("/<int:pipeline_id>/columns")
    @has_access_api
    def column_totals(self, pipeline_id):
        return _answer(lambda: columns_payload(pipeline_id))

    @expose("/stage/<int:stage_id>/cards")
    @has_access_api
    def stage_cards(self, stage_id):
        return _answer(lambda: cards_payload(stage_id))

    @expose("/customers")
    @has_access_api
    def customers(self):
        return _answer(customers_payload)

    @expose("/move", methods=["POST"])
    @has_access_api
    def move(self):
        return _answer(lambda: move_payload(request.get_json(silent=True) or {}))

    @expose("/<int:pipeline_id>/deals", methods=["POST"])
    @has_access_api
    def create(self, pipeline_id):
        return _answer(lambda: create_payload(pipeline_id, request.get_json(silent=True) or {}), status=201)


def _answer(produce, status: int = 200):
    from flask import jsonify

    try:
        return jsonify(produce()), status
    except BoardRequestError as exc:
        return jsonify({"message": " ".join(exc.reasons), "reasons": exc.reasons}), exc.status


# -- REST API ----------------------------------------------------------------------------------------------

class BoardApi(BaseApi):
    """The board as JSON for integrators (JWT): column totals, pages of cards, moves and quick create."""

    resource_name = "crm/board"
    class_permission_name = "CrmBoard"
    method_permission_name = {"column_totals": "get", "stage_cards": "get", "move": "post", "create": "post"}
    openapi_spec_tag = "CRM"

    def _reply(self, produce, status: int = 200):
        try:
            return self.response(status, **produce())
        except BoardRequestError as exc:
            return self.response(exc.status, message=" ".join(exc.reasons), reasons=exc.reasons)

    @expose("/<int:pipeline_id>/columns", methods=["GET"])
    @protect()
    @safe
    def column_totals(self, pipeline_id):
        """The pipeline's columns: count, total and weighted total of the deals you may see, per stage.
        ---
        get:
          parameters:
          - {in: path, name: pipeline_id, required: true, schema: {type: integer}}
          - {in: query, name: owner, schema: {type: integer}}
          - {in: query, name: team, schema: {type: integer}}
          - {in: query, name: period, schema: {type: string, enum: [month, quarter]}}
          - {in: query, name: from, schema: {type: string, format: date}}
          - {in: query, name: to, schema: {type: string, format: date}}
          - {in: query, name: won, schema: {type: integer, enum: [0, 1]}}
          responses:
            200: {description: one entry per stage in order}
            404: {description: no such pipeline}
        """
        return self._reply(lambda: columns_payload(pipeline_id))

    @expose("/stage/<int:stage_id>/cards", methods=["GET"])
    @protect()
    @safe
    def stage_cards(self, stage_id):
        """One page of a stage's cards, soonest expected close first (same filters as the columns).
        ---
        get:
          parameters:
          - {in: path, name: stage_id, required: true, schema: {type: integer}}
          - {in: query, name: offset, schema: {type: integer}}
          - {in: query, name: limit, schema: {type: integer, maximum: 200}}
          responses:
            200: {description: the cards and whether more follow}
            404: {description: no such stage}
        """
        return self._reply(lambda: cards_payload(stage_id))

    @expose("/move", methods=["POST"])
    @protect()
    @safe
    def move(self):
        """Move a deal to another stage: {"deal_id", "stage_id", "reason" (needed for the won stage)}.
        ---
        post:
          responses:
            200: {description: moved; the deal's card}
            400: {description: deal_id or stage_id missing}
            404: {description: no such deal, or not yours to see}
            409: {description: refused; `reasons` says why}
        """
        return self._reply(lambda: move_payload(request.get_json(silent=True) or {}))

    @expose("/<int:pipeline_id>/deals", methods=["POST"])
    @protect()
    @safe
    def create(self, pipeline_id):
        """Quick create a deal in the pipeline's first stage:
        {"name", "company_id" or "contact_id", "amount", "currency", "expected_close"}.
        ---
        post:
          responses:
            201: {description: "created: the deal's card, and `warnings` to show (e.g. credit hold)"}
            400: {description: refused; `reasons` says why}
        """
        return self._reply(lambda: create_payload(pipeline_id, request.get_json(silent=True) or {}), status=201)


def register(appbuilder) -> None:
    """Add the board's screen and JSON endpoints."""
    # a menu item's name is what its menu_access permission is checked on: "Crm…" matches the CRM roles
    appbuilder.add_view(BoardView, "CrmBoard", label=_l("Pipeline board"), icon="fa-th-large",
                        category="CRM", category_label=_l("CRM"))
    appbuilder.add_api(BoardApi)
