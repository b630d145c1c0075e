"""Lead screens: the lead list and form (scored on save), a lead's page with why it scored what it did,
and the scoring rules screen (load a new version, see the versions)."""
from __future__ import annotations

from flask import abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, ModelView, expose, has_access
from flask_appbuilder.actions import action
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from wtforms import SelectField
from wtforms.validators import Optional

from bigledger_core.db import db
from bigledger_core.security import OwnedRecordsMixin, visible_record

from ..forms import ListExportMixin
from ..services import CrmValidationError
from ..views import LABELS, LEAD_STATUS_LABELS
from .duplicates import open_for
from .models import Lead, LeadFact, ScoringRuleSet
from .scoring_rules import RuleSetError
from .services import (
    LeadError,
    active_rule_set,
    clean_lead,
    create_lead,
    disqualify,
    load_rule_set,
    rescore,
    rescore_all,
    why,
)

LEAD_LABELS = {
    **LABELS, "name": _l("Name"), "company_name": _l("Company"), "company_size": _l("Company size"),
    "email": _l("E-mail"), "phone": _l("Phone"), "score": _l("Score"), "source": _l("Source"),
    "channel": _l("Channel"), "campaign": _l("Campaign"), "message": _l("Message"), "language": _l("Language"),
    "timezone": _l("Time zone"),
    "utm_source": "utm_source", "utm_medium": "utm_medium", "utm_campaign": "utm_campaign", "utm_term": "utm_term",
    "utm_content": "utm_content", "referrer": _l("Referrer"), "consent": _l("Marketing consent"),
    "consent_text": _l("Consent text"), "qualified_at": _l("Qualified"), "disqualify_reason": _l("Why disqualified"),
    "email_opens": _l("E-mail opens"), "email_clicks": _l("E-mail clicks"), "address": _l("Address"),
}
STATUS_LABELS = LEAD_STATUS_LABELS
SOURCE_LABELS = {"form": _l("Web form"), "email": _l("E-mail"), "api": _l("API"), "import": _l("Import"),
                 "manual": _l("Manual"), "referral": _l("Referral"), "event": _l("Event"),
                 "campaign": _l("Campaign"), "other": _l("Other")}


def _select(label, choices: dict) -> SelectField:
    return SelectField(label, choices=list(choices.items()), validators=[Optional()])


class LeadView(ListExportMixin, OwnedRecordsMixin, ModelView):
    export_name = "leads"
    datamodel = SQLAInterface(Lead)
    class_permission_name = "CrmLead"
    list_title = _l("Leads")
    show_title = _l("Lead")
    add_title = _l("Add lead")
    edit_title = _l("Edit lead")
    list_columns = ["name", "company_name", "score", "status", "source", "channel", "owner", "created_at"]
    add_columns = ["name", "title", "company_name", "company_size", "industry", "email", "phone", "country", "city",
                   "language", "timezone", "source", "channel", "campaign", "message", "owner", "team"]
    edit_columns = [*add_columns, "status"]
    show_columns = ["name", "title", "company_name", "company_size", "industry", "website", "email", "phone",
                    "country", "city", "address", "language", "timezone", "status", "score", "qualified_at", "disqualify_reason", "source",
                    "channel", "campaign", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
                    "referrer", "consent", "consent_text", "email_opens", "email_clicks", "owner", "team",
                    "created_at"]
    search_columns = ["name", "company_name", "email", "status", "score", "source", "channel", "campaign", "owner",
                      "team", "industry", "created_at"]
    order_columns = ["name", "score", "created_at", "status"]
    base_order = ("id", "desc")
    label_columns = LEAD_LABELS
    formatters_columns = {"status": lambda v: STATUS_LABELS.get(v, v), "source": lambda v: SOURCE_LABELS.get(v, v)}
    add_form_extra_fields = {"source": _select(LEAD_LABELS["source"], SOURCE_LABELS)}
    edit_form_extra_fields = {**add_form_extra_fields, "status": _select(_l("Status"), STATUS_LABELS)}
    show_template = "crm/lead_show.html"
    # the list action's permission matches the roles' "can_…_action" pattern
    method_permission_name = {"enroll_in_sequence": "enroll_action"}

    def pre_add(self, item):
        super().pre_add(item)
        try:
            create_lead(db.session, item)
        except CrmValidationError as exc:
            db.session.rollback()
            raise ValueError(str(exc)) from None

    def pre_update(self, item):
        try:
            with db.session.no_autoflush:
                clean_lead(item, db.session)
        except CrmValidationError as exc:
            raise ValueError(str(exc)) from None

    def post_update(self, item):
        rescore(db.session, item)
        db.session.commit()

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        lead = _visible_lead(pk)
        active = active_rule_set(db.session)
        g.crm_lead_page = {
            "lead": lead, "why": why(db.session, lead), "threshold": active[1].threshold if active else None,
            "facts": db.session.scalars(select(LeadFact).where(LeadFact.lead_id == lead.id)
                                        .order_by(LeadFact.last_at.desc())).all(),
            "status_label": STATUS_LABELS.get(lead.status, lead.status),
            "duplicates": open_for(db.session, "lead", lead.id)}
        return super().show(pk)

    def render_template(self, template, **kwargs):
        return super().render_template(template, **{**g.get("crm_lead_page", {}), **kwargs})

    @expose("/disqualify/<int:pk>", methods=["POST"])
    @has_access
    def disqualify(self, pk):
        lead = _visible_lead(pk)
        try:
            disqualify(db.session, lead, request.form.get("reason"))
            db.session.commit()
            flash(gettext("The lead is disqualified."), "success")
        except LeadError as exc:
            db.session.rollback()
            flash(str(exc), "danger")
        return redirect(url_for("LeadView.show", pk=pk))

    @action("enroll_in_sequence", _l("Enroll in sequence"), "", "fa-envelope-o", single=False)
    def enroll_in_sequence(self, items):
        """Choose a nurture sequence for the ticked leads (those the user may see) and enroll them: the
        enrollment page, with these leads ticked."""
        if not self.appbuilder.sm.has_access("can_add", "CrmSequenceEnrollment"):
            flash(gettext("You may not enroll leads in sequences; ask for the Marketing role."), "danger")
            return redirect(request.referrer or url_for("LeadView.list"))
        items = items if isinstance(items, list) else [items]
        return redirect(url_for("EnrollmentView.add", lead_id=[lead.id for lead in items if lead is not None]))


def _visible_lead(pk) -> Lead:
    lead = visible_record(Lead, pk, g.user, db.session)
    if lead is None:
        abort(404)
    return lead


class ScoringView(BaseView):
    """Lead scoring rules: the active version, earlier versions, and a form to load a new one."""

    route_base = "/crm/scoring"
    default_view = "index"
    class_permission_name = "CrmScoring"
    method_permission_name = {"index": "list", "load": "load"}
    base_permissions = ["can_list", "can_load"]
    RESCORE_NOW = 20_000  # up to this many leads are rescored at once; more by the scheduler's job

    @expose("/", methods=["GET"])
    @has_access
    def index(self, problems=None, text=None):
        versions = db.session.scalars(select(ScoringRuleSet).order_by(ScoringRuleSet.version.desc()).limit(20)).all()
        return self.render_template("crm/scoring.html", versions=versions, problems=problems or [],
                                    text=text if text is not None else "")

    @expose("/load", methods=["POST"])
    @has_access
    def load(self):
        text = request.form.get("rules", "")
        upload = request.files.get("file")
        if upload and upload.filename:
            raw = upload.read(256 * 1024 + 1)
            try:
                text = raw.decode("utf-8-sig") if len(raw) <= 256 * 1024 else ""
            except UnicodeDecodeError:
                text = ""
            if not text:
                return self.index(problems=[gettext("The file must be UTF-8 text of at most 256 KB.")], text="")
        try:
            row = load_rule_set(db.session, text, user_id=g.user.id)
            count = db.session.scalar(select(func.count()).select_from(Lead))
            if count <= self.RESCORE_NOW:
                rescore_all(db.session)
            db.session.commit()
        except RuleSetError as exc:
            db.session.rollback()
            return self.index(problems=exc.problems, text=text)
        if row.rescored_at is not None:
            flash(gettext("Scoring rules version %(version)s loaded; %(count)s leads rescored.", version=row.version,
                          count=row.rescored_count), "success")
        else:
            flash(gettext("Scoring rules version %(version)s loaded; the scheduler rescores the %(count)s leads "
                          "within a minute.", version=row.version, count=count), "success")
        return redirect(url_for("ScoringView.index"))


def register(appbuilder) -> None:
    category = {"category": "CRM", "category_label": _l("CRM")}
    appbuilder.add_view(LeadView, "CrmLead", label=_l("Leads"), icon="fa-user-plus", **category)
    appbuilder.add_view(ScoringView, "CrmScoring", label=_l("Lead scoring"), icon="fa-star-half-o", **category)

