"""Web forms that capture leads: the admin screen that builds them (CRM → Lead forms) and the public form at
`/crm/f/<slug>`, with its embed snippet.

The public form needs no login. Instead of the session's CSRF token (an embedded form has no session cookie
on the visitor's browser) it carries a signed, time-stamped token that is accepted once; it is rate-limited
per client address, refuses oversized bodies before reading them, and has a honeypot field.
"""
from __future__ import annotations

import logging
from urllib.parse import urlencode

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_appbuilder import BaseView, expose, has_access
from flask_babel import force_locale, gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from werkzeug.exceptions import RequestEntityTooLarge

from bigledger_core.db import db, utcnow
from bigledger_core.i18n import current_locale
from bigledger_core.models import Team

from ..services import CrmValidationError, convert_custom, custom_fields
from .forms import (
    HONEYPOT,
    UTM_FIELDS,
    FormDefinitionError,
    Submission,
    TokenError,
    choices,
    clean_definition,
    field_label,
    input_name,
    issue_token,
    read_submission,
    read_token,
    tracking,
)
from .models import FormToken, Lead, LeadForm
from .services import create_lead, record_consent

log = logging.getLogger(__name__)
LANGUAGES = ("zh", "en")
public = Blueprint("crm_lead_forms", __name__, url_prefix="/crm/f")


# -- capturing a lead ---------------------------------------------------------------------------------------

def capture(session: Session, form: LeadForm, submission: Submission, tracked: dict, nonce: str,
            language: str) -> Lead:
    """Create the lead a visitor sent through `form`, recording the token's nonce in the same transaction:
    a second submission with the same token fails on the nonce's primary key (TokenError `replayed`), also
    when two arrive at once. Raises CrmValidationError for values the lead refuses; the caller rolls back."""
    try:
        with session.begin_nested():
            session.add(FormToken(nonce=nonce, form_id=form.id))
            session.flush()
    except IntegrityError:
        raise TokenError("replayed") from None
    lead = Lead(**submission.lead, **tracked, source="form", channel=form.channel, campaign=form.campaign,
                team_id=form.team_id, form_id=form.id, language=language, custom=submission.custom)
    if submission.consent:
        lead.consent, lead.consent_at = True, utcnow()
        lead.consent_text = _localized(form.consent_text, form.consent_text_en, language)
    lead, _created = create_lead(session, lead)
    if submission.consent:
        _record_consent(session, form, lead)
    return lead


def _record_consent(session: Session, form: LeadForm, lead: Lead) -> None:
    """Keep the consent the visitor gave: the text they saw, when, and on which form."""
    record_consent(session, lead, given=True, source=f"form:{form.slug}")


def _localized(zh: str | None, en: str | None, language: str) -> str | None:
    return (en or zh) if language == "en" else (zh or en)


# -- the public form ----------------------------------------------------------------------------------------

TOKEN_MESSAGES = {
    "invalid": _l("This form could not be verified. Please send it again."),
    "expired": _l("This form was open too long and has expired. Please send it again."),
    "too_fresh": _l("The form was sent too quickly. Please check your entries and send it again."),
    "replayed": _l("This form was already sent. Reload the page to send another one."),
}


CLOSED = _l("This form does not exist or is closed.")


def _language() -> str:
    asked = (request.values.get("lang") or "").strip().lower()[:5]
    return asked if asked in LANGUAGES else ("en" if current_locale() == "en" else "zh")


def _active_form(slug: str) -> LeadForm | None:
    return db.session.scalar(select(LeadForm).where(LeadForm.slug == slug[:100], LeadForm.active))


def _choices_by_key() -> dict:
    return {c.key: c for c in choices(custom_fields(db.session, "lead"))}


def _token(form: LeadForm) -> str:
    return issue_token(current_app.config["SECRET_KEY"], form.id)


def _page(form: LeadForm | None, language: str, *, status: int = 200, state: str = "form",
          message=None, submission: Submission | None = None, token: str | None = None,
          tracked: dict | None = None):
    """Render the public page in `language`: the form, the thank-you message or a refusal."""
    with force_locale(language):
        fields = []
        if form is not None and state == "form":
            by_key = _choices_by_key()
            for spec in form.fields or []:
                choice = by_key.get(spec["field"])
                if choice is None:
                    continue
                name = input_name(spec["field"])
                options = []
                if choice.custom is not None:
                    options = [{"value": str(o.get("value")),
                                "label": str((o.get("label_en") or o.get("label")) if language == "en"
                                             else (o.get("label") or o.get("label_en")) or o.get("value"))}
                               for o in choice.custom.options or []]
                fields.append({"name": name, "input": choice.input, "required": bool(spec.get("required")),
                               "label": field_label(spec, choice, language), "options": options,
                               "value": (submission.values.get(name) if submission else None) or "",
                               "problem": submission.problems.get(name) if submission else None})
        title = (_localized(form.title, form.title_en, language) or form.name) if form is not None else ""
        switch = {code: "?" + urlencode({**{k: v for k, v in request.args.items() if k != "lang"}, "lang": code})
                  for code in LANGUAGES}
        html = render_template(
            "crm/public_form.html", form=form, title=title, language=language, state=state, message=message,
            fields=fields, token=token, tracked=tracked or {}, honeypot=HONEYPOT, switch=switch,
            consent_text=_localized(form.consent_text, form.consent_text_en, language) if form else None,
            consent=bool(submission and submission.consent), consent_problem=(submission.problems.get("consent")
                                                                               if submission else None),
            problems=list(submission.problems.values()) if submission else [])
    response = current_app.make_response((html, status))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                                   "img-src 'self' data:; base-uri 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    return response


@public.before_request
def _limit_body():
    """Refuse a body over BIGLEDGER_FORM_MAX_KB before anything reads it (and cap what is read)."""
    if request.method == "POST":
        limit = int(current_app.config["BIGLEDGER_FORM_MAX_KB"]) * 1024
        request.max_content_length = limit
        if request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge()


@public.errorhandler(413)
def _too_large(_error):
    return _page(None, _language_of_query(), status=413, state="refused",
                 message=_l("What was sent is too large. Please shorten your message and try again."))


@public.errorhandler(429)
def _too_many(_error):
    return _page(None, _language_of_query(), status=429, state="refused",
                 message=_l("Too many forms were sent from your address. Please try again in a minute."))


def _language_of_query() -> str:
    # the body of a refused request is not read, so only the address can say the language
    asked = (request.args.get("lang") or "").strip().lower()[:5]
    return asked if asked in LANGUAGES else ("en" if current_locale() == "en" else "zh")


@public.route("/<slug>", methods=["GET"])
def show(slug: str):
    """The public form. UTM parameters in the address and the referrer are carried as hidden fields."""
    form = _active_form(slug)
    language = _language()
    if form is None:
        return _page(None, language, status=404, state="refused",
                     message=CLOSED)
    tracked = tracking({**{k: request.args.get(k) for k in UTM_FIELDS},
                        "referrer": request.args.get("ref") or request.referrer})
    return _page(form, language, token=_token(form), tracked=tracked)


@public.route("/<slug>", methods=["POST"])
def submit(slug: str):
    """A visitor sends the form: checked, then a lead is created (once per token)."""
    form = _active_form(slug)
    data = request.form
    language = _language()
    if form is None:
        return _page(None, language, status=404, state="refused",
                     message=CLOSED)
    if data.get(HONEYPOT):
        log.info("lead form %s: honeypot filled, nothing captured", form.slug)
        return _done(form, language)
    tracked = tracking(data)
    config = current_app.config
    token = data.get("token") or ""
    with force_locale(language):
        try:
            nonce = read_token(config["SECRET_KEY"], token, form.id, min_age=config["BIGLEDGER_FORM_MIN_SECONDS"],
                               max_age=config["BIGLEDGER_FORM_MAX_HOURS"] * 3600)
        except TokenError as exc:
            submission = _read(form, data, language)
            submission.problems.clear()
            keep = token if exc.reason == "too_fresh" else _token(form)
            return _page(form, language, status=400, message=str(TOKEN_MESSAGES[exc.reason]),
                         submission=submission, token=keep, tracked=tracked)
        submission = _read(form, data, language)
        if submission.problems:
            return _page(form, language, status=400, submission=submission, token=token, tracked=tracked)
        try:
            capture(db.session, form, submission, tracked, nonce, language)
            db.session.commit()
        except TokenError as exc:
            db.session.rollback()
            return _page(form, language, status=400, state="refused", message=str(TOKEN_MESSAGES[exc.reason]))
        except CrmValidationError as exc:
            db.session.rollback()
            _explain(form, submission, exc, language)
            return _page(form, language, status=400, submission=submission, token=token, tracked=tracked)
    if form.redirect_url:
        return redirect(form.redirect_url, 303)
    return _done(form, language)


def _read(form: LeadForm, data, language: str) -> Submission:
    return read_submission(form.fields or [], data, _choices_by_key(), language,
                           consent_required=form.consent_required and bool(form.consent_text or form.consent_text_en),
                           convert_custom=convert_custom)


def _explain(form: LeadForm, submission: Submission, exc: CrmValidationError, language: str) -> None:
    """Put the lead's refusals next to the fields they concern, named as the form names them."""
    by_key = _choices_by_key()
    specs = {spec["field"]: spec for spec in form.fields or []}
    for problem in exc.problems:
        spec = specs.get(problem.field)
        label = field_label(spec, by_key.get(problem.field), language) if spec else problem.field
        name = input_name(problem.field) if spec else problem.field
        submission.problems[name] = gettext("%(field)s: %(problem)s", field=label, problem=problem.message)


def _done(form: LeadForm, language: str):
    with force_locale(language):
        message = _localized(form.thank_you, form.thank_you_en, language) or \
            gettext("Thank you! We have received your details and will be in touch soon.")
    return _page(form, language, state="done", message=message)


# -- the admin screen ---------------------------------------------------------------------------------------

class LeadFormView(BaseView):
    """CRM → Lead forms: build a form from lead fields and lead custom fields, with its consent text,
    thank-you message or redirect and target team; shows the public address and the embed snippet."""

    route_base = "/crm/lead-forms"
    default_view = "index"
    class_permission_name = "CrmForm"
    method_permission_name = {"index": "list", "add": "add", "edit": "edit"}
    base_permissions = ["can_list", "can_add", "can_edit"]

    @expose("/", methods=["GET"])
    @has_access
    def index(self):
        forms = db.session.scalars(select(LeadForm).options(selectinload(LeadForm.team))
                                    .order_by(LeadForm.name).limit(500)).all()
        counts = dict(db.session.execute(select(Lead.form_id, func.count()).where(Lead.form_id.is_not(None))
                                         .group_by(Lead.form_id)).all())
        return self.render_template("crm/lead_form_list.html", forms=forms, counts=counts)

    @expose("/add", methods=["GET", "POST"])
    @has_access
    def add(self):
        return self._edit(LeadForm(active=True, fields=[{"field": "name", "required": True},
                                                        {"field": "email", "required": True}]))

    @expose("/edit/<int:pk>", methods=["GET", "POST"])
    @has_access
    def edit(self, pk: int):
        form = db.session.get(LeadForm, pk)
        if form is None:
            abort(404)
        return self._edit(form)

    def _edit(self, form: LeadForm):
        available = choices(custom_fields(db.session, "lead"))
        problems: list[str] = []
        values = None
        if request.method == "POST":
            values = self._posted(available)
            try:
                cleaned = clean_definition(values, {c.key for c in available})
                clash = db.session.scalar(select(LeadForm.id).where(LeadForm.slug == cleaned["slug"],
                                                                    LeadForm.id != (form.id or 0)))
                if clash is not None:
                    raise FormDefinitionError([gettext("Link name: %(slug)s is used by another form.",
                                                       slug=cleaned["slug"])])
                for key, value in cleaned.items():
                    setattr(form, key, value)
                if form.id is None:
                    db.session.add(form)
                db.session.commit()
            except FormDefinitionError as exc:
                db.session.rollback()
                problems = exc.problems
            except IntegrityError:
                db.session.rollback()
                problems = [gettext("Link name: %(slug)s is used by another form.", slug=values.get("slug"))]
            else:
                flash(gettext("The form %(name)s is saved.", name=form.name), "success")
                return redirect(url_for("LeadFormView.edit", pk=form.id))
        chosen = {spec["field"]: spec for spec in (values or {}).get("fields", form.fields or [])}
        order = {key: position for position, key in enumerate(chosen)}
        rows = sorted(available, key=lambda c: (c.key not in chosen, order.get(c.key, 0)))
        teams = db.session.execute(select(Team.id, Team.name, Team.name_en).order_by(Team.name)).all()
        snippet = None
        if form.id is not None and form.slug:
            public_url = url_for("crm_lead_forms.show", slug=form.slug, _external=True)
            script = url_for("crm_assets.static", filename="crm/lead_form_embed.js", _external=True)
            snippet = {"url": public_url,
                       "script": f'<script src="{script}" data-bigledger-form="{public_url}" async></script>',
                       "iframe": f'<iframe src="{public_url}" title="{form.title or form.name}" '
                                 f'style="width:100%;min-height:640px;border:0"></iframe>'}
        return self.render_template("crm/lead_form_edit.html", form=form, values=values, rows=rows,
                                    chosen=chosen, teams=teams, problems=problems, snippet=snippet,
                                    language=current_locale())

    @staticmethod
    def _posted(available) -> dict:
        data = request.form
        fields = []
        for choice in available:
            prefix = f"field.{choice.key}."
            if data.get(prefix + "on"):
                fields.append({"field": choice.key, "required": bool(data.get(prefix + "required")),
                               "position": data.get(prefix + "position"), "label": data.get(prefix + "label"),
                               "label_en": data.get(prefix + "label_en")})
        values = {key: data.get(key) for key in ("name", "slug", "title", "title_en", "consent_text",
                                                   "consent_text_en", "thank_you", "thank_you_en", "redirect_url",
                                                   "team_id", "channel", "campaign", "consent_required", "active")}
        values["fields"] = fields
        return values


def _exempt_public_form_from_session_csrf() -> None:
    """The public form proves itself with its signed one-time token, not with the session's CSRF token: an
    embedded form has no session cookie (it is third-party), and there is no signed-in user whose authority a
    forged request could borrow. Registered before Flask-WTF's check, this exempts the public blueprint."""
    if request.blueprint == public.name:
        csrf = current_app.extensions.get("csrf")
        if csrf is not None:
            csrf.exempt(public)


def register(appbuilder) -> None:
    """Add the form screens and the public form routes."""
    current_app.register_blueprint(public)
    current_app.before_request(_exempt_public_form_from_session_csrf)
    appbuilder.sm.limiter.limit(lambda: current_app.config["BIGLEDGER_FORM_RATE_LIMIT"], methods=["POST"])(public)
    appbuilder.add_view(LeadFormView, "CrmForm", label=_l("Lead forms"), icon="fa-wpforms", category="CRM",
                        category_label=_l("CRM"))



def forget_used_tokens() -> int:
    """Scheduler job: delete the used-token records older than a token may live (those tokens are refused as
    expired anyway). Returns how many were deleted."""
    import datetime as dt

    from flask import current_app
    from sqlalchemy import delete

    from bigledger_core.db import db, utcnow

    from .models import FormToken

    hours = float(current_app.config.get("BIGLEDGER_FORM_MAX_HOURS") or 24)
    result = db.session.execute(delete(FormToken).where(FormToken.used_at < utcnow() - dt.timedelta(hours=hours)))
    db.session.commit()
    return result.rowcount or 0
