"""Source ROI: leads, qualification, conversion and won revenue per channel against its costs.

The report (`roi`) is three grouped SQL statements — leads, won deals, costs — merged by channel (and
campaign). For the period [date_from, date_to] (whole UTC days, both ends included; either may be open):

- leads: leads created in the period; qualified: those of them that reached the threshold (or were
  qualified or converted); converted: those of them that were converted;
- won revenue: the amounts of won deals that came from those leads (`Deal.lead_id`), whenever they were
  won, in the report's currency only — won deals in other currencies are listed apart (`won_other`),
  never added;
- cost: channel costs in the report's currency whose period overlaps the report's, prorated by days
  (a cost for 1–31 January counts 10/31 of its amount in a report from 1 to 10 January); costs in other
  currencies are listed apart (`cost_other`). Without dates every cost counts in full;
- cost per lead = cost / leads; ROI = (won revenue − cost) / cost (None when there is no cost).

By campaign, a cost with no campaign is the channel's own row (campaign ""). The report covers every lead:
who may read it is decided by its permission (`CrmCampaignRoi`), not by record rules.
"""
from __future__ import annotations

import datetime as dt
import re
import tempfile
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from flask import request, send_file
from flask_appbuilder import BaseView, ModelRestApi, ModelView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import Date, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

from bigledger_core.db import db

from ..pipeline.models import Deal
from ..services import CrmValidationError, Problem
from .models import ChannelCost, Lead

DEFAULT_CURRENCY = "CNY"
GROUPINGS = ("channel", "campaign")
FORMATS = ("json", "csv", "xlsx")
CENT, RATIO = Decimal("0.01"), Decimal("0.0001")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
FIGURES = {"leads": _l("Leads"), "qualified": _l("Qualified"), "converted": _l("Converted"),
           "won_deals": _l("Won deals"), "won_revenue": _l("Won revenue"), "cost": _l("Cost"),
           "cost_per_lead": _l("Cost per lead"), "roi": _l("ROI")}


class RoiParameterError(ValueError):
    """A report parameter that cannot be used; `parameter` names it and the message says why (translated)."""

    def __init__(self, parameter: str, message: str):
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


# -- the report -------------------------------------------------------------------------------------------

def _money(value) -> Decimal:
    return Decimal(str(value or 0)).quantize(CENT, ROUND_HALF_UP)


def _day_count(session: Session, start, end):
    """Days from `start` to `end`, both included, as an SQL expression."""
    if session.get_bind().dialect.name == "postgresql":
        return end - start + 1
    return func.julianday(end) - func.julianday(start) + 1


def _later(session: Session, a, b):
    return func.greatest(a, b) if session.get_bind().dialect.name == "postgresql" else func.max(a, b)


def _earlier(session: Session, a, b):
    return func.least(a, b) if session.get_bind().dialect.name == "postgresql" else func.min(a, b)


def _created_in(date_from: dt.date | None, date_to: dt.date | None) -> list:
    conditions = []
    if date_from is not None:
        conditions.append(Lead.created_at >= dt.datetime.combine(date_from, dt.time(), dt.UTC))
    if date_to is not None:
        conditions.append(Lead.created_at < dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), dt.UTC))
    return conditions


def roi(session: Session, *, date_from: dt.date | None = None, date_to: dt.date | None = None,
        currency: str | None = None, by: str = "channel") -> dict[str, Any]:
    """The ROI report: `rows` (one per channel, or per channel and campaign with `by="campaign"`) and
    `totals`, each with leads, qualified, converted, won_deals, won_revenue, cost, cost_per_lead, roi,
    won_other and cost_other ({currency: amount} not in the report's currency). See the module's docstring."""
    if by not in GROUPINGS:
        raise RoiParameterError("by", gettext("use “channel” or “campaign”"))
    if date_from and date_to and date_from > date_to:
        raise RoiParameterError("date_to", gettext("the end of the period is before its start (date_from)"))
    currency = (currency or DEFAULT_CURRENCY).upper()
    period = _created_in(date_from, date_to)
    lead_keys = [func.coalesce(Lead.channel, "").label("channel")]
    if by == "campaign":
        lead_keys.append(func.coalesce(Lead.campaign, "").label("campaign"))
    qualified = or_(Lead.qualified_at.is_not(None), Lead.status.in_(("qualified", "converted")))
    leads = session.execute(
        select(*lead_keys, func.count().label("leads"),
               func.sum(case((qualified, 1), else_=0)).label("qualified"),
               func.sum(case((Lead.converted_at.is_not(None), 1), else_=0)).label("converted"))
        .where(*period).group_by(*lead_keys)).all()
    won = session.execute(
        select(*lead_keys, Deal.currency, func.count().label("deals"), func.sum(Deal.amount).label("amount"))
        .select_from(Deal).join(Lead, Lead.id == Deal.lead_id)
        .where(Deal.status == "won", *period).group_by(*lead_keys, Deal.currency)).all()

    cost_keys = [ChannelCost.channel.label("channel")]
    if by == "campaign":
        cost_keys.append(ChannelCost.campaign.label("campaign"))
    start, end = ChannelCost.period_start, ChannelCost.period_end
    overlap, share = [], ChannelCost.amount
    if date_from is not None or date_to is not None:
        low = _later(session, start, literal(date_from, Date)) if date_from is not None else start
        high = _earlier(session, end, literal(date_to, Date)) if date_to is not None else end
        share = ChannelCost.amount * 1.0 * _day_count(session, low, high) / _day_count(session, start, end)
        if date_from is not None:
            overlap.append(end >= date_from)
        if date_to is not None:
            overlap.append(start <= date_to)
    costs = session.execute(select(*cost_keys, ChannelCost.currency, func.sum(share).label("amount"))
                            .where(and_(*overlap) if overlap else True)
                            .group_by(*cost_keys, ChannelCost.currency)).all()

    def key(row) -> tuple[str, str]:
        return (row.channel or "", row.campaign or "") if by == "campaign" else (row.channel or "", "")

    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row_for(k: tuple[str, str]) -> dict[str, Any]:
        if k not in rows:
            rows[k] = _blank(k)
        return rows[k]

    for r in leads:
        row = row_for(key(r))
        row["leads"], row["qualified"], row["converted"] = r.leads, int(r.qualified or 0), int(r.converted or 0)
    for r in won:
        row = row_for(key(r))
        if r.currency == currency:
            row["won_deals"], row["won_revenue"] = r.deals, _money(r.amount)
        else:
            row["won_other"][r.currency] = _money(r.amount)
    for r in costs:
        row = row_for(key(r))
        if r.currency == currency:
            row["cost"] = _money(r.amount)
        else:
            row["cost_other"][r.currency] = _money(r.amount)
    ordered = [_ratios(rows[k]) for k in sorted(rows)]
    totals = _blank(("", ""))
    for row in ordered:
        for name in ("leads", "qualified", "converted", "won_deals", "won_revenue", "cost"):
            totals[name] += row[name]
        for name in ("won_other", "cost_other"):
            for code, amount in row[name].items():
                totals[name][code] = totals[name].get(code, Decimal(0)) + amount
    totals.pop("channel"), totals.pop("campaign")
    return {"currency": currency, "by": by, "date_from": date_from, "date_to": date_to, "rows": ordered,
            "totals": _ratios(totals)}


def _blank(k: tuple[str, str]) -> dict[str, Any]:
    return {"channel": k[0], "campaign": k[1], "leads": 0, "qualified": 0, "converted": 0, "won_deals": 0,
            "won_revenue": Decimal("0.00"), "cost": Decimal("0.00"), "cost_per_lead": None, "roi": None,
            "won_other": {}, "cost_other": {}}


def _ratios(row: dict[str, Any]) -> dict[str, Any]:
    row["cost_per_lead"] = (row["cost"] / row["leads"]).quantize(CENT, ROUND_HALF_UP) if row["leads"] else None
    row["roi"] = ((row["won_revenue"] - row["cost"]) / row["cost"]).quantize(RATIO, ROUND_HALF_UP) \
        if row["cost"] else None
    return row


# -- channel costs ----------------------------------------------------------------------------------------

def clean_cost(session: Session, cost: ChannelCost) -> None:
    """Check and normalize a channel cost; CrmValidationError names every bad field. A cost may not overlap
    another of the same channel, campaign and currency (the report would count both)."""
    problems: list[Problem] = []
    cost.channel = " ".join((cost.channel or "").split())
    cost.campaign = " ".join((cost.campaign or "").split())
    cost.currency = (cost.currency or DEFAULT_CURRENCY).strip().upper()
    if not cost.channel:
        problems.append(Problem("channel", gettext("name the channel the money was spent on")))
    elif len(cost.channel) > 100:
        problems.append(Problem("channel", gettext("at most %(max)d characters", max=100)))
    if len(cost.campaign) > 200:
        problems.append(Problem("campaign", gettext("at most %(max)d characters", max=200)))
    if not _CURRENCY.match(cost.currency):
        problems.append(Problem("currency", gettext("give a three-letter currency code such as CNY")))
    if cost.amount is None or Decimal(cost.amount) < 0:
        problems.append(Problem("amount", gettext("give an amount of 0 or more")))
    if cost.period_start is None:
        problems.append(Problem("period_start", gettext("give the first day of the period")))
    if cost.period_end is None:
        problems.append(Problem("period_end", gettext("give the last day of the period")))
    elif cost.period_start is not None and cost.period_end < cost.period_start:
        problems.append(Problem("period_end", gettext("the period ends before it starts")))
    if not problems:
        with session.no_autoflush:
            clash = session.scalar(select(ChannelCost).where(
                ChannelCost.channel == cost.channel, ChannelCost.campaign == cost.campaign,
                ChannelCost.period_start <= cost.period_end, ChannelCost.period_end >= cost.period_start,
                *([ChannelCost.id != cost.id] if cost.id is not None else [])).limit(1))
        if clash is not None:
            problems.append(Problem("period_start", gettext(
                "a cost of this channel and campaign already covers %(start)s to %(end)s: change that one or "
                "choose another period", start=clash.period_start.isoformat(), end=clash.period_end.isoformat())))
    if problems:
        raise CrmValidationError(problems)


COST_LABELS = {"channel": _l("Channel"), "campaign": _l("Campaign"), "period_start": _l("From"),
               "period_end": _l("To"), "amount": _l("Amount"), "currency": _l("Currency")}
COST_COLUMNS = ["channel", "campaign", "period_start", "period_end", "amount", "currency"]


class ChannelCostView(ModelView):
    """What each channel (and campaign) cost, per period."""

    route_base = "/crm/channel-cost"
    datamodel = SQLAInterface(ChannelCost)
    class_permission_name = "CrmCampaignCost"
    list_title = _l("Channel costs")
    show_title = _l("Channel cost")
    add_title = _l("Add channel cost")
    edit_title = _l("Edit channel cost")
    list_columns = add_columns = edit_columns = show_columns = COST_COLUMNS
    search_columns = COST_COLUMNS
    order_columns = COST_COLUMNS
    base_order = ("period_start", "desc")
    label_columns = COST_LABELS
    description_columns = {"campaign": _l("Empty: the cost of the channel as a whole"),
                           "currency": _l("Three-letter code, e.g. CNY")}

    def _clean(self, item):
        try:
            clean_cost(db.session, item)
        except CrmValidationError as exc:
            raise ValueError(str(exc)) from None

    def pre_add(self, item):
        self._clean(item)

    def pre_update(self, item):
        self._clean(item)


class ChannelCostApi(ModelRestApi):
    """Channel costs over REST: `/api/v1/crm/channel-cost/`."""

    resource_name = "crm/channel-cost"
    datamodel = SQLAInterface(ChannelCost)
    class_permission_name = "CrmCampaignCost"
    method_permission_name = {"get_list": "get", "get": "get", "post": "post", "put": "put", "delete": "delete",
                              "info": "info"}
    openapi_spec_tag = "CRM leads"
    list_columns = ["id", *COST_COLUMNS]
    show_columns = list_columns
    add_columns = edit_columns = COST_COLUMNS
    search_columns = COST_COLUMNS
    order_columns = ["id", *COST_COLUMNS]

    def _clean(self, item):
        try:
            clean_cost(db.session, item)
        except CrmValidationError as exc:
            db.session.rollback()
            raise BadRequest(str(exc)) from None

    def pre_add(self, item):
        self._clean(item)

    def pre_update(self, item):
        self._clean(item)


# -- screen and API ---------------------------------------------------------------------------------------

def parse(args) -> dict[str, Any]:
    """The report's parameters from a query string; RoiParameterError names the first wrong one."""
    values: dict[str, Any] = {}
    for name in ("date_from", "date_to"):
        text = (args.get(name) or "").strip()
        try:
            values[name] = dt.date.fromisoformat(text) if text else None
        except ValueError:
            raise RoiParameterError(name, gettext("give a date as YYYY-MM-DD, not “%(value)s”",
                                                  value=text[:50])) from None
    if values["date_from"] and values["date_to"] and values["date_from"] > values["date_to"]:
        raise RoiParameterError("date_to", gettext("the end of the period is before its start (date_from)"))
    currency = (args.get("currency") or "").strip()
    if currency and not _CURRENCY.match(currency):
        raise RoiParameterError("currency", gettext("give a three-letter currency code such as CNY, not "
                                                    "“%(value)s”", value=currency[:50]))
    values["currency"] = currency.upper() or None
    by = (args.get("by") or "channel").strip()
    if by not in GROUPINGS:
        raise RoiParameterError("by", gettext("use “channel” or “campaign”, not “%(value)s”", value=by[:50]))
    values["by"] = by
    fmt = (args.get("format") or "json").strip().lower()
    if fmt not in FORMATS:
        raise RoiParameterError("format", gettext("use “json”, “csv” or “xlsx”, not “%(value)s”", value=fmt[:50]))
    values["format"] = fmt
    return values


def _report(params: dict[str, Any]) -> dict[str, Any]:
    return roi(db.session, date_from=params["date_from"], date_to=params["date_to"], currency=params["currency"],
               by=params["by"])


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def channel_label(value: str) -> str:
    return value or gettext("No channel")


def _others(amounts: dict[str, Decimal]) -> str:
    return "; ".join(f"{code} {amount:,.2f}" for code, amount in sorted(amounts.items()))


def export_columns(by: str) -> list[tuple[str, str]]:
    columns = [("channel", gettext("Channel"))]
    if by == "campaign":
        columns.append(("campaign", gettext("Campaign")))
    return columns + [("currency", gettext("Currency"))] + [(k, str(v)) for k, v in FIGURES.items()] + \
        [("won_other", gettext("Won in other currencies")), ("cost_other", gettext("Cost in other currencies"))]


def export_rows(report: dict[str, Any], fmt: str):
    for row in report["rows"]:
        item = {**row, "channel": channel_label(row["channel"]), "currency": report["currency"],
                "won_other": _others(row["won_other"]), "cost_other": _others(row["cost_other"])}
        if fmt == "xlsx":
            item = {k: float(v) if isinstance(v, Decimal) else v for k, v in item.items()}
        yield item


def download(report: dict[str, Any], fmt: str):
    """The report as a CSV (UTF-8 with BOM) or XLSX file response."""
    from ..exporter import export_table

    out = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115 - send_file closes it
    export_table(export_rows(report, fmt), export_columns(report["by"]), fmt, out)
    out.seek(0)
    mimetype = "text/csv" if fmt == "csv" else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return send_file(out, mimetype=mimetype, as_attachment=True,
                     download_name=f"roi-{dt.date.today().isoformat()}.{fmt}")


def _currencies() -> list[str]:
    found = set(db.session.scalars(select(ChannelCost.currency).distinct()))
    found |= set(db.session.scalars(select(Deal.currency).where(Deal.lead_id.is_not(None)).distinct()))
    return sorted(found | {DEFAULT_CURRENCY})


class RoiView(BaseView):
    """Source ROI: per channel (or campaign) leads, qualified, converted, won revenue, cost and ROI."""

    route_base = "/crm/roi"
    default_view = "index"
    class_permission_name = "CrmCampaignRoi"
    method_permission_name = {"index": "list", "export": "export"}
    base_permissions = ["can_list", "can_export"]

    def _page(self, params, error=None, status=200):
        report = _report(params)
        return self.render_template(
            "crm/roi.html", report=report, params=params, error=error, figures=FIGURES, currencies=_currencies(),
            channel_label=channel_label, others=_others, title=gettext("Source ROI"),
            query={k: v for k, v in request.args.items() if k != "format"}), status

    @expose("/")
    @has_access
    def index(self):
        try:
            return self._page(parse(request.args))
        except RoiParameterError as exc:
            return self._page(parse({}), error=str(exc), status=400)

    @expose("/export/<fmt>")
    @has_access
    def export(self, fmt: str):
        try:
            params = parse({**request.args.to_dict(), "format": fmt})
            if params["format"] == "json":
                raise RoiParameterError("format", gettext("use “csv” or “xlsx”, not “%(value)s”", value=fmt[:50]))
        except RoiParameterError as exc:
            return self._page(parse({}), error=str(exc), status=400)
        return download(_report(params), params["format"])


class RoiApi(BaseApi):
    """The source ROI report as JSON, CSV or XLSX."""

    resource_name = "crm/roi"
    class_permission_name = "CrmCampaignRoi"
    method_permission_name = {"report": "get"}
    openapi_spec_tag = "CRM leads"

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def report(self):
        """Leads, qualified, converted, won revenue, cost, cost per lead and ROI per channel (or campaign).
        ---
        get:
          parameters:
          - {in: query, name: date_from, schema: {type: string, format: date}}
          - {in: query, name: date_to, schema: {type: string, format: date}}
          - {in: query, name: currency, schema: {type: string}, description: "CNY if absent"}
          - {in: query, name: by, schema: {type: string, enum: [channel, campaign]}}
          - {in: query, name: format, schema: {type: string, enum: [json, csv, xlsx]}}
          responses:
            200: {description: "currency, by, date_from, date_to, rows, totals (money as decimal strings)"}
            400: {description: a parameter is wrong; the message names it}
        """
        try:
            params = parse(request.args)
        except RoiParameterError as exc:
            return self.response_400(message=str(exc))
        report = _report(params)
        if params["format"] != "json":
            return download(report, params["format"])
        return self.response(200, **_plain(report))


def register(appbuilder) -> None:
    """Add the channel cost and ROI screens and API."""
    category = {"category": "CRM", "category_label": _l("CRM")}
    appbuilder.add_view(ChannelCostView, "CrmCampaignCost", label=_l("Channel costs"), icon="fa-money", **category)
    appbuilder.add_view(RoiView, "CrmCampaignRoi", label=_l("Source ROI"), icon="fa-line-chart", **category)
    appbuilder.add_api(ChannelCostApi)
    appbuilder.add_api(RoiApi)
