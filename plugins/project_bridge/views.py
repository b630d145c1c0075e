"""The project bridge's screens and REST API: the project rules, and the projects with their milestones (mark a
milestone reached, change a project's status). Every change goes through services.py, so the screen, the API and
the demo follow the same rules."""
from __future__ import annotations

import datetime as dt

from flask import flash, g, redirect, request
from flask_appbuilder import ModelRestApi, ModelView, action
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape
from wtforms import SelectField, TextAreaField
from wtforms.validators import ValidationError

from bigledger_core.db import db

from .models import Milestone, Project, ProjectRule
from .services import (
    ProjectError,
    check_rule,
    parse_milestones_text,
    pipeline_names,
    set_milestone_done,
    set_status,
    status_label,
)

LABELS = {
    "position": _l("Position"), "name": _l("Name"), "active": _l("Enabled"), "pipeline_id": _l("Pipeline"),
    "product_code": _l("Product code"), "milestones": _l("Milestones"), "milestones_text": _l("Milestones"),
    "created_at": _l("Created at"), "number": _l("Project number"), "status": _l("Status"), "start_on": _l("Start date"),
    "due_on": _l("Due"), "done_at": _l("Reached at (UTC)"), "progress": _l("Milestones reached"),
    "deal_link": _l("Deal"), "customer_link": _l("Customer"), "rule": _l("Rule"), "external_id": _l("Project module ID"),
    "updated_at": _l("Updated at"), "project": _l("Project"), "company_id": _l("Company ID"),
    "contact_id": _l("Contact ID"), "deal_id": _l("Deal ID"),
}
MILESTONES_HELP = _l("One milestone a line: name | days after the project's start, e.g. “上线 / Go-live | 30”.")
_READ_API = {"get_list": "get", "get": "get", "info": "info"}


def _pipelines() -> dict[int, str]:
    """The CRM's pipelines by id, read once per request (the rule list names each rule's pipeline)."""
    if "project_pipelines" not in g:
        g.project_pipelines = pipeline_names()
    return g.project_pipelines


def _pipeline_label(pipeline_id: int | None) -> str:
    if pipeline_id is None:
        return gettext("Any pipeline")
    return _pipelines().get(pipeline_id, f"#{pipeline_id}")


def _optional_int(value):
    return int(value) if value not in (None, "", "None") else None


def _check_milestones_text(form, field) -> None:
    try:
        parse_milestones_text(field.data)
    except ProjectError as exc:
        raise ValidationError(str(exc)) from None


class _PipelineField(SelectField):
    """The CRM's pipelines to choose from, read when the form is shown (empty: any pipeline)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, coerce=_optional_int, validate_choice=False, **kwargs)
        self.choices = [("", gettext("Any pipeline"))] + [(str(pid), name) for pid, name in _pipelines().items()]


# -- rules ------------------------------------------------------------------------------------------------------

class ProjectRuleView(ModelView):
    """Project rules (项目规则): which won deals get a delivery project, with which milestones."""

    route_base = "/project/rules"
    datamodel = SQLAInterface(ProjectRule)
    class_permission_name = "ProjectRule"
    list_title = show_title = _l("Project rules")
    add_title = _l("Add project rule")
    edit_title = _l("Edit project rule")
    list_columns = ["position", "name", "pipeline_id", "product_code", "milestones_text", "active"]
    add_columns = edit_columns = ["position", "name", "active", "pipeline_id", "product_code", "milestones_text"]
    show_columns = [*list_columns, "created_at"]
    search_columns = ["name", "product_code", "active", "pipeline_id"]
    base_order = ("position", "asc")
    label_columns = LABELS
    description_columns = {"milestones_text": MILESTONES_HELP,
                           "product_code": _l("A won deal with this product code among its line items matches "
                                              "(empty: any product)."),
                           "position": _l("Rules are tried from the lowest position; the first that matches wins.")}
    formatters_columns = {"pipeline_id": _pipeline_label, "product_code": lambda code: code or gettext("Any product"),
                          "milestones_text": lambda text: Markup("<br>").join(escape(line)
                                                                              for line in (text or "").splitlines())}
    add_form_extra_fields = edit_form_extra_fields = {
        "pipeline_id": _PipelineField(_l("Pipeline")),
        "milestones_text": TextAreaField(_l("Milestones"), validators=[_check_milestones_text],
                                         description=MILESTONES_HELP, render_kw={"rows": 6}),
    }

    def pre_add(self, item):
        try:
            check_rule(item)
        except ProjectError:
            db.session.rollback()
            raise

    pre_update = pre_add


class _CleanErrors:
    """A ProjectError in pre_add/pre_update answers 400 with its message (translated, naming the field)."""

    def post_headless(self):
        try:
            return super().post_headless()
        except ProjectError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))

    def put_headless(self, pk):
        try:
            return super().put_headless(pk)
        except ProjectError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))


class ProjectRuleApi(_CleanErrors, ModelRestApi):
    resource_name = "project/rule"
    datamodel = SQLAInterface(ProjectRule)
    class_permission_name = "ProjectRule"
    method_permission_name = {**_READ_API, "post": "post", "put": "put", "delete": "delete"}
    openapi_spec_tag = "Projects"
    list_columns = show_columns = ["id", "position", "name", "active", "pipeline_id", "product_code", "milestones",
                                   "created_at"]
    add_columns = edit_columns = ["position", "name", "active", "pipeline_id", "product_code", "milestones"]
    search_columns = ["name", "active", "pipeline_id", "product_code"]
    order_columns = ["position", "id", "name"]
    base_order = ("position", "asc")

    def pre_add(self, item):
        check_rule(item)

    pre_update = pre_add


# -- projects and milestones -------------------------------------------------------------------------------------

class MilestoneView(ModelView):
    """A project's milestones: mark them reached (or not)."""

    route_base = "/project/milestones"
    datamodel = SQLAInterface(Milestone)
    class_permission_name = "ProjectMilestone"
    base_permissions = ["can_list", "can_show", "can_reach"]
    method_permission_name = {"list": "list", "show": "show", "reach": "reach", "unreach": "reach"}
    list_title = show_title = _l("Milestones")
    list_columns = ["position", "name", "due_on", "done_at"]
    show_columns = ["project", "position", "name", "due_on", "done_at"]
    search_columns = ["project", "name", "due_on", "done_at"]
    base_order = ("position", "asc")
    label_columns = LABELS
    formatters_columns = {"done_at": lambda at: at.strftime("%Y-%m-%d %H:%M") if at else "—"}

    def _mark(self, items, done: bool):
        for milestone in items if isinstance(items, list) else [items]:
            try:
                set_milestone_done(db.session, milestone, done)
                db.session.commit()
                flash(gettext("Milestone “%(name)s” reached.", name=milestone.name) if done else
                      gettext("Milestone “%(name)s” is not reached any more.", name=milestone.name), "success")
            except ProjectError as exc:
                db.session.rollback()
                flash(str(exc), "danger")
        return redirect(request.referrer or self.get_redirect())

    @action("reach", _l("Mark reached"), _l("Mark the selected milestones reached?"), "fa-flag-checkered")
    def reach(self, items):
        return self._mark(items, True)

    @action("unreach", _l("Mark not reached"), _l("Mark the selected milestones not reached?"), "fa-undo")
    def unreach(self, items):
        return self._mark(items, False)


def _deal_link(project: Project) -> Markup:
    if project.deal_id is None:
        return Markup("—")
    return Markup('<a href="/dealview/show/{id}">{name}</a>').format(id=project.deal_id,
                                                                    name=project.deal_name or f"#{project.deal_id}")


def _customer_link(project: Project) -> Markup:
    if project.company_id is not None:
        return Markup('<a href="/crm/customer/company/{id}">{label}</a>').format(
            id=project.company_id, label=project.customer_name or gettext("Company %(id)s", id=project.company_id))
    if project.contact_id is not None:
        return Markup('<a href="/crm/customer/contact/{id}">{label}</a>').format(
            id=project.contact_id, label=project.customer_name or gettext("Contact %(id)s", id=project.contact_id))
    return Markup("—")


Project.deal_link = property(_deal_link)
Project.customer_link = property(_customer_link)


class ProjectView(ModelView):
    """Delivery projects (交付项目) of won deals: follow them, change their status."""

    route_base = "/project/projects"
    datamodel = SQLAInterface(Project)
    class_permission_name = "ProjectProject"
    base_permissions = ["can_list", "can_show", "can_status"]
    method_permission_name = {"list": "list", "show": "show", "start": "status", "hold": "status",
                              "finish": "status", "cancel": "status"}
    list_title = show_title = _l("Delivery projects")
    list_columns = ["number", "name", "status", "customer_link", "deal_link", "start_on", "due_on", "progress"]
    show_columns = ["number", "name", "status", "customer_link", "deal_link", "rule", "start_on", "due_on",
                    "progress", "external_id", "created_at", "updated_at"]
    search_columns = ["number", "name", "status", "company_id", "contact_id", "deal_id", "start_on", "due_on"]
    order_columns = ["number", "name", "status", "start_on", "due_on"]
    add_columns = edit_columns = ["name"]  # not offered (no can_add, can_edit): changes go through the actions
    base_order = ("id", "desc")
    label_columns = LABELS
    formatters_columns = {"status": status_label}
    related_views = [MilestoneView]

    def _status(self, items, status: str):
        for project in items if isinstance(items, list) else [items]:
            try:
                set_status(db.session, project, status)
                db.session.commit()
                flash(gettext("Project %(number)s is now %(status)s.", number=project.number,
                              status=status_label(status)), "success")
            except ProjectError as exc:
                db.session.rollback()
                flash(str(exc), "danger")
        return redirect(request.referrer or self.get_redirect())

    @action("start", _l("Start"), _l("Start the selected projects?"), "fa-play")
    def start(self, items):
        return self._status(items, "active")

    @action("hold", _l("Put on hold"), _l("Put the selected projects on hold?"), "fa-pause")
    def hold(self, items):
        return self._status(items, "on_hold")

    @action("finish", _l("Mark done"), _l("Mark the selected projects done?"), "fa-check")
    def finish(self, items):
        return self._status(items, "done")

    @action("cancel", _l("Cancel project"), _l("Cancel the selected projects?"), "fa-ban")
    def cancel(self, items):
        return self._status(items, "cancelled")


_PROJECT_COLUMNS = ["id", "number", "name", "status", "deal_id", "deal_name", "company_id", "contact_id",
                    "customer_name", "start_on", "due_on", "rule_id", "external_id", "created_at", "updated_at"]


class ProjectApi(ModelRestApi):
    resource_name = "project/project"
    datamodel = SQLAInterface(Project)
    class_permission_name = "ProjectProject"
    method_permission_name = {**_READ_API, "status": "put"}
    include_route_methods = {"get", "get_list", "info", "status"}
    openapi_spec_tag = "Projects"
    list_columns = _PROJECT_COLUMNS
    show_columns = [*_PROJECT_COLUMNS, "milestones.id", "milestones.position", "milestones.name", "milestones.due_on",
                    "milestones.done_at"]
    search_columns = ["number", "status", "deal_id", "company_id", "contact_id", "due_on"]
    order_columns = ["id", "number", "status", "start_on", "due_on", "created_at"]
    add_columns = edit_columns = ["name"]  # no POST or PUT: a project changes through /status

    @expose("/<int:pk>/status", methods=["POST"])
    @protect()
    @safe
    def status(self, pk):
        """Change a project's status.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    status: {type: string, enum: [planned, active, on_hold, done, cancelled]}
          responses:
            200: {description: the project's number and status}
            400: {description: "message: what is wrong, naming the field"}
            404: {description: no such project}
        """
        project = db.session.get(Project, pk)
        if project is None:
            return self.response_404()
        body = request.get_json(silent=True)
        status = body.get("status") if isinstance(body, dict) else None
        try:
            set_status(db.session, project, str(status or ""))
            db.session.commit()
        except ProjectError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=project.id, number=project.number, status=project.status)


class MilestoneApi(ModelRestApi):
    resource_name = "project/milestone"
    datamodel = SQLAInterface(Milestone)
    class_permission_name = "ProjectMilestone"
    method_permission_name = {**_READ_API, "done": "put"}
    include_route_methods = {"get", "get_list", "info", "done"}
    openapi_spec_tag = "Projects"
    list_columns = show_columns = ["id", "project_id", "position", "name", "due_on", "done_at"]
    search_columns = ["project_id", "name", "due_on", "done_at"]
    order_columns = ["position", "id", "due_on"]
    base_order = ("position", "asc")

    @expose("/<int:pk>/done", methods=["POST"])
    @protect()
    @safe
    def done(self, pk):
        """Mark a milestone reached (now, or at `done_at`), or not reached with `{"done": false}`.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    done: {type: boolean, default: true}
                    done_at: {type: string, format: date-time}
          responses:
            200: {description: "the milestone's id, done_at, and the project's status"}
            400: {description: "message: what is wrong, naming the field"}
            404: {description: no such milestone}
        """
        milestone = db.session.get(Milestone, pk)
        if milestone is None:
            return self.response_404()
        body = request.get_json(silent=True) or {}
        if not isinstance(body, dict):
            return self.response_400(message=gettext("Send a JSON object such as {\"done\": true}."))
        try:
            done = body.get("done", True)
            if not isinstance(done, bool):
                raise ProjectError(gettext("done: give true or false, not “%(value)s”.", value=str(done)[:20]))
            set_milestone_done(db.session, milestone, done, _when(body.get("done_at")))
            db.session.commit()
        except ProjectError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=milestone.id, done_at=milestone.done_at.isoformat() if milestone.done_at else None,
                             project_status=milestone.project.status)


def _when(value) -> dt.datetime | None:
    if value in (None, ""):
        return None
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ProjectError(gettext("done_at: give a date and time such as 2026-03-02T08:30:00+08:00, not "
                                   "“%(value)s”.", value=str(value)[:40])) from None


def register(appbuilder) -> None:
    """Add the Projects menu (projects, rules) and its REST API."""
    category = {"category": "Projects", "category_label": _l("Projects"), "category_icon": "fa-tasks"}
    appbuilder.add_view_no_menu(MilestoneView)
    appbuilder.add_view(ProjectView, "ProjectProject", label=_l("Delivery projects"), icon="fa-tasks", **category)
    appbuilder.add_view(ProjectRuleView, "ProjectRule", label=_l("Project rules"), icon="fa-sitemap", **category)
    for api in (ProjectRuleApi, ProjectApi, MilestoneApi):
        appbuilder.add_api(api)
