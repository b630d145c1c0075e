"""Forecast and pipeline analytics: the Forecast screen (tables and server-rendered SVG charts), its CSV and
XLSX download, and the same figures over the REST API. The figures come from `forecast.py`."""
from __future__ import annotations

import datetime as dt
import re
import tempfile
from decimal import Decimal
from typing import Any

from flask import g, request, send_file
from flask_appbuilder import BaseView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape
from sqlalchemy import select

from bigledger_core.db import db
from bigledger_core.i18n import current_locale

from .forecast import (
    DEFAULT_CURRENCY,
    GROUPS,
    PERIODS,
    ForecastParameterError,
    currencies,
    cycle_metrics,
    forecast,
    stage_conversion,
    totals,
)
from .models import Pipeline
from .services import default_pipeline, exchange_rate

FORMATS = ("json", "csv", "xlsx")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
PERIOD_LABELS = {"quarter": _l("Quarter"), "month": _l("Month")}
GROUP_LABELS = {"": _l("Everyone"), "owner": _l("Owner"), "team": _l("Team")}
FIGURES = {"open_deals": _l("Open deals"), "pipeline": _l("Pipeline amount"), "weighted": _l("Weighted pipeline"),
           "commit": _l("Commit"), "best_case": _l("Best case"), "omitted": _l("Omitted"),
           "won_deals": _l("Won deals"), "closed_won": _l("Closed won")}
CHART_SERIES = (("pipeline", "#9ecae1"), ("weighted", "#4292c6"), ("best_case", "#fdae6b"), ("commit", "#e6550d"),
                ("closed_won", "#31a354"))


# -- parameters ------------------------------------------------------------------------------------------

def _message(parameter: str, value: Any) -> str:
    """What is wrong with a parameter, in the user's language, naming the parameter."""
    if parameter == "exchange_rate":  # `value` lists the currency pairs without a rate
        return gettext("No exchange rate for %(pairs)s: the report cannot convert these amounts into one "
                       "currency. Add the missing rates, or choose one currency.", pairs=value)
    value = "" if value is None else str(value)[:50]
    if parameter == "period":
        return gettext("period: use “month” or “quarter”, not “%(value)s”.", value=value)
    if parameter == "group_by":
        return gettext("group_by: use “owner”, “team” or nothing, not “%(value)s”.", value=value)
    if parameter == "pipeline_id":
        return gettext("pipeline_id: there is no sales pipeline “%(value)s”.", value=value)
    if parameter == "currency":
        return gettext("currency: give a three-letter currency code such as CNY, not “%(value)s”.", value=value)
    if parameter == "report_currency":
        return gettext("report_currency: give a three-letter currency code such as CNY, not “%(value)s”.",
                       value=value)
    if parameter == "format":
        return gettext("format: use “json”, “csv” or “xlsx”, not “%(value)s”.", value=value)
    if parameter == "date_to" and value == "date_to":
        return gettext("date_to: the end of the date range is before its start (date_from).")
    return gettext("%(parameter)s: give a date as YYYY-MM-DD, not “%(value)s”.", parameter=parameter, value=value)


def _date(args, name: str) -> dt.date | None:
    text = (args.get(name) or "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ForecastParameterError(name, text) from None


def parse(args, *, need_pipeline: bool = False) -> dict[str, Any]:
    """The analytics parameters of a request (screen or API), checked; ForecastParameterError names the
    first one that is wrong."""
    period = (args.get("period") or "quarter").strip()
    if period not in PERIODS:
        raise ForecastParameterError("period", period)
    group_by = (args.get("group_by") or "").strip() or None
    if group_by is not None and group_by not in GROUPS:
        raise ForecastParameterError("group_by", group_by)
    pipeline_id = None
    text = (args.get("pipeline_id") or "").strip()
    if text:
        if not text.isdigit() or db.session.get(Pipeline, int(text)) is None:
            raise ForecastParameterError("pipeline_id", text)
        pipeline_id = int(text)
    elif need_pipeline:
        pipeline = default_pipeline(db.session)
        if pipeline is None:
            raise ForecastParameterError("pipeline_id", "")
        pipeline_id = pipeline.id
    date_from, date_to = _date(args, "date_from"), _date(args, "date_to")
    if date_from and date_to and date_from > date_to:
        raise ForecastParameterError("date_to", "date_to")
    currency = (args.get("currency") or "").strip() or None
    if currency is not None:
        if not _CURRENCY.match(currency):
            raise ForecastParameterError("currency", currency)
        currency = currency.upper()
    report_currency = (args.get("report_currency") or "").strip() or None
    if report_currency is not None:
        if not _CURRENCY.match(report_currency):
            raise ForecastParameterError("report_currency", report_currency)
        report_currency = report_currency.upper()
    fmt = (args.get("format") or "json").strip().lower()
    if fmt not in FORMATS:
        raise ForecastParameterError("format", fmt)
    return {"period": period, "group_by": group_by, "pipeline_id": pipeline_id, "date_from": date_from,
            "date_to": date_to, "currency": currency, "report_currency": report_currency, "format": fmt}


def _forecast_args(params: dict[str, Any]) -> dict[str, Any]:
    args = {k: params[k] for k in ("period", "group_by", "date_from", "date_to", "pipeline_id", "currency")}
    if params.get("report_currency"):  # every currency, converted with the rates a module supplies
        args.update(report_currency=params["report_currency"], rate=exchange_rate)
    return args


# -- presentation ----------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """JSON-ready: money as text with two places, dates as ISO text."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _localized(name: str | None, name_en: str | None) -> str | None:
    return name_en if current_locale() == "en" and name_en else name


def group_label(row: dict[str, Any], group_by: str | None) -> str:
    """The owner or team a forecast row is for, as the user reads it."""
    if group_by == "owner":
        return row.get("owner_name") or row.get("owner") or gettext("No owner")
    if group_by == "team":
        return _localized(row.get("team"), row.get("team_en")) or gettext("No team")
    return ""


def period_text(row: dict[str, Any]) -> str:
    return row["period"] or gettext("No expected close")


def export_columns(group_by: str | None) -> list[tuple[str, str]]:
    """[(key, header)] of the forecast download, headers in the user's language."""
    columns = [("period", gettext("Period")), ("currency", gettext("Currency"))]
    if group_by:
        columns.append(("group", str(GROUP_LABELS[group_by])))
    return columns + [(key, str(label)) for key, label in FIGURES.items()]


def export_rows(rows: list[dict[str, Any]], group_by: str | None, fmt: str):
    for row in rows:
        item = {"period": period_text(row), "currency": row["currency"], "group": group_label(row, group_by)}
        for key in FIGURES:
            value = row[key]
            item[key] = float(value) if fmt == "xlsx" and isinstance(value, Decimal) else value
        yield item


def download(rows: list[dict[str, Any]], group_by: str | None, fmt: str):
    """The forecast table as a CSV (UTF-8 with BOM) or XLSX file response."""
    from ..exporter import export_table

    out = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
    export_table(export_rows(rows, group_by, fmt), export_columns(group_by), fmt, out)
    out.seek(0)
    mimetype = "text/csv" if fmt == "csv" else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return send_file(out, mimetype=mimetype, as_attachment=True,
                     download_name=f"forecast-{dt.date.today().isoformat()}.{fmt}")


def _number(value: Any, places: int = 0) -> str:
    return "—" if value is None else f"{float(value):,.{places}f}"


def _nice_top(value: float) -> float:
    """A round number at or above `value` for the top of an axis."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def column_chart(labels: list[str], series: list[tuple[str, str, list[float]]], *, chart_id: str,
                 title: str, width: int = 760, height: int = 280) -> Markup:
    """Grouped vertical bars as inline SVG: one group per label, one bar per series (name, colour, values)."""
    left, right, top, bottom = 80, 10, 34, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_top(max((v for _n, _c, values in series for v in values), default=0))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{chart_id}" class="bl-chart" role="img" '
             f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" '
             f'font-family="sans-serif" font-size="11">', f"<title>{escape(title)}</title>"]
    for i in range(5):  # grid lines and their values
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
                     f'{_number(top_value * i / 4)}</text>')
    x = left
    for name, colour, _values in series:  # legend
        parts.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="17" fill="#333">{escape(name)}</text>')
        x += 24 + 7 * len(name) + (7 * sum(1 for c in name if ord(c) > 0x2e80))
    groups = max(len(labels), 1)
    group_w = plot_w / groups
    bar_w = max(min(group_w * 0.8 / max(len(series), 1), 28), 1)
    for g_index, label in enumerate(labels):
        start = left + g_index * group_w + (group_w - bar_w * len(series)) / 2
        for s_index, (name, colour, values) in enumerate(series):
            value = values[g_index]
            bar_h = plot_h * value / top_value if top_value else 0
            parts.append(f'<rect class="bl-bar" x="{start + s_index * bar_w:.1f}" y="{top + plot_h - bar_h:.1f}" '
                         f'width="{bar_w - 1:.1f}" height="{bar_h:.1f}" fill="{colour}">'
                         f'<title>{escape(label)} · {escape(name)}: {_number(value, 2)}</title></rect>')
        parts.append(f'<text x="{left + (g_index + 0.5) * group_w:.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="middle" fill="#333">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_list(rows: list[tuple[str, float, str]], *, chart_id: str, title: str, colour: str = "#4292c6",
             maximum: float | None = None, width: int = 560) -> Markup:
    """Horizontal bars as inline SVG: (label, value, text shown at the bar's end) per row."""
    left, bar_h, gap = 140, 18, 8
    height = max(len(rows), 1) * (bar_h + gap) + gap
    top_value = maximum or max((v for _l, v, _t in rows), default=0) or 1
    plot_w = width - left - 90
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{chart_id}" class="bl-chart" role="img" '
             f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" '
             f'font-family="sans-serif" font-size="11">', f"<title>{escape(title)}</title>"]
    for i, (label, value, text) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        w = plot_w * max(value, 0) / top_value
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" fill="#333">{escape(label)}</text>'
                     f'<rect class="bl-bar" x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                     f'<title>{escape(label)}: {escape(text)}</title></rect>'
                     f'<text x="{left + w + 6:.1f}" y="{y + 13}" fill="#333">{escape(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


# offered on the screen for converting every deal into one currency (with rates a module supplies)
REPORT_CURRENCIES = ("CNY", "USD", "EUR", "HKD", "SGD", "MYR", "THB", "IDR", "VND", "PHP", "JPY")


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _page(params: dict[str, Any]) -> dict[str, Any]:
    """Everything the Forecast screen shows for these parameters."""
    user = g.user
    currency_list = currencies(db.session, pipeline_id=params["pipeline_id"], user=user)
    currency = params["report_currency"] or params["currency"] or (currency_list[0][0] if currency_list else "CNY")
    args = _forecast_args(params) if params["report_currency"] else {**_forecast_args(params), "currency": currency}
    rows = forecast(db.session, user=user, **args)
    pipelines = list(db.session.scalars(select(Pipeline).where(Pipeline.active.is_(True)).order_by(Pipeline.name)))
    pipeline_id = params["pipeline_id"] or (default_pipeline(db.session).id if pipelines else None)
    conversion = stage_conversion(db.session, pipeline_id, date_from=params["date_from"],
                                  date_to=params["date_to"], user=user) if pipeline_id else []
    metrics = cycle_metrics(db.session, pipeline_id=params["pipeline_id"], group_by=params["group_by"],
                            date_from=params["date_from"], date_to=params["date_to"], currency=currency, user=user)
    by_period: dict[str, dict[str, float]] = {}
    for row in rows:
        sums = by_period.setdefault(period_text(row), {key: 0.0 for key, _c in CHART_SERIES})
        for key, _colour in CHART_SERIES:
            sums[key] += float(row[key])
    chart = column_chart(list(by_period), [(str(FIGURES[key]), colour, [v[key] for v in by_period.values()])
                                           for key, colour in CHART_SERIES],
                         chart_id="bl-forecast-chart", title=gettext("Forecast by period"))
    steps = [c for c in conversion if not c["won_stage"]]
    conversion_chart = bar_list(
        [(_localized(c["stage"], c["stage_en"]), c["rate"] or 0.0, _percent(c["rate"])) for c in steps],
        chart_id="bl-conversion-chart", title=gettext("Stage conversion"), maximum=1.0, colour="#31a354")
    stays = [s for s in metrics["time_in_stage"] if s["avg_days"] is not None]
    stage_chart = bar_list(
        [(_localized(s["stage"], s["stage_en"]), s["avg_days"], gettext("%(days)s days", days=s["avg_days"]))
         for s in stays], chart_id="bl-stage-time-chart", title=gettext("Average time in stage"), colour="#fd8d3c")
    report_currencies = sorted({code for code, _count in currency_list} | set(REPORT_CURRENCIES)
                               | ({params["report_currency"]} if params["report_currency"] else set()))
    return {"params": params, "currency": currency, "currencies": currency_list, "rows": rows,
            "report_currencies": report_currencies,
            "totals": totals(rows), "pipelines": pipelines, "pipeline_id": pipeline_id, "conversion": conversion,
            "metrics": metrics, "chart": chart, "conversion_chart": conversion_chart, "stage_chart": stage_chart,
            "figures": FIGURES, "period_labels": PERIOD_LABELS, "group_labels": GROUP_LABELS,
            "group_label": group_label, "period_text": period_text, "localized": _localized, "percent": _percent,
            "number": _number, "query": {k: v for k, v in request.args.items() if k != "format"}}


# -- screen ----------------------------------------------------------------------------------------------

class ForecastView(BaseView):
    """Forecast (销售预测): forecast table and chart, stage conversion, time in stage, cycle and velocity."""

    route_base = "/crm/forecast"
    default_view = "index"
    class_permission_name = "CrmForecast"
    method_permission_name = {"index": "list", "export": "export"}
    base_permissions = ["can_list", "can_export"]

    @expose("/")
    @has_access
    def index(self):
        try:
            params = parse(request.args)
            status, error = 200, None
        except ForecastParameterError as exc:
            params, status, error = parse({}), 400, _message(exc.parameter, str(exc))
        try:
            values = _page(params)
        except ForecastParameterError as exc:
            values, status, error = _page(parse({})), 400, _message(exc.parameter, str(exc))
        return self.render_template("crm/forecast.html", error=error, title=gettext("Forecast"), **values), status

    @expose("/export/<fmt>")
    @has_access
    def export(self, fmt: str):
        if fmt not in ("csv", "xlsx"):
            return self.render_template("crm/forecast.html", error=_message("format", fmt),
                                        title=gettext("Forecast"), **_page(parse({}))), 404
        try:
            params = parse({k: v for k, v in request.args.items() if k != "format"})
            rows = forecast(db.session, user=g.user, **_forecast_args(params))
        except ForecastParameterError as exc:
            return self.render_template("crm/forecast.html", error=_message(exc.parameter, str(exc)),
                                        title=gettext("Forecast"), **_page(parse({}))), 400
        return download(rows, params["group_by"], fmt)


# -- REST API --------------------------------------------------------------------------------------------

class ForecastApi(BaseApi):
    """Forecast, stage conversion and cycle metrics as JSON (the forecast also as CSV or XLSX)."""

    resource_name = "crm/forecast"
    class_permission_name = "CrmForecast"
    method_permission_name = {"forecast": "get", "conversion": "get", "metrics": "get"}
    openapi_spec_tag = "CRM"

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def forecast(self):
        """Pipeline, weighted pipeline, commit, best case and closed won per period and owner or team.
        ---
        get:
          parameters:
          - {in: query, name: period, schema: {type: string, enum: [quarter, month]}}
          - {in: query, name: group_by, schema: {type: string, enum: [owner, team]}}
          - {in: query, name: pipeline_id, schema: {type: integer}}
          - {in: query, name: date_from, schema: {type: string, format: date}}
          - {in: query, name: date_to, schema: {type: string, format: date}}
          - {in: query, name: currency, schema: {type: string}}
          - {in: query, name: report_currency, schema: {type: string}, description: "convert into this currency"}
          - {in: query, name: format, schema: {type: string, enum: [json, csv, xlsx]}}
          responses:
            200: {description: "currency, result: one row per period (and owner or team), totals; or the file"}
            400: {description: a parameter is wrong; the message names it}
        """
        try:
            params = parse(request.args)
            rows = forecast(db.session, user=g.user, **_forecast_args(params))
            currency = rows[0]["currency"] if rows else \
                params["report_currency"] or params["currency"] or DEFAULT_CURRENCY
        except ForecastParameterError as exc:
            return self.response_400(message=_message(exc.parameter, str(exc)))
        if params["format"] != "json":
            return download(rows, params["group_by"], params["format"])
        return self.response(200, **_plain({"period": params["period"], "group_by": params["group_by"],
                                            "pipeline_id": params["pipeline_id"], "date_from": params["date_from"],
                                            "date_to": params["date_to"], "currency": currency, "result": rows,
                                            "totals": totals(rows)}))

    @expose("/conversion", methods=["GET"])
    @protect()
    @safe
    def conversion(self):
        """Per stage: deals that entered it, advanced from it, were lost in it, and the conversion rate.
        ---
        get:
          parameters:
          - {in: query, name: pipeline_id, schema: {type: integer}, description: the default pipeline if absent}
          - {in: query, name: date_from, schema: {type: string, format: date}}
          - {in: query, name: date_to, schema: {type: string, format: date}}
          responses:
            200: {description: "pipeline_id, result: one row per stage, won stage last"}
            400: {description: a parameter is wrong; the message names it}
        """
        try:
            params = parse(request.args, need_pipeline=True)
            rows = stage_conversion(db.session, params["pipeline_id"], date_from=params["date_from"],
                                    date_to=params["date_to"], user=g.user)
        except ForecastParameterError as exc:
            return self.response_400(message=_message(exc.parameter, str(exc)))
        return self.response(200, **_plain({"pipeline_id": params["pipeline_id"], "date_from": params["date_from"],
                                            "date_to": params["date_to"], "result": rows}))

    @expose("/metrics", methods=["GET"])
    @protect()
    @safe
    def metrics(self):
        """Average time in stage, and win rate, sales cycle, average won amount and velocity per group.
        ---
        get:
          parameters:
          - {in: query, name: pipeline_id, schema: {type: integer}}
          - {in: query, name: group_by, schema: {type: string, enum: [owner, team]}}
          - {in: query, name: date_from, schema: {type: string, format: date}}
          - {in: query, name: date_to, schema: {type: string, format: date}}
          - {in: query, name: currency, schema: {type: string}}
          responses:
            200: {description: "currency, time_in_stage, summary"}
            400: {description: a parameter is wrong; the message names it}
        """
        try:
            params = parse(request.args)
            result = cycle_metrics(db.session, pipeline_id=params["pipeline_id"], group_by=params["group_by"],
                                   date_from=params["date_from"], date_to=params["date_to"],
                                   currency=params["currency"], user=g.user)
        except ForecastParameterError as exc:
            return self.response_400(message=_message(exc.parameter, str(exc)))
        return self.response(200, **_plain({"pipeline_id": params["pipeline_id"], "group_by": params["group_by"],
                                            "date_from": params["date_from"], "date_to": params["date_to"],
                                            **result}))


def register(appbuilder) -> None:
    """Add the forecast and analytics screens and API."""
    appbuilder.add_view(ForecastView, "CrmForecast", label=_l("Forecast"), icon="fa-line-chart", category="CRM",
                        category_label=_l("CRM"))
    appbuilder.add_api(ForecastApi)
