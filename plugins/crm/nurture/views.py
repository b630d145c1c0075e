"""Sequence screens: the sequences (each with its steps in order, their details and statistics, and the
buttons to add, edit, move and remove a step), activate / pause / resume / archive, the enrollments list
(filters; pause, resume, exit), manual enrollment (from a sequence, the enrollments list or the leads list)
and the statistics per sequence and per template. Every change goes through `services`."""
from __future__ import annotations

import re

from flask import abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, ModelView, expose, has_access
from flask_appbuilder.actions import action
from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
from flask_appbuilder.forms import DynamicForm
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.filters import (
    FilterEqual,
    FilterRelationOneToManyEqual,
    SQLAFilterConverter,
)
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.sqla.models import User
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from sqlalchemy import inspect, or_, select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.exceptions import BadRequest
from wtforms import BooleanField, IntegerField, SelectField, StringField
from wtforms.validators import Length, NumberRange, Optional
from wtforms.widgets import HiddenInput

from bigledger_core.db import db
from bigledger_core.security import visibility_clause

from ..leads.models import Lead
from ..views import LABELS, LEAD_STATUS_LABELS, _check_version
from .models import EmailTemplate, Enrollment, Sequence, SequenceStep
from .services import (
    NurtureError,
    activate,
    add_step,
    archive,
    check_sequence,
    check_step,
    enroll,
    exit_enrollment,
    lead_statuses,
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

SEQUENCE_STATUS_LABELS = {"draft": _l("Draft"), "active": _l("Running"), "paused": _l("Paused"),
                          "archived": _l("Archived")}
STEP_KIND_LABELS = {"email": _l("Send an e-mail"), "task": _l("Create a task"), "wait": _l("Wait"),
                    "branch": _l("Branch on a condition"), "set_status": _l("Change the lead's status"),
                    "set_owner": _l("Change the lead's owner"), "enroll": _l("Enroll in another sequence"),
                    "end": _l("End the sequence")}
ENROLLMENT_STATUS_LABELS = {"active": _l("Running"), "paused": _l("Paused"), "completed": _l("Completed"),
                            "exited": _l("Exited")}
EXIT_REASON_LABELS = {"replied": _l("Replied"), "converted": _l("Converted"), "qualified": _l("Qualified"),
                      "disqualified": _l("Disqualified"), "unsubscribed": _l("Unsubscribed"),
                      "bounced": _l("Bounced"), "enrolled_elsewhere": _l("Enrolled in another sequence"),
                      "manual": _l("Ended by hand"), "erased": _l("Personal data erased"),
                      "no_email": _l("No e-mail address")}
ENROLLMENT_SOURCE_LABELS = {"manual": _l("By hand"), "form": _l("Web form"), "rule": _l("Enrollment rule"),
                            "sequence": _l("Another sequence"), "api": _l("API")}
# the figures of the statistics, in the order shown, and the rates computed from them
FIGURES = {"enrolled": _l("Enrolled"), "active": _l("Running"), "sent": _l("Sent"), "delivered": _l("Delivered"),
           "opened": _l("Opened"), "clicked": _l("Clicked"), "replied": _l("Replied"),
           "unsubscribed": _l("Unsubscribed"), "converted": _l("Converted")}
RATES = {"delivered": "sent", "opened": "delivered", "clicked": "delivered", "replied": "delivered",
         "unsubscribed": "delivered", "converted": "enrolled"}
# what each kind of step is made of (the other fields of a step stay empty)
KIND_FIELDS = {"email": ("template_id",), "task": ("subject", "days"), "wait": ("days", "business_days"),
               "branch": ("condition", "then_step_id", "else_step_id"), "set_status": ("status",),
               "set_owner": ("owner_id",), "enroll": ("target_sequence_id",), "end": ()}
STEP_FIELDS = ("template_id", "subject", "days", "business_days", "condition", "then_step_id", "else_step_id",
               "status", "owner_id", "target_sequence_id")
# field → the kinds of step that show it (the step form hides the others)
FIELD_KINDS = {field: " ".join(kind for kind, fields in KIND_FIELDS.items() if field in fields)
               for field in STEP_FIELDS}

SEQUENCE_LABELS = {
    **LABELS, "name": _l("Name"), "description": _l("Description"), "status": _l("Status"),
    "enroll_rule": _l("Enrollment rule"), "enroll_form": _l("Enroll leads from the web form"),
    "exit_on_qualified": _l("Exit when the lead is qualified"),
    "exit_on_converted": _l("Exit when the lead is converted"), "quiet_start": _l("Quiet hours from"),
    "quiet_end": _l("Quiet hours until"), "activated_at": _l("Started (UTC)"),
    "created_at": _l("Created (UTC)"), "updated_at": _l("Updated (UTC)"), "version": _l("Version"),
}
ENROLLMENT_LABELS = {
    "lead": _l("Lead"), "lead_id": _l("Lead"), "sequence": _l("Sequence"), "status": _l("Status"),
    "step": _l("Next step"), "next_run_at": _l("Next step due (UTC)"), "source": _l("Enrolled by way of"),
    "enrolled_by": _l("Enrolled by"), "enrolled_at": _l("Enrolled (UTC)"), "finished_at": _l("Ended (UTC)"),
    "exit_reason": _l("Exit reason"), "last_error": _l("Last error"),
}


# -- helpers shared by the screens, the API and the CLI --------------------------------------------------

def rate(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to divide by."""
    return part / whole if whole else None


def with_rates(row: dict) -> dict:
    """A statistics row with `<figure>_rate` for every rate (opened / delivered, converted / enrolled…)."""
    return {**row, **{f"{figure}_rate": rate(row.get(figure, 0), row.get(base, 0))
                      for figure, base in RATES.items()}}


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def parse_ids(text: str) -> list[int]:
    """Lead ids typed by a person: separated by commas, spaces or new lines. Raises NurtureError naming the
    first thing that is not an id."""
    ids = []
    for token in re.split(r"[\s,，;；、]+", text or ""):
        if not token:
            continue
        if not token.isdigit():
            raise NurtureError(gettext("lead ids: “%(value)s” is not a lead id (a whole number)", value=token))
        ids.append(int(token))
    return list(dict.fromkeys(ids))


def visible_lead_ids(session, user, lead_ids) -> list[int]:
    """Those of `lead_ids` that exist and `user` may see (the others are reported as not found)."""
    ids = sorted({int(i) for i in lead_ids})
    if not ids:
        return []
    query = select(Lead.id).where(Lead.id.in_(ids))
    clause = visibility_clause(Lead, user, session) if user is not None else None
    return list(session.scalars(query.where(clause) if clause is not None else query))


def enroll_visible(session, sequence: Sequence, lead_ids, user, *, source: str) -> dict:
    """Enroll the leads of `lead_ids` that `user` may see (None: a command line, which sees every lead);
    those they may not see count as missing, like ids that name no lead."""
    wanted = list(dict.fromkeys(int(i) for i in lead_ids))
    visible = visible_lead_ids(session, user, wanted) if user is not None else wanted
    result = enroll(session, sequence, visible, source=source, by_id=getattr(user, "id", None))
    result["skipped"]["missing"] += len(wanted) - len(visible)
    return result


def enroll_summary(result: dict, sequence_name: str) -> tuple[str, str | None]:
    """The result of an enrollment in words: what was enrolled, and (if any) why some were not."""
    done = gettext("Enrolled in “%(sequence)s”: %(count)s.", sequence=sequence_name, count=result["enrolled"])
    skipped = result["skipped"]
    reasons = {"already": lambda n: gettext("already in the sequence: %(count)s", count=n),
               "no_email": lambda n: gettext("no e-mail address: %(count)s", count=n),
               "suppressed": lambda n: gettext("on the suppression list: %(count)s", count=n),
               "closed": lambda n: gettext("converted or disqualified: %(count)s", count=n),
               "missing": lambda n: gettext("not found or not yours to see: %(count)s", count=n)}
    parts = [text(skipped[key]) for key, text in reasons.items() if skipped.get(key)]
    return done, gettext("Not enrolled — %(reasons)s.", reasons="; ".join(parts)) if parts else None


def step_summary(step: SequenceStep, numbers: dict[int, int]) -> str:
    """What a step does, in a sentence (`numbers`: step id → its number in the sequence as shown)."""

    def target(step_id):
        if step_id is None:
            return gettext("the next step")
        number = numbers.get(step_id)
        return gettext("step %(number)s", number=number) if number else gettext("a removed step")

    if step.kind == "email":
        return gettext("Send “%(template)s”", template=step.template.name if step.template else "?")
    if step.kind == "wait":
        return (gettext("Wait %(days)s business days", days=step.days) if step.business_days
                else gettext("Wait %(days)s days", days=step.days))
    if step.kind == "task":
        return gettext("Task “%(subject)s”, due in %(days)s days", subject=step.subject or "", days=step.days or 0)
    if step.kind == "branch":
        return gettext("If %(condition)s go to %(then)s, else to %(else)s", condition=step.condition or "",
                       then=target(step.then_step_id), **{"else": target(step.else_step_id)})
    if step.kind == "set_status":
        return gettext("Status becomes “%(status)s”", status=LEAD_STATUS_LABELS.get(step.status, step.status))
    if step.kind == "set_owner":
        return gettext("Owner becomes %(owner)s", owner=_user_name(step.owner) if step.owner else "?")
    if step.kind == "enroll":
        return gettext("Enroll in “%(sequence)s”",
                       sequence=step.target_sequence.name if step.target_sequence else "?")
    if step.kind == "end":
        return gettext("The enrollment is completed here")
    return step.kind


def _user_name(user: User) -> str:
    return f"{user.first_name or ''} {user.last_name or ''}".strip() or user.username


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _sequence_or_404(pk) -> Sequence:
    sequence = db.session.get(Sequence, _int(pk)) if _int(pk) is not None else None
    if sequence is None:
        abort(404)
    return sequence


def _when(value) -> str:
    """A time in lists and pages (stored and shown in UTC, as the column headers say)."""
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def _yes_no(value) -> str:
    return gettext("Yes") if value else gettext("No")


def _status_cell(status: str) -> Markup:
    css = {"active": "success", "paused": "warning", "archived": "default", "draft": "info"}.get(status, "default")
    return Markup('<span class="label label-{} bl-seq-status" data-status="{}">{}</span>').format(
        css, status, SEQUENCE_STATUS_LABELS.get(status, status))


# -- sequences -------------------------------------------------------------------------------------------

def _field_of(draft: Sequence) -> str:
    """The form field a check_sequence refusal is about: the first whose clearing makes the check pass."""
    for field, cleared in (("enroll_rule", ("enroll_rule",)), ("quiet_start", ("quiet_start", "quiet_end"))):
        trial = Sequence(**{name: getattr(draft, name) for name in ("name", "status", "enroll_rule", "quiet_start",
                                                                     "quiet_end")})
        for name in cleared:
            setattr(trial, name, None)
        try:
            check_sequence(db.session, trial)
        except NurtureError:
            continue
        return field
    return "name"


def _checked_form(form_class):
    """The sequence form, refused (with the reason under the field) when check_sequence refuses it."""

    class CheckedSequenceForm(form_class):
        def validate(self, extra_validators=None):
            if not super().validate(extra_validators):
                return False
            draft = Sequence(id=getattr(self, "_id", None), status="draft")
            self.populate_obj(draft)
            draft.status = draft.status or "draft"
            with db.session.no_autoflush:
                try:
                    check_sequence(db.session, draft)
                except NurtureError as exc:
                    field = self[_field_of(draft)]
                    field.errors = [*field.errors, str(exc)]
                    return False
            return True

    CheckedSequenceForm.__name__ = form_class.__name__
    return CheckedSequenceForm


class SequenceView(ModelView):
    """Nurture sequences: the list, the form (name, enrollment, exits, quiet hours), the page with the
    steps, and the actions activate, pause, resume and archive."""

    datamodel = SQLAInterface(Sequence)
    class_permission_name = "CrmSequence"
    method_permission_name = {"activate_sequences": "edit", "pause_sequences": "edit",
                              "resume_sequences": "edit", "archive_sequences": "edit"}
    base_permissions = ["can_list", "can_show", "can_add", "can_edit", "can_delete"]
    list_title = _l("Nurture sequences")
    show_title = _l("Nurture sequence")
    add_title = _l("Add nurture sequence")
    edit_title = _l("Edit nurture sequence")
    list_columns = ["name", "status", "enroll_rule", "activated_at", "updated_at"]
    add_columns = ["name", "description", "enroll_rule", "enroll_form", "exit_on_qualified", "exit_on_converted",
                   "quiet_start", "quiet_end"]
    edit_columns = [*add_columns, "version"]
    show_columns = ["name", "description", "status", "enroll_rule", "enroll_form", "exit_on_qualified",
                    "exit_on_converted", "quiet_start", "quiet_end", "activated_at", "created_at", "updated_at"]
    search_columns = ["name", "status", "enroll_rule", "created_at"]
    order_columns = ["name", "status", "activated_at", "updated_at"]
    base_order = ("id", "desc")
    label_columns = SEQUENCE_LABELS
    formatters_columns = {"status": _status_cell, "enroll_rule": lambda v: Markup("<code>{}</code>").format(v)
                          if v else "", "enroll_form": lambda v: v or "", "exit_on_qualified": _yes_no,
                          "exit_on_converted": _yes_no, "activated_at": _when, "created_at": _when,
                          "updated_at": _when}
    _hours = {"widget": BS3TextFieldWidget(), "validators": [Optional(), Length(max=5)]}
    add_form_extra_fields = {
        "exit_on_qualified": BooleanField(SEQUENCE_LABELS["exit_on_qualified"], default=True,
                                          validators=[Optional()]),
        "exit_on_converted": BooleanField(SEQUENCE_LABELS["exit_on_converted"], default=True,
                                          validators=[Optional()]),
        "quiet_start": StringField(SEQUENCE_LABELS["quiet_start"], render_kw={"placeholder": "21:00"}, **_hours),
        "quiet_end": StringField(SEQUENCE_LABELS["quiet_end"], render_kw={"placeholder": "08:00"}, **_hours),
    }
    edit_form_extra_fields = {**add_form_extra_fields,
                              "version": IntegerField(widget=HiddenInput(), validators=[Optional()])}
    description_columns = {
        "enroll_rule": _l("Leads that match are enrolled automatically (once), in the rule language of lead "
                          "scoring, e.g. 行业 = '科技' 且 邮件开启 = 0. Empty: no automatic enrollment."),
        "enroll_form": _l("Leads that send this web form after the sequence starts are enrolled."),
        "exit_on_qualified": _l("A reply, an unsubscribe or a bounce always ends the enrollment."),
        "quiet_start": _l("No e-mail goes out between these times in the recipient's own time zone (HH:MM, e.g. "
                          "21:00 to 08:00); it waits until the quiet hours end. Empty: the default quiet hours."),
    }
    show_template = "crm/nurture_seq_show.html"

    def _init_forms(self):
        super()._init_forms()
        self.add_form, self.edit_form = _checked_form(self.add_form), _checked_form(self.edit_form)

    def pre_add(self, item):
        item.status = "draft"
        item.created_by_id = getattr(g.user, "id", None)
        self._check(item)

    def pre_update(self, item):
        if item.version is None:  # a form without the version: nothing to compare
            item.version = inspect(item).attrs.version.history.deleted[0]
        try:
            _check_version(item)
        except BadRequest as exc:
            db.session.rollback()
            raise ValueError(exc.description) from None
        self._check(item)

    def pre_delete(self, item):
        if db.session.scalar(select(Enrollment.id).where(Enrollment.sequence_id == item.id).limit(1)):
            raise ValueError(gettext("“%(name)s” has enrollments: archive it instead, so that its statistics stay.",
                                     name=item.name))

    def _check(self, item):
        try:
            with db.session.no_autoflush:
                check_sequence(db.session, item)
        except NurtureError as exc:
            db.session.rollback()
            raise ValueError(str(exc)) from None

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        g.crm_sequence_page = sequence_page(_sequence_or_404(pk))
        return super().show(pk)

    def render_template(self, template, **kwargs):
        return super().render_template(template, **{**g.get("crm_sequence_page", {}), **kwargs})

    # the actions: on several sequences from the list, on one from its page's buttons
    def _run(self, items, command, done):
        items = items if isinstance(items, list) else [items]
        changed = 0
        for item in items:
            try:
                command(db.session, item)
                db.session.commit()
                changed += 1
            except NurtureError as exc:
                db.session.rollback()
                flash(f"{item.name}: {exc}", "danger")
        if changed:
            flash(done(changed), "success")
        if len(items) == 1:
            return redirect(url_for("SequenceView.show", pk=items[0].id))
        return redirect(url_for("SequenceView.list"))

    @action("activate_sequences", _l("Activate"), "", "fa-play", single=False)
    def activate_sequences(self, items):
        return self._run(items, activate, lambda n: gettext("Sequences started: %(count)s.", count=n))

    @action("pause_sequences", _l("Pause"), "", "fa-pause", single=False)
    def pause_sequences(self, items):
        return self._run(items, pause, lambda n: gettext("Sequences paused: %(count)s.", count=n))

    @action("resume_sequences", _l("Resume"), "", "fa-play-circle", single=False)
    def resume_sequences(self, items):
        return self._run(items, resume, lambda n: gettext("Sequences resumed: %(count)s.", count=n))

    @action("archive_sequences", _l("Archive"),
            _l("Archive? Running enrollments end; the statistics stay."), "fa-archive", single=False)
    def archive_sequences(self, items):
        return self._run(items, archive, lambda n: gettext("Sequences archived: %(count)s.", count=n))


def sequence_page(sequence: Sequence) -> dict:
    """What a sequence's page shows besides its fields: steps with their statistics, totals, buttons."""
    steps = db.session.scalars(
        select(SequenceStep).where(SequenceStep.sequence_id == sequence.id)
        .options(selectinload(SequenceStep.template), selectinload(SequenceStep.owner),
                 selectinload(SequenceStep.target_sequence))
        .order_by(SequenceStep.position, SequenceStep.id)).all()
    active = [step for step in steps if step.active]
    numbers = {step.id: number for number, step in enumerate(active, 1)}
    stats = {row["id"]: with_rates(row) for row in step_statistics(db.session, sequence.id)}
    removed = [step for step in steps if not step.active and stats.get(step.id, {}).get("enrolled")]
    totals = statistics(db.session, sequence.id)
    return {"sequence": sequence, "steps": active, "removed_steps": removed, "numbers": numbers,
            "step_stats": stats, "totals": with_rates(totals[0]) if totals else {},
            "step_summary": lambda step: step_summary(step, numbers), "kind_labels": STEP_KIND_LABELS,
            "sequence_status_label": SEQUENCE_STATUS_LABELS.get(sequence.status, sequence.status),
            "figures": FIGURES, "percent": percent}


# -- steps -----------------------------------------------------------------------------------------------

def _optional_int(value):
    return None if value in (None, "", "None") else int(value)


class StepForm(DynamicForm):
    """A step: its kind, and the fields that kind needs (the others are ignored)."""

    kind = SelectField(_l("Kind of step"), choices=list(STEP_KIND_LABELS.items()))
    name = StringField(_l("Name (optional)"), validators=[Optional(), Length(max=200)])
    template_id = SelectField(_l("E-mail template"), coerce=_optional_int, validators=[Optional()])
    days = IntegerField(_l("Days"), validators=[Optional(), NumberRange(min=0)],
                        description=_l("Wait: how long. Task: due this many days after it is created."))
    business_days = BooleanField(_l("Count business days only (Monday to Friday, holidays excluded)"))
    condition = StringField(_l("Condition"), validators=[Optional(), Length(max=1000)],
                            description=_l("In the rule language of lead scoring, e.g. 邮件开启 > 0 or "
                                           "email opens > 0 AND 行业 = '科技'."))
    then_step_id = SelectField(_l("When it holds, go to"), coerce=_optional_int, validators=[Optional()])
    else_step_id = SelectField(_l("Otherwise, go to"), coerce=_optional_int, validators=[Optional()])
    subject = StringField(_l("Task subject"), validators=[Optional(), Length(max=300)])
    status = SelectField(_l("New status of the lead"), validators=[Optional()])
    owner_id = SelectField(_l("New owner of the lead"), coerce=_optional_int, validators=[Optional()])
    target_sequence_id = SelectField(_l("Sequence to enroll in"), coerce=_optional_int, validators=[Optional()])


def _step_choices(form: StepForm, sequence: Sequence, step: SequenceStep | None) -> None:
    """Fill the form's lists: templates, later steps, statuses, users, other sequences."""
    templates = db.session.execute(select(EmailTemplate.id, EmailTemplate.name).where(
        or_(EmailTemplate.active.is_(True), EmailTemplate.id == (step.template_id if step else None)))
        .order_by(EmailTemplate.name)).all()
    form.template_id.choices = [("", "—"), *((t.id, t.name) for t in templates)]
    others = db.session.scalars(select(SequenceStep).where(
        SequenceStep.sequence_id == sequence.id, SequenceStep.active.is_(True))
        .options(selectinload(SequenceStep.template)).order_by(SequenceStep.position)).all()
    numbered = [(s.id, f"{n}. {s.name or STEP_KIND_LABELS.get(s.kind, s.kind)}") for n, s in enumerate(others, 1)
                if step is None or s.id != step.id]
    form.then_step_id.choices = form.else_step_id.choices = [("", gettext("the next step")), *numbered]
    form.status.choices = [("", "—"), *((s, LEAD_STATUS_LABELS.get(s, s)) for s in lead_statuses())]
    users = db.session.scalars(select(User).where(User.active.is_(True))
                               .order_by(User.first_name, User.last_name, User.id).limit(1000)).all()
    form.owner_id.choices = [("", "—"), *((u.id, _user_name(u)) for u in users)]
    sequences = db.session.execute(select(Sequence.id, Sequence.name).where(
        Sequence.id != sequence.id, Sequence.status != "archived").order_by(Sequence.name)).all()
    form.target_sequence_id.choices = [("", "—"), *((s.id, s.name) for s in sequences)]


def _fill_step(step: SequenceStep, form: StepForm) -> None:
    """Copy the form onto the step: the fields of its kind; the others are emptied."""
    wanted = KIND_FIELDS.get(step.kind, ())
    step.name = (form.name.data or "").strip() or None
    for name in STEP_FIELDS:
        value = form[name].data if name in wanted else None
        if name == "business_days":
            value = bool(value)
        elif isinstance(value, str):
            value = value.strip() or None
        setattr(step, name, value)


class StepView(BaseView):
    """A sequence's steps: add (the form's fields follow the kind), edit, move up or down, remove."""

    route_base = "/crm/sequence"
    class_permission_name = "CrmSequence"
    method_permission_name = {"add": "edit", "edit": "edit", "move": "edit", "remove": "edit"}
    base_permissions = ["can_edit"]

    def _form_page(self, form, sequence, step, error=None):
        return self.render_template("crm/nurture_seq_step.html", form=form, sequence=sequence, step=step,
                                    error=error, field_kinds=FIELD_KINDS, kind_labels=STEP_KIND_LABELS)

    @expose("/<int:pk>/step/add", methods=["GET", "POST"])
    @has_access
    def add(self, pk):
        sequence = _sequence_or_404(pk)
        form = StepForm(request.form if request.method == "POST" else None)
        if request.method == "GET" and request.args.get("kind") in STEP_KIND_LABELS:
            form.kind.data = request.args["kind"]
        _step_choices(form, sequence, None)
        if request.method == "POST" and form.validate():
            step = SequenceStep(kind=form.kind.data)
            _fill_step(step, form)
            try:
                add_step(db.session, sequence, step)
                db.session.commit()
            except NurtureError as exc:
                db.session.rollback()
                return self._form_page(form, sequence, None, str(exc))
            flash(gettext("Step added: %(step)s", step=STEP_KIND_LABELS[step.kind]), "success")
            return redirect(url_for("SequenceView.show", pk=sequence.id) + "#bl-seq-steps")
        return self._form_page(form, sequence, None)

    def _step(self, step_id) -> SequenceStep:
        step = db.session.get(SequenceStep, step_id)
        if step is None or not step.active:
            abort(404)
        return step

    @expose("/step/<int:step_id>/edit", methods=["GET", "POST"])
    @has_access
    def edit(self, step_id):
        step = self._step(step_id)
        sequence = step.sequence
        form = StepForm(request.form) if request.method == "POST" else StepForm(obj=step)
        form.kind.data = step.kind  # the kind of a step does not change: remove it and add another
        _step_choices(form, sequence, step)
        if request.method == "POST" and form.validate():
            _fill_step(step, form)
            try:
                with db.session.no_autoflush:
                    check_step(db.session, step)
                db.session.commit()
            except NurtureError as exc:
                db.session.rollback()
                return self._form_page(form, sequence, db.session.get(SequenceStep, step_id), str(exc))
            flash(gettext("Step saved."), "success")
            return redirect(url_for("SequenceView.show", pk=sequence.id) + "#bl-seq-steps")
        return self._form_page(form, sequence, step)

    @expose("/step/<int:step_id>/move", methods=["POST"])
    @has_access
    def move(self, step_id):
        step = self._step(step_id)
        sequence_id = step.sequence_id
        try:
            move_step(db.session, step, -1 if request.form.get("direction") == "up" else 1)
            db.session.commit()
        except NurtureError as exc:
            db.session.rollback()
            flash(gettext("Not moved: %(reason)s", reason=str(exc)), "danger")
        return redirect(url_for("SequenceView.show", pk=sequence_id) + "#bl-seq-steps")

    @expose("/step/<int:step_id>/remove", methods=["POST"])
    @has_access
    def remove(self, step_id):
        step = self._step(step_id)
        sequence_id = step.sequence_id
        try:
            remove_step(db.session, step)
            db.session.commit()
            flash(gettext("Step removed; leads waiting at it go on with the next step."), "success")
        except NurtureError as exc:
            db.session.rollback()
            flash(str(exc), "danger")
        return redirect(url_for("SequenceView.show", pk=sequence_id) + "#bl-seq-steps")


# -- enrollments -------------------------------------------------------------------------------------------

class FilterVisibleEnrollments(BaseFilter):
    """Base filter: only enrollments of leads the current user may see."""

    name = _l("Visible records")
    arg_name = "visible"

    def apply(self, query, value):
        clause = visibility_clause(Lead, getattr(g, "user", None), self.datamodel.session)
        return query if clause is None else query.filter(Enrollment.lead_id.in_(select(Lead.id).where(clause)))


class FilterLeadMatches(BaseFilter):
    """The lead's name or e-mail address contains the text."""

    name = _l("Name or e-mail contains")
    arg_name = "lead"

    def apply(self, query, value):
        text = (value or "").strip()
        if not text:
            return query
        pattern = "%" + text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        match = select(Lead.id).where(or_(Lead.name.ilike(pattern, escape="\\"),
                                          Lead.email.ilike(pattern, escape="\\")))
        return query.filter(Enrollment.lead_id.in_(match))


class _EnrollmentFilters(SQLAFilterConverter):
    """The lead column is searched by its id or by the lead's name or e-mail, never by a list of every lead."""

    def convert(self, col_name):
        if col_name == "lead_id":
            return [FilterEqual(col_name, self.datamodel), FilterLeadMatches(col_name, self.datamodel)]
        return super().convert(col_name)


class _EnrollmentInterface(SQLAInterface):
    filter_converter_class = _EnrollmentFilters

    def query(self, *args, **kwargs):
        """A page of enrollments with their leads, sequences and steps: one query each, not one per row."""
        count, items = super().query(*args, **kwargs)
        if self.obj is not Enrollment:  # FAB makes the related models' interfaces of this class too
            return count, items
        for name, model, key in (("lead", Lead, "lead_id"), ("sequence", Sequence, "sequence_id"),
                                 ("step", SequenceStep, "step_id")):
            ids = {getattr(item, key) for item in items} - {None}
            found = {row.id: row for row in self.session.scalars(select(model).where(model.id.in_(ids)))} \
                if ids else {}
            for item in items:
                set_committed_value(item, name, found.get(getattr(item, key)))
        return count, items


def _lead_cell(lead) -> Markup:
    if lead is None:
        return Markup("")
    return Markup('<a href="{}" class="bl-enrollment-lead">{}</a>').format(url_for("LeadView.show", pk=lead.id),
                                                                            lead.name)


def _step_cell(step) -> str:
    return "" if step is None else f"{step.position}. {step.name or STEP_KIND_LABELS.get(step.kind, step.kind)}"


# quick filters above the enrollments list: request argument → (column, filter class)
QUICK_FILTERS = {"sequence": ("sequence", FilterRelationOneToManyEqual), "status": ("status", FilterEqual),
                 "reason": ("exit_reason", FilterEqual), "lead": ("lead_id", FilterLeadMatches)}


class EnrollmentView(ModelView):
    """Leads going through sequences: filter by sequence, status, exit reason and lead; pause, resume and
    end them; enroll leads by hand (the add page)."""

    datamodel = _EnrollmentInterface(Enrollment)
    class_permission_name = "CrmSequenceEnrollment"
    method_permission_name = {"pause_enrollments": "pause_action", "resume_enrollments": "resume_action",
                              "exit_enrollments": "exit_action"}
    base_permissions = ["can_list", "can_show", "can_add"]
    list_title = _l("Sequence enrollments")
    show_title = _l("Sequence enrollment")
    list_columns = ["lead", "sequence", "status", "step", "next_run_at", "source", "enrolled_at", "exit_reason",
                    "finished_at"]
    show_columns = ["lead", "sequence", "status", "step", "next_run_at", "source", "enrolled_by", "enrolled_at",
                    "exit_reason", "finished_at", "last_error"]
    search_columns = ["sequence", "status", "exit_reason", "lead_id", "source", "enrolled_at", "finished_at"]
    order_columns = ["enrolled_at", "next_run_at", "finished_at", "status"]
    base_order = ("id", "desc")
    base_filters = [["lead_id", FilterVisibleEnrollments, lambda: None]]
    label_columns = ENROLLMENT_LABELS
    formatters_columns = {
        "lead": _lead_cell, "step": _step_cell,
        "status": lambda v: ENROLLMENT_STATUS_LABELS.get(v, v),
        "exit_reason": lambda v: EXIT_REASON_LABELS.get(v, v) if v else "",
        "source": lambda v: ENROLLMENT_SOURCE_LABELS.get(v, v),
        "next_run_at": _when, "enrolled_at": _when, "finished_at": _when, "enrolled_by": lambda v: v or "",
        "last_error": lambda v: v or "",
    }
    list_template = "crm/nurture_seq_enrollments.html"

    @expose("/list/")
    @has_access
    def list(self):
        quick = {key: (request.args.get(key) or "").strip() for key in QUICK_FILTERS}
        if any(quick.values()):  # the quick filters become FAB's own filter arguments
            args = {k: v for k, v in request.args.items() if k not in QUICK_FILTERS}
            searchable = self._filters.get_search_filters()
            for key, value in quick.items():
                column, kind = QUICK_FILTERS[key]
                index = next(i for i, f in enumerate(searchable[column]) if type(f) is kind)
                if value:
                    args[f"_flt_{index}_{column}"] = value
            return redirect(url_for("EnrollmentView.list", **args))
        return super().list()

    def render_template(self, template, **kwargs):
        if template == self.list_template:
            kwargs.update(_quick_filter_context(self))
        return super().render_template(template, **kwargs)

    def _run(self, items, command, done):
        items = items if isinstance(items, list) else [items]
        visible = set(visible_lead_ids(db.session, g.user, [e.lead_id for e in items if e is not None]))
        changed, refused = 0, 0
        for item in items:
            if item is None or item.lead_id not in visible:
                continue
            try:
                command(db.session, item)
                db.session.commit()
                changed += 1
            except NurtureError:
                db.session.rollback()
                refused += 1
        if changed:
            flash(done(changed), "success")
        if refused:
            flash(gettext("Left as they were (not in a state that allows it): %(count)s.", count=refused),
                  "warning")
        return redirect(url_for("EnrollmentView.list"))

    @action("pause_enrollments", _l("Pause"), "", "fa-pause", single=False)
    def pause_enrollments(self, items):
        return self._run(items, pause_enrollment, lambda n: gettext("Enrollments paused: %(count)s.", count=n))

    @action("resume_enrollments", _l("Resume"), "", "fa-play", single=False)
    def resume_enrollments(self, items):
        return self._run(items, resume_enrollment,
                         lambda n: gettext("Enrollments resumed: %(count)s.", count=n))

    @action("exit_enrollments", _l("End"), _l("End these enrollments? The leads get no more steps."),
            "fa-stop", single=False)
    def exit_enrollments(self, items):
        return self._run(items, lambda session, e: exit_enrollment(session, e, "manual"),
                         lambda n: gettext("Enrollments ended: %(count)s.", count=n))

    @expose("/add", methods=["GET", "POST"])
    @has_access
    def add(self):
        """Enroll leads by hand: choose a sequence, then tick leads found by name or type their ids."""
        chosen = [i for i in (_int(v) for v in request.values.getlist("lead_id")) if i is not None]
        error = None
        if request.method == "POST" and "enroll" in request.form:
            try:
                sequence = db.session.get(Sequence, _int(request.form.get("sequence_id")) or 0)
                if sequence is None:
                    raise NurtureError(gettext("sequence: choose the sequence to enroll the leads in"))
                ids = list(dict.fromkeys([*chosen, *parse_ids(request.form.get("lead_ids", ""))]))
                if not ids:
                    raise NurtureError(gettext("leads: tick leads or type their ids"))
                result = enroll_visible(db.session, sequence, ids, g.user, source="manual")
                db.session.commit()
            except NurtureError as exc:
                db.session.rollback()
                error = str(exc)
            else:
                done, skipped = enroll_summary(result, sequence.name)
                flash(done, "success")
                if skipped:
                    flash(skipped, "warning")
                return redirect(url_for("EnrollmentView.list", sequence=sequence.id))
        return enroll_page(self, chosen, error=error)


def _quick_filter_context(view) -> dict:
    """Choices and current values of the quick filters above the enrollments list."""
    current = {}
    for key, (column, kind) in QUICK_FILTERS.items():
        index = next(i for i, f in enumerate(view._filters.get_search_filters()[column]) if type(f) is kind)
        current[key] = request.args.get(f"_flt_{index}_{column}", "")
    sequences = db.session.execute(select(Sequence.id, Sequence.name).order_by(Sequence.name)).all()
    return {"quick": current, "quick_sequences": sequences, "quick_statuses": ENROLLMENT_STATUS_LABELS,
            "quick_reasons": EXIT_REASON_LABELS}


def enroll_page(view, lead_ids: list[int], error: str | None = None):
    """The manual enrollment page: the sequence, leads found by name (or given), and lead ids to type.
    Also what the leads list's "Enroll in sequence" action shows."""
    if not view.appbuilder.sm.has_access("can_add", "CrmSequenceEnrollment"):
        flash(gettext("You may not enroll leads in sequences; ask for the Marketing role."), "danger")
        return redirect(request.referrer or url_for("LeadView.list"))
    session, user = db.session, g.user
    clause = visibility_clause(Lead, user, session)
    query = select(Lead.id, Lead.name, Lead.company_name, Lead.email, Lead.status)
    if clause is not None:
        query = query.where(clause)
    chosen = session.execute(query.where(Lead.id.in_(lead_ids)).order_by(Lead.id)).all() if lead_ids else []
    search = (request.values.get("q") or "").strip()
    found = []
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        found = session.execute(query.where(or_(
            Lead.name.ilike(pattern, escape="\\"), Lead.email.ilike(pattern, escape="\\"),
            Lead.company_name.ilike(pattern, escape="\\"), Lead.search_text.ilike(pattern, escape="\\")),
            Lead.id.not_in(lead_ids or [0])).order_by(Lead.id.desc()).limit(50)).all()
    sequences = session.execute(select(Sequence.id, Sequence.name, Sequence.status).where(
        Sequence.status != "archived").order_by(Sequence.name)).all()
    return view.render_template("crm/nurture_seq_enroll.html", chosen=chosen, found=found, search=search,
                                sequences=sequences, sequence_id=_int(request.values.get("sequence_id")),
                                lead_ids_text=request.form.get("lead_ids", ""), error=error,
                                status_labels=SEQUENCE_STATUS_LABELS, lead_status_labels=LEAD_STATUS_LABELS)


# -- statistics --------------------------------------------------------------------------------------------

class NurtureStatisticsView(BaseView):
    """Per sequence and per template: enrolled, running, sent, delivered, opened, clicked, replied,
    unsubscribed, converted, with their rates."""

    route_base = "/crm/nurture/statistics"
    default_view = "index"
    class_permission_name = "CrmSequence"
    method_permission_name = {"index": "list"}
    base_permissions = ["can_list"]

    @expose("/", methods=["GET"])
    @has_access
    def index(self):
        sequences = [with_rates(row) for row in statistics(db.session)]
        templates = [with_rates(row) for row in template_statistics(db.session)]
        return self.render_template("crm/nurture_seq_statistics.html", sequences=sequences, templates=templates,
                                    figures=FIGURES, rates=RATES, percent=percent,
                                    status_labels=SEQUENCE_STATUS_LABELS)


def register(appbuilder) -> None:
    """Add the sequence screens (menu CRM): sequences, enrollments, statistics."""
    category = {"category": "CRM", "category_label": _l("CRM")}
    appbuilder.add_view(SequenceView, "CrmSequence", label=_l("Nurture sequences"), icon="fa-envelope-o",
                        **category)
    appbuilder.add_view(EnrollmentView, "CrmSequenceEnrollment", label=_l("Sequence enrollments"),
                        icon="fa-users", **category)
    appbuilder.add_view(NurtureStatisticsView, "CrmSequenceStatistics", label=_l("Nurturing statistics"),
                        icon="fa-bar-chart", **category)
    appbuilder.add_view_no_menu(StepView)
