"""Pipeline screens: pipelines loaded from their YAML, stages, deals with their line items, contacts and
competitors, and the stage actions (move, win, lose, reopen) on a deal's page."""
from __future__ import annotations

from decimal import Decimal

from flask import Response, abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, ModelView, expose, has_access
from flask_appbuilder.actions import action
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from wtforms import DecimalField, SelectField
from wtforms.validators import Optional

from bigledger_core.db import db
from bigledger_core.i18n import current_locale
from bigledger_core.security import OwnedRecordsMixin, visible_record

from ..forms import ListExportMixin
from ..models import Activity
from ..views import DEAL_STATUS_LABELS, LABELS, ActivityView
from . import config
from .models import (
    Competitor,
    Deal,
    DealCompetitor,
    DealContact,
    DealLine,
    Pipeline,
    Stage,
)
from .services import (
    PipelineError,
    StageChangeRefused,
    check_line,
    checks_json,
    create_deal,
    deal_panels,
    deal_warnings,
    line_checks,
    load_pipeline,
    lose_deal,
    move_deal,
    reopen_deal,
    set_default,
    set_probability,
    spec_of,
    status_label,
    win_deal,
)

DEAL_LABELS = {
    **LABELS,
    "pipeline": _l("Pipeline"), "stage": _l("Stage"), "status": _l("Status"), "currency": _l("Currency"),
    "amount": _l("Amount"), "mrr": _l("MRR"), "arr": _l("ARR"), "probability": _l("Probability (0–1)"),
    "probability_reason": _l("Why this probability"), "forecast_category": _l("Forecast category"),
    "expected_close": _l("Expected close"), "closed_at": _l("Closed"), "close_reason": _l("Won/lost reason"),
    "lost_to": _l("Lost to"), "source": _l("Source"), "channel": _l("Channel"), "campaign": _l("Campaign"),
    "description": _l("Description"), "weighted_amount": _l("Weighted amount"), "deal": _l("Deal"),
    "product": _l("Product or service"), "product_code": _l("Product code"), "quantity": _l("Quantity"),
    "unit_price": _l("Unit price"), "discount": _l("Discount (0–1)"), "billing_period": _l("Billing period"),
    "term_months": _l("Term (months)"), "net": _l("Net per billing"), "total": _l("Total"),
    "competitor": _l("Competitor"), "notes": _l("Notes"), "strengths": _l("Strengths"),
    "weaknesses": _l("Weaknesses"), "website": _l("Website"), "is_default": _l("Default"),
    "key_language": _l("Key language"), "position": _l("Position"),
    "activities": _l("Activities"), "activities_required": _l("Activities required"),
    "task_due_days": _l("Tasks due after (days)"), "stage_entered_at": _l("In stage since"),
}
STATUS_LABELS = DEAL_STATUS_LABELS
PERIOD_LABELS = {"once": _l("One-off"), "month": _l("Monthly"), "quarter": _l("Quarterly"), "year": _l("Yearly")}
FORECAST_LABELS = {"": _l("From the probability"), "pipeline": _l("Pipeline"), "best_case": _l("Best case"),
                   "commit": _l("Commit"), "omitted": _l("Omitted")}


def _select(label, choices: dict) -> SelectField:
    return SelectField(label, choices=[(k, v) for k, v in choices.items()], validators=[Optional()])


class _VisibleDealChild:
    """Lines, contacts and competitors of the deals the user may see."""

    def pre_add(self, item):
        _visible_deal(item.deal_id or (item.deal.id if item.deal else None))

    def pre_update(self, item):
        _visible_deal(item.deal_id)


def _visible_deal(pk) -> Deal:
    """The deal `pk` if the current user may see it; 404 otherwise."""
    deal = visible_record(Deal, pk, g.user, db.session)
    if deal is None:
        abort(404)
    return deal


class DealLineView(_VisibleDealChild, ModelView):
    datamodel = SQLAInterface(DealLine)
    class_permission_name = "CrmDeal"
    list_title = _l("Line items")
    list_columns = ["product", "quantity", "unit_price", "discount", "billing_period", "term_months", "total"]
    add_columns = edit_columns = ["deal", "product", "product_code", "quantity", "unit_price", "discount",
                                  "billing_period", "term_months", "position"]
    label_columns = DEAL_LABELS
    add_form_extra_fields = edit_form_extra_fields = {"billing_period": _select(DEAL_LABELS["billing_period"],
                                                                                PERIOD_LABELS)}

    add_form_extra_fields = {**add_form_extra_fields,
                             "unit_price": DecimalField(DEAL_LABELS["unit_price"], validators=[Optional()], places=2,
                                                        description=_l("Empty: the price a module offers for this "
                                                                       "customer, else 0"))}

    def pre_add(self, item):
        with db.session.no_autoflush:  # the line is checked before it is written
            deal = _visible_deal(item.deal_id or (item.deal.id if item.deal else None))
            if item.unit_price is None:
                item.unit_price = Decimal(0)
            warnings = check_line(deal, item, adding=True)
        for warning in warnings:
            flash(warning, "warning")

    def pre_update(self, item):
        with db.session.no_autoflush:
            deal = _visible_deal(item.deal_id)
            warnings = check_line(deal, item, adding=False)
        for warning in warnings:
            flash(warning, "warning")


class DealContactView(_VisibleDealChild, ModelView):
    datamodel = SQLAInterface(DealContact)
    class_permission_name = "CrmDeal"
    list_title = _l("People on the deal")
    list_columns = ["contact", "role"]
    add_columns = edit_columns = ["deal", "contact", "role"]
    label_columns = DEAL_LABELS


class DealCompetitorView(_VisibleDealChild, ModelView):
    datamodel = SQLAInterface(DealCompetitor)
    class_permission_name = "CrmDeal"
    list_title = _l("Competitors on the deal")
    list_columns = ["competitor", "strengths", "weaknesses", "notes"]
    add_columns = edit_columns = ["deal", "competitor", "strengths", "weaknesses", "notes"]
    label_columns = DEAL_LABELS


class DealTaskView(ActivityView):
    class_permission_name = "CrmActivity"
    list_title = _l("Activities")
    list_columns = ["due_at", "subject", "kind", "done", "user", "occurred_at"]


class CompetitorView(ModelView):
    datamodel = SQLAInterface(Competitor)
    class_permission_name = "CrmCompetitor"
    list_title = _l("Competitors")
    list_columns = ["name", "website"]
    add_columns = edit_columns = show_columns = ["name", "website", "notes"]
    label_columns = DEAL_LABELS
    related_views = [DealCompetitorView]


class DealView(ListExportMixin, OwnedRecordsMixin, ModelView):
    export_name = "deals"
    datamodel = SQLAInterface(Deal)
    class_permission_name = "CrmDeal"
    list_title = _l("Deals")
    show_title = _l("Deal")
    add_title = _l("Add deal")
    edit_title = _l("Edit deal")
    list_columns = ["name", "company", "stage", "status", "amount", "currency", "probability", "expected_close",
                    "owner"]
    add_columns = ["name", "company", "contact", "pipeline", "currency", "amount", "expected_close", "owner", "team",
                   "source", "channel", "campaign", "description"]
    edit_columns = ["name", "company", "contact", "currency", "amount", "probability", "probability_reason",
                    "forecast_category", "expected_close", "owner", "team", "source", "channel", "campaign",
                    "description"]
    show_columns = ["name", "company", "contact", "pipeline", "stage", "status", "currency", "amount", "mrr",
                    "probability", "probability_reason", "weighted_amount", "forecast_category", "expected_close",
                    "closed_at", "close_reason", "lost_to", "owner", "team", "source", "channel", "campaign",
                    "description", "stage_entered_at", "created_at", "updated_at"]
    search_columns = ["name", "company", "contact", "pipeline", "stage", "status", "currency", "expected_close",
                      "owner", "team", "source", "channel", "campaign", "lost_to", "created_at"]
    order_columns = ["name", "amount", "probability", "expected_close", "status"]
    base_order = ("id", "desc")
    label_columns = DEAL_LABELS
    formatters_columns = {"status": lambda value: STATUS_LABELS.get(value, value)}
    add_form_extra_fields = {"currency": _select(DEAL_LABELS["currency"], {c: c for c in (
        "CNY", "USD", "MYR", "SGD", "HKD", "EUR", "JPY", "THB", "IDR", "VND", "PHP")})}
    edit_form_extra_fields = {**add_form_extra_fields,
                              "forecast_category": _select(DEAL_LABELS["forecast_category"], FORECAST_LABELS)}
    related_views = [DealLineView, DealContactView, DealCompetitorView, DealTaskView]
    show_template = "crm/deal_show.html"

    def pre_add(self, item):
        super().pre_add(item)
        try:
            create_deal(db.session, item)
        except StageChangeRefused as exc:
            db.session.rollback()
            raise ValueError(" ".join(exc.reasons)) from None
        for warning in deal_warnings(item):
            flash(warning, "warning")

    def pre_update(self, item):
        if not item.forecast_category:
            item.forecast_category = None
        try:
            with db.session.no_autoflush:
                set_probability(item, Decimal(item.probability or 0), item.probability_reason)
        except StageChangeRefused as exc:
            raise ValueError(" ".join(exc.reasons)) from None

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        deal = _visible_deal(pk)
        g.crm_deal_page = {"deal": deal, "stages": deal.pipeline.stages, "status_label": status_label(deal.status),
                           "status_labels": STATUS_LABELS,
                       "competitors": db.session.scalars(select(Competitor).order_by(Competitor.name)).all(),
                       "open_tasks": db.session.scalars(select(Activity).where(
                           Activity.deal_id == deal.id, Activity.done.is_(False)).order_by(Activity.due_at)).all(),
                       "panels": deal_panels(deal), "locale": current_locale(),
                       "line_checks": checks_json(line_checks(deal, deal.lines), deal.lines)}
        return super().show(pk)

    def render_template(self, template, **kwargs):
        return super().render_template(template, **{**g.get("crm_deal_page", {}), **kwargs})


class DealActionsView(BaseView):
    """The stage buttons on a deal's page: move, win, lose, reopen (all through the pipeline commands)."""

    route_base = "/crm/deal"
    class_permission_name = "CrmDeal"
    method_permission_name = {"move": "edit", "win": "edit", "lose": "edit", "reopen": "edit"}
    base_permissions = ["can_edit"]

    def _run(self, pk, command):
        deal = _visible_deal(pk)
        try:
            command(deal)
            db.session.commit()
            flash(gettext("Saved: the deal is now in “%(stage)s” (%(status)s).", stage=deal.stage.name,
                          status=status_label(deal.status)), "success")
        except StageChangeRefused as exc:
            db.session.rollback()
            for reason in exc.reasons:
                flash(reason, "danger")
        return redirect(url_for("DealView.show", pk=pk))

    @expose("/<int:pk>/move", methods=["POST"])
    @has_access
    def move(self, pk):
        stage_id = request.form.get("stage_id", type=int)
        return self._run(pk, lambda deal: move_deal(db.session, deal, stage_id or -1,
                                                    reason=request.form.get("reason")))

    @expose("/<int:pk>/win", methods=["POST"])
    @has_access
    def win(self, pk):
        return self._run(pk, lambda deal: win_deal(db.session, deal, reason=request.form.get("reason")))

    @expose("/<int:pk>/lose", methods=["POST"])
    @has_access
    def lose(self, pk):
        return self._run(pk, lambda deal: lose_deal(db.session, deal, reason=request.form.get("reason"),
                                                    lost_to_id=request.form.get("lost_to_id", type=int)))

    @expose("/<int:pk>/reopen", methods=["POST"])
    @has_access
    def reopen(self, pk):
        return self._run(pk, lambda deal: reopen_deal(db.session, deal, request.form.get("stage_id", type=int)))


class StageView(ModelView):
    datamodel = SQLAInterface(Stage)
    class_permission_name = "CrmPipeline"
    list_title = _l("Stages")
    list_columns = ["position", "name", "name_en", "probability", "activities", "activities_required",
                    "task_due_days"]
    edit_columns = ["name_en", "probability", "activities_required", "task_due_days"]
    show_columns = ["pipeline", "position", "name", "name_en", "probability", "activities", "activities_required",
                    "task_due_days"]
    base_order = ("position", "asc")
    base_permissions = ["can_list", "can_show", "can_edit"]
    label_columns = DEAL_LABELS
    formatters_columns = {"activities": lambda value: "、".join(value or []),
                          "probability": lambda value: config.format_probability(value)}

    def pre_update(self, item):
        if item.probability is None or not 0 <= item.probability <= 1:
            raise ValueError(str(_l("The probability must be between 0 and 1 (0.25 = 25%).")))
        if item.is_won and item.probability != 1:
            raise ValueError(str(_l("The last stage is where won deals go, so its probability must be 1 (100%).")))


class PipelineView(ModelView):
    datamodel = SQLAInterface(Pipeline)
    class_permission_name = "CrmPipeline"
    list_title = _l("Sales pipelines")
    show_title = _l("Sales pipeline")
    list_columns = ["name", "name_en", "is_default", "active"]
    show_columns = ["name", "name_en", "is_default", "active", "key_language", "created_at"]
    edit_columns = ["name_en", "active"]
    base_permissions = ["can_list", "can_show", "can_edit", "can_load", "can_export"]
    method_permission_name = {"load": "load", "export": "export", "make_default": "edit"}
    label_columns = DEAL_LABELS
    related_views = [StageView]
    list_template = "crm/pipeline_list.html"

    @action("make_default", _l("Make default"), "", "fa-star", multiple=False)
    def make_default(self, item):
        set_default(db.session, item)
        db.session.commit()
        return redirect(url_for("PipelineView.list"))

    @expose("/load/", methods=["GET", "POST"])
    @has_access
    def load(self):
        """Load a pipeline from its YAML (pasted or uploaded): creates it, or updates it in place."""
        problems, text = [], request.form.get("yaml", "")
        if request.method == "POST":
            upload = request.files.get("file")
            if upload and upload.filename:
                raw = upload.read(256 * 1024 + 1)
                if len(raw) > 256 * 1024:
                    problems.append(gettext("The file is larger than %(size)s.", size="256 KB"))
                else:
                    try:
                        text = raw.decode("utf-8-sig")
                    except UnicodeDecodeError:
                        problems.append(gettext("The file is not UTF-8 text."))
            moves = {}
            for number, line in enumerate(request.form.get("moves", "").splitlines(), 1):
                if line.strip():
                    old, sep, new = line.partition("=")
                    if not sep or not old.strip() or not new.strip():
                        problems.append(gettext("Moves, line %(line)d: write OLD STAGE=NEW STAGE", line=number))
                    moves[old.strip()] = new.strip()
            if not problems:
                try:
                    pipeline = load_pipeline(db.session, config.parse(text),
                                             name=request.form.get("name") or None, move_to=moves,
                                             make_default=bool(request.form.get("default")) or None)
                    db.session.commit()
                    flash(gettext("Pipeline “%(name)s” loaded with %(count)d stages.", name=pipeline.name,
                                  count=len(pipeline.stages)), "success")
                    return redirect(url_for("PipelineView.show", pk=pipeline.id))
                except (config.PipelineConfigError, PipelineError) as exc:
                    db.session.rollback()
                    problems += exc.problems
        return self.render_template("crm/pipeline_load.html", problems=problems, text=text,
                                    name=request.form.get("name", ""), moves=request.form.get("moves", ""))

    @expose("/export/<int:pk>")
    @has_access
    def export(self, pk):
        pipeline = db.session.get(Pipeline, pk) or abort(404)
        return Response(config.dump(spec_of(pipeline)), mimetype="application/x-yaml",
                        headers={"Content-Disposition": f"attachment; filename=pipeline-{pk}.yaml"})


def register(appbuilder) -> None:
    """Add the pipeline's screens, its API and the board and forecast."""
    from . import api, board, forecast_views

    category = {"category": "CRM", "category_label": _l("CRM")}
    appbuilder.add_view(DealView, "CrmDeal", label=_l("Deals"), icon="fa-handshake-o", **category)
    board.register(appbuilder)
    forecast_views.register(appbuilder)
    appbuilder.add_view(PipelineView, "CrmPipeline", label=_l("Sales pipelines"), icon="fa-columns", **category)
    appbuilder.add_view(CompetitorView, "CrmCompetitor", label=_l("Competitors"), icon="fa-flag", **category)
    for view in (StageView, DealLineView, DealContactView, DealCompetitorView, DealTaskView, DealActionsView):
        appbuilder.add_view_no_menu(view)
    api.register(appbuilder)
