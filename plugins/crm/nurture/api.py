"""Sequence REST API: `/api/v1/crm/sequence/` (CRUD, checked; activate, pause, resume, archive; enroll leads;
step statistics), `/api/v1/crm/sequence_step/` (added, checked, moved and removed through the sequence
commands), `/api/v1/crm/enrollment/` (read; DELETE ends an enrollment) and `/api/v1/crm/nurture/statistics`.
A refusal is a 400 whose message says which field and why; nothing is saved."""
from __future__ import annotations

from flask import g, request
from flask_appbuilder import ModelRestApi
from flask_appbuilder.api import BaseApi, expose, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from marshmallow import ValidationError
from sqlalchemy import select
from werkzeug.exceptions import BadRequest

from bigledger_core.db import db

from ..views import _check_version, _NullableColumns
from .models import Enrollment, Sequence, SequenceStep
from .services import (
    NurtureError,
    activate,
    add_step,
    archive,
    check_sequence,
    check_step,
    exit_enrollment,
    move_step,
    pause,
    pause_enrollment,
    remove_step,
    resume,
    resume_enrollment,
    statistics,
    step_statistics,
    template_statistics,
)
from .views import FilterVisibleEnrollments, enroll_visible, with_rates

_CRUD = {"get_list": "get", "get": "get", "post": "post", "put": "put", "delete": "delete", "info": "info"}
MAX_LEADS = 10_000  # lead ids per enrollment request


class _Refusals:
    """A refused change (NurtureError, a stale version) answers 400 with its message; nothing is saved."""

    def _refused(self, call, *args):
        try:
            return call(*args)
        except NurtureError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        except BadRequest as exc:
            db.session.rollback()
            return self.response_400(message=exc.description)

    def post_headless(self):
        return self._refused(super().post_headless)

    def put_headless(self, pk):
        return self._refused(super().put_headless, pk)

    def delete_headless(self, pk):
        return self._refused(super().delete_headless, pk)


class CrmSequenceApi(_Refusals, _NullableColumns, ModelRestApi):
    """Nurture sequences. The status changes only through activate, pause, resume and archive."""

    resource_name = "crm/sequence"
    datamodel = SQLAInterface(Sequence)
    class_permission_name = "CrmSequence"
    method_permission_name = {**_CRUD, "activate": "put", "pause": "put", "resume": "put", "archive": "put",
                              "steps": "get"}
    openapi_spec_tag = "CRM nurturing"
    list_columns = ["id", "name", "status", "enroll_rule", "enroll_form_id", "exit_on_qualified", "exit_on_converted",
                    "quiet_start", "quiet_end", "activated_at", "version"]
    show_columns = [*list_columns, "description", "created_by_id", "created_at", "updated_at"]
    add_columns = ["name", "description", "enroll_rule", "enroll_form_id", "exit_on_qualified", "exit_on_converted",
                   "quiet_start", "quiet_end"]
    edit_columns = [*add_columns, "version"]
    search_columns = ["name", "status", "enroll_form_id"]
    order_columns = ["id", "name", "status", "activated_at"]

    def pre_add(self, item):
        item.status = "draft"
        item.created_by_id = getattr(g.user, "id", None)
        with db.session.no_autoflush:
            check_sequence(db.session, item)

    def pre_update(self, item):
        _check_version(item)
        with db.session.no_autoflush:
            check_sequence(db.session, item)

    def pre_delete(self, item):
        if db.session.scalar(select(Enrollment.id).where(Enrollment.sequence_id == item.id).limit(1)):
            raise NurtureError(gettext("“%(name)s” has enrollments: archive it instead, so that its statistics "
                                       "stay.", name=item.name))

    def _command(self, pk, command):
        sequence = db.session.get(Sequence, pk)
        if sequence is None:
            return self.response_404()
        try:
            command(db.session, sequence)
            db.session.commit()
        except NurtureError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=sequence.id, status=sequence.status)

    @expose("/<int:pk>/activate", methods=["POST"])
    @protect()
    @safe
    def activate(self, pk):
        """Start the sequence: it needs at least one step and every step must be complete.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the sequence's id and new status}
            400: {description: the step or field that keeps it from starting}
            404: {description: no such sequence}
        """
        return self._command(pk, activate)

    @expose("/<int:pk>/pause", methods=["POST"])
    @protect()
    @safe
    def pause(self, pk):
        """Pause a running sequence: none of its enrollments runs a step until it is resumed.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the sequence's id and new status}
            400: {description: the sequence is not running}
            404: {description: no such sequence}
        """
        return self._command(pk, pause)

    @expose("/<int:pk>/resume", methods=["POST"])
    @protect()
    @safe
    def resume(self, pk):
        """Resume a paused sequence; steps that fell due meanwhile run at the next run.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the sequence's id and new status}
            400: {description: the sequence is not paused}
            404: {description: no such sequence}
        """
        return self._command(pk, resume)

    @expose("/<int:pk>/archive", methods=["POST"])
    @protect()
    @safe
    def archive(self, pk):
        """Archive the sequence: its running enrollments end (reason `manual`); its statistics stay.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the sequence's id and new status}
            404: {description: no such sequence}
        """
        return self._command(pk, archive)

    @expose("/<int:pk>/statistics", methods=["GET"])
    @protect()
    @safe
    def steps(self, pk):
        """The sequence's figures and, per step (removed ones included, `active_step: false`), enrolled
        (reached the step), active (waiting at it), sent, delivered, opened, clicked, replied, unsubscribed,
        converted, with rates (`opened_rate` = opened / delivered…).
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: "`sequence`: the totals; `result`: one row per step"}
            404: {description: no such sequence}
        """
        totals = statistics(db.session, pk)
        if not totals:
            return self.response_404()
        return self.response(200, sequence=with_rates(totals[0]),
                             result=[with_rates(row) for row in step_statistics(db.session, pk)])


class CrmSequenceEnrollApi(BaseApi):
    """Manual enrollment of leads in a sequence."""

    resource_name = "crm/sequence"
    class_permission_name = "CrmSequenceEnrollment"
    method_permission_name = {"enroll": "post"}
    openapi_spec_tag = "CRM nurturing"

    @expose("/<int:pk>/enroll", methods=["POST"])
    @protect()
    @safe
    def enroll(self, pk):
        """Enroll leads: `{"lead_ids": [12, 15]}` (at most 10,000). Leads the caller may not see count as
        missing. A lead already in the sequence, without an e-mail address, suppressed, converted or
        disqualified is skipped; a lead enrolled here leaves any other sequence.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: "`enrolled` and `skipped` (already, no_email, suppressed, closed, missing)"}
            400: {description: a bad body, or an archived sequence}
            404: {description: no such sequence}
        """
        sequence = db.session.get(Sequence, pk)
        if sequence is None:
            return self.response_404()
        body = request.get_json(silent=True)
        ids = body.get("lead_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or len(ids) > MAX_LEADS or \
                not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            return self.response_400(message=gettext("lead_ids: give a list of 1 to %(max)s lead ids (whole numbers)",
                                                     max=MAX_LEADS))
        try:
            result = enroll_visible(db.session, sequence, ids, g.user, source="api")
            db.session.commit()
        except NurtureError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=sequence.id, **result)


class CrmSequenceStepApi(_Refusals, _NullableColumns, ModelRestApi):
    """The steps of sequences: added at the end and checked, edited (checked), moved, removed (deactivated,
    its statistics stay). The kind and the sequence of a step do not change."""

    resource_name = "crm/sequence_step"
    datamodel = SQLAInterface(SequenceStep)
    class_permission_name = "CrmSequence"
    method_permission_name = {**_CRUD, "delete": "put", "move": "put"}
    openapi_spec_tag = "CRM nurturing"
    list_columns = ["id", "sequence_id", "position", "kind", "name", "template_id", "days", "business_days",
                    "condition", "then_step_id", "else_step_id", "subject", "status", "owner_id",
                    "target_sequence_id", "active"]
    show_columns = [*list_columns, "created_at"]
    add_columns = ["sequence_id", "kind", "name", "template_id", "days", "business_days", "condition",
                   "then_step_id", "else_step_id", "subject", "status", "owner_id", "target_sequence_id"]
    edit_columns = add_columns[2:]
    search_columns = ["sequence_id", "kind", "active", "template_id"]
    order_columns = ["id", "position"]
    base_order = ("position", "asc")

    def post_headless(self):
        """Append a step to its sequence (`sequence_id`), checked by the sequence's rules."""
        if not request.is_json:
            return self.response_400(message=gettext("Send the step as JSON."))
        try:
            item = self.add_model_schema.load(request.json)
        except ValidationError as err:
            return self.response_422(message=err.messages)
        sequence = db.session.get(Sequence, item.sequence_id) if item.sequence_id else None
        if sequence is None:
            return self.response_400(message=gettext("sequence_id: no such sequence"))
        try:
            step = add_step(db.session, sequence, item)
            db.session.commit()
        except NurtureError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(201, id=step.id, result=self.show_model_schema.dump(step))

    def pre_update(self, item):
        if not item.active:
            raise NurtureError(gettext("this step was removed; add a new step instead"))
        with db.session.no_autoflush:
            check_step(db.session, item)

    def delete_headless(self, pk):
        """Remove (deactivate) a step: enrollments waiting at it go on with the next step."""
        step = self.datamodel.get(pk, self._base_filters)
        if step is None or not step.active:
            return self.response_404()
        remove_step(db.session, step)
        db.session.commit()
        return self.response(200, id=step.id, active=False)

    @expose("/<int:pk>/move", methods=["POST"])
    @protect()
    @safe
    def move(self, pk):
        """Move a step up (`{"offset": -1}`) or down (`{"offset": 1}`) among the active steps; refused when
        a branch would then jump backwards.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the positions of the sequence's active steps, in order}
            400: {description: a bad offset, or a branch that would jump backwards}
            404: {description: no such step (or a removed one)}
        """
        step = db.session.get(SequenceStep, pk)
        if step is None or not step.active:
            return self.response_404()
        offset = (request.get_json(silent=True) or {}).get("offset") if request.is_json else None
        if offset not in (-1, 1) or isinstance(offset, bool):
            return self.response_400(message=gettext("offset: -1 (up) or 1 (down)"))
        try:
            move_step(db.session, step, offset)
            db.session.commit()
        except NurtureError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        order = db.session.scalars(select(SequenceStep.id).where(
            SequenceStep.sequence_id == step.sequence_id, SequenceStep.active.is_(True))
            .order_by(SequenceStep.position)).all()
        return self.response(200, id=step.id, steps=order)


class CrmEnrollmentApi(ModelRestApi):
    """Enrollments of the leads the caller may see: read them, pause, resume, end (DELETE)."""

    resource_name = "crm/enrollment"
    datamodel = SQLAInterface(Enrollment)
    class_permission_name = "CrmSequenceEnrollment"
    include_route_methods = {"get_list", "get", "info", "delete", "pause", "resume"}
    method_permission_name = {"get_list": "get", "get": "get", "info": "info", "delete": "put", "pause": "put",
                              "resume": "put"}
    openapi_spec_tag = "CRM nurturing"
    list_columns = ["id", "sequence_id", "lead_id", "status", "step_id", "next_run_at", "source", "enrolled_by_id",
                    "enrolled_at", "finished_at", "exit_reason"]
    show_columns = [*list_columns, "last_error"]
    search_columns = ["sequence_id", "lead_id", "status", "exit_reason", "source", "enrolled_at"]
    order_columns = ["id", "enrolled_at", "next_run_at", "finished_at"]
    base_filters = [["lead_id", FilterVisibleEnrollments, lambda: None]]

    def _change(self, pk, command):
        enrollment = self.datamodel.get(pk, self._base_filters)
        if enrollment is None:
            return self.response_404()
        try:
            command(db.session, enrollment)
            db.session.commit()
        except NurtureError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=enrollment.id, status=enrollment.status, exit_reason=enrollment.exit_reason)

    def delete_headless(self, pk):
        """End the enrollment (exit reason `manual`): the lead gets no more steps. The record stays."""
        return self._change(pk, lambda session, e: exit_enrollment(session, e, "manual"))

    @expose("/<int:pk>/pause", methods=["POST"])
    @protect()
    @safe
    def pause(self, pk):
        """Pause one enrollment.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the enrollment's id and status}
            400: {description: the enrollment is not running}
            404: {description: no such enrollment (or not yours to see)}
        """
        return self._change(pk, pause_enrollment)

    @expose("/<int:pk>/resume", methods=["POST"])
    @protect()
    @safe
    def resume(self, pk):
        """Resume one paused enrollment.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the enrollment's id and status}
            400: {description: the enrollment is not paused}
            404: {description: no such enrollment (or not yours to see)}
        """
        return self._change(pk, resume_enrollment)


class CrmNurtureApi(BaseApi):
    """Nurturing statistics of every sequence and template."""

    resource_name = "crm/nurture"
    class_permission_name = "CrmSequence"
    method_permission_name = {"statistics": "get"}
    openapi_spec_tag = "CRM nurturing"

    @expose("/statistics", methods=["GET"])
    @protect()
    @safe
    def statistics(self):
        """Per sequence and per template: enrolled, active, sent, delivered, opened, clicked, replied,
        unsubscribed, converted, and rates (`delivered_rate` = delivered / sent; `opened_rate`,
        `clicked_rate`, `replied_rate`, `unsubscribed_rate` of delivered; `converted_rate` of enrolled).
        ---
        get:
          responses:
            200: {description: "`sequences` and `templates`, one row each"}
        """
        return self.response(200, sequences=[with_rates(row) for row in statistics(db.session)],
                             templates=[with_rates(row) for row in template_statistics(db.session)])


def register(appbuilder) -> None:
    """Add the nurturing REST API."""
    for api in (CrmSequenceApi, CrmSequenceEnrollApi, CrmSequenceStepApi, CrmEnrollmentApi, CrmNurtureApi):
        appbuilder.add_api(api)
