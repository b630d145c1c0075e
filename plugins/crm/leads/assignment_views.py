"""Assignment screens and REST API: the assignment rules, the reps' settings (weight, capacity, availability),
a lead's assignment history with manual reassignment, and `/api/v1/crm/lead/<id>/assign(ments)`."""
from __future__ import annotations

from flask import current_app, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, ModelView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.api import expose as expose_api
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.sqla.models import User
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from sqlalchemy import func, select
from wtforms import BooleanField, IntegerField
from wtforms.validators import DataRequired, NumberRange, Optional, ValidationError

from bigledger_core.db import db
from bigledger_core.i18n import current_locale
from bigledger_core.models import Team

from ..views import LABELS
from .assignment import (
    MAX_WEIGHT,
    AssignmentError,
    criterion_problem,
    describe,
    history,
    reassign,
)
from .models import AssignmentRule, RepSetting
from .views import _visible_lead

ASSIGNMENT_LABELS = {
    **LABELS, "name": _l("Name"), "criterion": _l("Criterion"), "user": _l("User"), "team": _l("Team"),
    "position": _l("Position"), "active": _l("Enabled"), "weight": _l("Weight"),
    "max_open_leads": _l("Capacity (open leads at most)"), "available": _l("Available"),
    "away_until": _l("Away until"),
}


def _check_criterion(form, field) -> None:
    problem = criterion_problem(db.session, field.data or "")
    if problem:
        raise ValidationError(problem)


def _criterion_cell(criterion: str) -> Markup:
    """The criterion in the rules list, with why it is skipped when it no longer parses."""
    problem = criterion_problem(db.session, criterion or "")
    cell = Markup("<code>{}</code>").format(criterion)
    if problem:
        cell += Markup('<br><span class="text-danger bl-rule-problem">{}</span>').format(
            gettext("skipped: %(problem)s", problem=problem))
    return cell


class AssignmentRuleView(ModelView):
    """Rules tried in order on every new lead without an owner: the first whose criterion matches decides."""

    datamodel = SQLAInterface(AssignmentRule)
    class_permission_name = "CrmAssignmentRule"
    list_title = _l("Assignment rules")
    show_title = _l("Assignment rule")
    add_title = _l("Add assignment rule")
    edit_title = _l("Edit assignment rule")
    list_columns = ["position", "name", "criterion", "team", "user", "active"]
    add_columns = edit_columns = show_columns = ["position", "name", "criterion", "team", "user", "active"]
    base_order = ("position", "asc")
    label_columns = ASSIGNMENT_LABELS
    formatters_columns = {"criterion": _criterion_cell, "team": lambda v: v or "", "user": lambda v: v or ""}
    validators_columns = {"criterion": [DataRequired(), _check_criterion]}
    add_form_extra_fields = edit_form_extra_fields = {
        "active": BooleanField(ASSIGNMENT_LABELS["active"], validators=[Optional()]),
        "position": IntegerField(ASSIGNMENT_LABELS["position"], validators=[Optional()],
                                 description=_l("Rules are tried from the lowest position; the first that matches "
                                                "decides. Empty: after the last rule."))}
    description_columns = {
        "criterion": _l("In the rule language, e.g. 行业 = '科技' 且 公司规模 > 1000, or city IN ('上海', '杭州')."),
        "team": _l("Leads that match go to this team by round robin (also when the user below is away or full)."),
        "user": _l("Leads that match go to this user while they are available and under capacity."),
    }

    def pre_add(self, item):
        self._check(item)
        if item.position is None:
            item.position = (db.session.scalar(select(func.max(AssignmentRule.position))) or 0) + 1

    def pre_update(self, item):
        self._check(item)

    def _check(self, item):
        if item.team is None and item.user is None:
            raise ValueError(gettext("Choose a team, a user or both for the rule."))
        item.name = (item.name or "").strip()


class RepSettingView(ModelView):
    """How leads reach each rep: weight in round robin, capacity and availability (leave)."""

    datamodel = SQLAInterface(RepSetting)
    class_permission_name = "CrmRepSetting"
    list_title = _l("Rep settings")
    show_title = _l("Rep setting")
    add_title = _l("Add rep setting")
    edit_title = _l("Edit rep setting")
    list_columns = ["user", "weight", "max_open_leads", "available", "away_until"]
    add_columns = show_columns = ["user", "weight", "max_open_leads", "available", "away_until"]
    edit_columns = ["weight", "max_open_leads", "available", "away_until"]
    label_columns = ASSIGNMENT_LABELS
    validators_columns = {"user": [DataRequired()], "weight": [NumberRange(1, MAX_WEIGHT)],
                          "max_open_leads": [Optional(), NumberRange(min=0)]}
    add_form_extra_fields = edit_form_extra_fields = {
        "available": BooleanField(ASSIGNMENT_LABELS["available"], validators=[Optional()])}
    description_columns = {
        "weight": _l("A rep with weight 2 receives twice as many leads by round robin as one with weight 1."),
        "max_open_leads": _l("No new leads once this many are new, working, nurturing or qualified; empty: no "
                             "limit."),
        "available": _l("Untick while the rep receives no leads at all."),
        "away_until": _l("On leave up to and including this day."),
    }

    def pre_add(self, item):
        if item.user is not None and db.session.get(RepSetting, item.user.id) is not None:
            raise ValueError(gettext("%(user)s already has settings; edit them instead.", user=item.user))


class LeadAssignmentView(BaseView):
    """A lead's assignment history (who, when, by whom or which rule) and, for managers, reassignment."""

    route_base = "/crm/assignment"
    default_view = "lead"
    class_permission_name = "CrmLeadAssignment"
    method_permission_name = {"lead": "show"}
    base_permissions = ["can_show"]

    @expose("/lead/<int:pk>", methods=["GET"])
    @has_access
    def lead(self, pk):
        return self.render_template("crm/assignment_lead.html", lead=_visible_lead(pk))


class ReassignView(BaseView):
    """Manual reassignment from the lead's assignment panel (form POST)."""

    route_base = "/crm/assignment"
    default_view = "reassign"
    class_permission_name = "CrmAssignment"
    method_permission_name = {"reassign": "reassign"}
    base_permissions = ["can_reassign"]

    @expose("/lead/<int:pk>/reassign", methods=["POST"])
    @has_access
    def reassign(self, pk):
        lead = _visible_lead(pk)
        try:
            user_id, team_id = _id(request.form.get("user_id")), _id(request.form.get("team_id"))
            row = reassign(db.session, lead, user_id=user_id, team_id=team_id, by_id=g.user.id)
            db.session.commit()
            flash(gettext("Lead assigned: %(reason)s", reason=describe(row.reason, current_locale())), "success")
        except AssignmentError as exc:
            db.session.rollback()
            flash(str(exc), "danger")
        target = request.form.get("next") or ""
        if not target.startswith("/") or target.startswith("//"):  # only back to a page of this site
            target = url_for("LeadAssignmentView.lead", pk=pk)
        return redirect(target)


def _id(value) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not str(value).isdigit():
        raise AssignmentError(gettext("“%(value)s” is not an id.", value=value))
    return int(value)


def _panel_context() -> dict:
    """Template helpers for the assignment panel (crm/assignment_panel.html), which a lead page includes."""

    def crm_lead_assignments(lead_id: int) -> list[dict]:
        return history(db.session, lead_id, current_locale())

    def crm_assignment_choices() -> dict:
        name = func.trim(func.coalesce(User.first_name, "") + " " + func.coalesce(User.last_name, ""))
        users = db.session.execute(select(User.id, name, User.username).where(User.active.is_(True))
                                   .order_by(User.first_name, User.last_name, User.id).limit(1000)).all()
        english = current_locale() == "en"
        teams = db.session.execute(select(Team.id, Team.name, Team.name_en).order_by(Team.name)).all()
        return {"users": [(uid, full or username) for uid, full, username in users],
                "teams": [(tid, (name_en if english else None) or name) for tid, name, name_en in teams]}

    return {"crm_lead_assignments": crm_lead_assignments, "crm_assignment_choices": crm_assignment_choices}


class LeadAssignmentHistoryApi(BaseApi):
    """A lead's assignment history."""

    resource_name = "crm/lead"
    class_permission_name = "CrmLeadAssignment"
    method_permission_name = {"assignments": "get"}
    openapi_spec_tag = "CRM leads"

    @expose_api("/<int:pk>/assignments", methods=["GET"])
    @protect()
    @safe
    def assignments(self, pk):
        """Who the lead was assigned to, newest first: user, team, by whom, and why (a rule, round robin,
        by hand), the reason as a sentence in the request's language and as data (`reason_detail`).
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the owner, the team and the history}
            404: {description: no such lead (or not yours)}
        """
        from .api import _visible_lead as visible

        lead = visible(pk)
        if lead is None:
            return self.response_404()
        rows = history(db.session, lead.id, current_locale())
        for row in rows:
            row["at"] = row["at"].isoformat()
        return self.response(200, id=lead.id, owner_id=lead.owner_id, team_id=lead.team_id, result=rows)


class LeadReassignApi(BaseApi):
    """Manual reassignment of a lead."""

    resource_name = "crm/lead"
    class_permission_name = "CrmAssignment"
    method_permission_name = {"assign": "post"}
    openapi_spec_tag = "CRM leads"

    @expose_api("/<int:pk>/assign", methods=["POST"])
    @protect()
    @safe
    def assign(self, pk):
        """Assign the lead by hand: `{"user_id": 7}`, `{"user_id": 7, "team_id": 2}` (the user must be in the
        team) or `{"team_id": 2}` (round robin in the team). Recorded as done by the caller.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the new owner and team, and the recorded assignment}
            400: {description: no user or team given, an unknown user or team, or a user outside the team}
            404: {description: no such lead (or not yours)}
        """
        from .api import _visible_lead as visible

        lead = visible(pk)
        if lead is None:
            return self.response_404()
        body = request.get_json(silent=True)
        try:
            if not isinstance(body, dict):
                raise AssignmentError(gettext("Send a JSON object such as %(example)s.",
                                              example='{"user_id": 7, "team_id": 2}'))
            row = reassign(db.session, lead, user_id=_json_id(body, "user_id"), team_id=_json_id(body, "team_id"),
                           by_id=g.user.id)
            db.session.commit()
        except AssignmentError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        latest = history(db.session, lead.id, current_locale())[0]
        latest["at"] = latest["at"].isoformat()
        return self.response(200, id=lead.id, owner_id=row.user_id, team_id=row.team_id, assignment=latest)


def _json_id(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AssignmentError(gettext("%(key)s: give a whole number (an id).", key=key))
    return value


def register(appbuilder) -> None:
    """Add the assignment screens (menu CRM) and APIs, and the helpers of the lead page's assignment panel."""
    category = {"category": "CRM", "category_label": _l("CRM")}
    appbuilder.add_view(AssignmentRuleView, "CrmAssignmentRule", label=_l("Assignment rules"), icon="fa-random",
                        **category)
    appbuilder.add_view(RepSettingView, "CrmRepSetting", label=_l("Rep settings"), icon="fa-users",
                        **category)
    appbuilder.add_view_no_menu(LeadAssignmentView)
    appbuilder.add_view_no_menu(ReassignView)
    appbuilder.add_api(LeadAssignmentHistoryApi)
    appbuilder.add_api(LeadReassignApi)
    current_app.context_processor(_panel_context)
