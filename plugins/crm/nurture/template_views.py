"""E-mail template screens (CRM → E-mail templates) and REST API (`/api/v1/crm/email_template/`).

Both save through `templates.validate`, so a template that the sandbox would refuse is never stored: the
screen shows each problem under the field it concerns, the API answers 400 with the list. The preview fills
a template for a lead the user may see, shows the HTML in a sandboxed frame (no scripts, no same-origin
access) next to the subject and the plain-text part, and sends a test to the user's own address.
"""
from __future__ import annotations

from types import SimpleNamespace

from flask import abort, flash, g, redirect, render_template_string, request, url_for
from flask_appbuilder import ModelRestApi, ModelView, expose, has_access
from flask_appbuilder.actions import action
from flask_appbuilder.api import protect, safe
from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from marshmallow import ValidationError as SchemaError
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import BadRequest
from wtforms import BooleanField, HiddenField, StringField, TextAreaField
from wtforms.validators import Length, ValidationError
from wtforms.widgets import TextArea

from bigledger_core.db import db
from bigledger_core.mail.outbound import MessageError, queue_email
from bigledger_core.security import visibility_clause, visible_record

from ..leads.models import Lead
from ..views import _check_version, _NullableColumns
from .models import EmailTemplate
from .templates import (
    MAX_BODY_CHARS,
    MAX_SUBJECT_CHARS,
    Rendered,
    TemplateError,
    render_for_lead,
    validate,
)

PERMISSION = "CrmTemplate"  # the Marketing role's pattern names CrmTemplate…
SOURCES = ("subject_zh", "html_zh", "subject_en", "html_en")
COLUMNS = ["name", *SOURCES, "marketing", "active"]
LANGUAGES = {"": _l("The lead's language"), "zh": _l("Chinese"), "en": _l("English")}
LABELS = {
    "name": _l("Name"), "subject_zh": _l("Subject (Chinese)"), "html_zh": _l("Body (Chinese, HTML)"),
    "subject_en": _l("Subject (English)"), "html_en": _l("Body (English, HTML)"),
    "marketing": _l("Marketing e-mail"), "active": _l("Enabled"), "created_at": _l("Created"),
    "updated_at": _l("Updated"), "version": _l("Version"),
}
BODY_HELP = _l("HTML with merge fields such as {{ lead.name }}, {{ lead.company_name }}, {{ owner.name }}, "
               "{{ lead.custom.KEY }} and {{ unsubscribe_url }}. Fill in Chinese, English or both: each lead "
               "gets the version of their language. Use Preview to see it filled in for a lead.")


# -- checking on save ----------------------------------------------------------------------------------------

def _problems_of(form) -> dict[str | None, list[str]]:
    """The form's problems by column, found once per form: what `validate` refuses, and a stale edit."""
    cached = getattr(form, "_bl_template_problems", None)
    if cached is not None:
        return cached
    values = {column: (form[column].data if column in form else None) for column in COLUMNS}
    problems: dict[str | None, list[str]] = {}
    try:
        with db.session.no_autoflush:
            validate(db.session, SimpleNamespace(**values))
    except TemplateError as exc:
        problems = exc.by_field()
    problems.pop("name", None)  # a missing name is the form's own "required" message
    stale = _stale_edit(form)
    if stale:
        problems.setdefault("name", []).append(stale)
    form._bl_template_problems = problems
    return problems


def _stale_edit(form) -> str | None:
    """A conflict message when the template was saved by someone else since this form was loaded."""
    loaded = form["loaded_version"].data if "loaded_version" in form else None
    pk = getattr(form, "_id", None)
    if pk is None or not loaded:
        return None
    current = db.session.get(EmailTemplate, pk)
    if current is not None and str(current.version) != str(loaded):
        return gettext("This template was changed by someone else since you opened it (now version "
                       "%(version)s). Copy your changes, reload the page and apply them again.",
                       version=current.version)
    return None


class _TemplateRules:
    """A WTForms validator: the template's problems that concern this column, each as its own error."""

    def __init__(self, column: str):
        self.column = column

    def __call__(self, form, field) -> None:
        problems = _problems_of(form)
        mine = list(problems.get(self.column, []))
        if self.column == "subject_zh":
            mine.extend(problems.get(None, []))  # about the template as a whole: shown on its first field
        if mine:
            # FAB's form shows each error through gettext with %-formatting: a literal % must be doubled
            mine = [problem.replace("%", "%%") for problem in mine]
            field.errors.extend(mine[:-1])
            raise ValidationError(mine[-1])


class _SourceArea(TextArea):
    """A tall monospaced text area for template source."""

    def __call__(self, field, **kwargs):
        kwargs.update({"class": "form-control", "rows": 14, "spellcheck": "false",
                       "style": "font-family: monospace"})
        return super().__call__(field, **kwargs)


def _form_fields() -> dict:
    """The four source fields with the template rules (not `Optional`: an empty half of a language is an
    error shown on the empty field)."""
    fields: dict = {}
    for column in SOURCES:
        if column.startswith("subject"):
            fields[column] = StringField(LABELS[column], widget=BS3TextFieldWidget(), validators=[
                _TemplateRules(column), Length(max=MAX_SUBJECT_CHARS)])
        else:
            fields[column] = TextAreaField(LABELS[column], widget=_SourceArea(), description=BODY_HELP,
                                           validators=[_TemplateRules(column), Length(max=MAX_BODY_CHARS)])
    # plain check boxes: FAB would make these non-null columns "required", refusing an unticked box
    fields["marketing"] = BooleanField(LABELS["marketing"], default=True, description=_l(
        "Marketing e-mails carry a one-click unsubscribe link and header and go only to leads who may receive "
        "marketing; clear this for service e-mails."))
    fields["active"] = BooleanField(LABELS["active"], default=True,
                                    description=_l("Sequences send only enabled templates."))
    return fields


def _clean(item: EmailTemplate) -> None:
    """Empty parts are stored as NULL; subjects without surrounding blanks."""
    for column in SOURCES:
        value = getattr(item, column)
        if isinstance(value, str):
            value = value.strip() if column.startswith("subject") else value
        setattr(item, column, value if value and value.strip() else None)
    item.name = (item.name or "").strip()


def _save_check(item: EmailTemplate) -> None:
    """The rules once more just before saving (the form ran them already; this guards every other path)."""
    _clean(item)
    with db.session.no_autoflush:
        validate(db.session, item)


# -- the screen ----------------------------------------------------------------------------------------------

class EmailTemplateView(ModelView):
    """CRM → E-mail templates: list, add, edit, show; preview against a lead and a test mail to oneself."""

    route_base = "/crm/email-templates"
    datamodel = SQLAInterface(EmailTemplate)
    class_permission_name = PERMISSION
    method_permission_name = {"preview": "show", "preview_template": "show", "send_test": "edit"}
    list_title = _l("E-mail templates")
    show_title = _l("E-mail template")
    add_title = _l("Add e-mail template")
    edit_title = _l("Edit e-mail template")
    list_columns = ["name", "subject_zh", "subject_en", "marketing", "active", "updated_at"]
    add_columns = COLUMNS
    edit_columns = [*COLUMNS, "loaded_version"]
    show_columns = [*COLUMNS, "created_at", "updated_at", "version"]
    search_columns = ["name", "subject_zh", "subject_en", "marketing", "active"]
    order_columns = ["name", "updated_at"]
    base_order = ("name", "asc")
    label_columns = LABELS
    validators_columns = {"name": [_TemplateRules("name")]}
    add_form_extra_fields = _form_fields()
    edit_form_extra_fields = {**_form_fields(), "loaded_version": HiddenField()}

    def prefill_form(self, form, pk) -> None:
        item = self.datamodel.get(pk)
        if item is not None:
            form.loaded_version.data = item.version

    def pre_add(self, item: EmailTemplate) -> None:
        try:
            _save_check(item)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None

    def pre_update(self, item: EmailTemplate) -> None:
        self.pre_add(item)

    @action("preview_template", _l("Preview"), "", "fa-eye", multiple=False)
    def preview_template(self, item):
        """The row and show-page button that opens the preview."""
        return redirect(url_for("EmailTemplateView.preview", pk=item.id))

    @expose("/preview/<int:pk>", methods=["GET"])
    @has_access
    def preview(self, pk: int):
        """Fill the template for a lead the user may see (by search or id) in a chosen language."""
        template = _template_or_404(pk)
        search = (request.args.get("q") or "").strip()[:100]
        language = request.args.get("language", "")
        language = language if language in LANGUAGES else ""
        lead = _visible_lead(request.args.get("lead"))
        leads = _lead_choices(search, lead)
        if lead is None and not search and leads:
            lead = _visible_lead(leads[0].id)
        rendered, problems = None, []
        if lead is not None:
            try:
                rendered = render_for_lead(db.session, template, lead, language=language or None)
            except TemplateError as exc:
                problems = exc.problems
        return render_template_string(
            PREVIEW_PAGE, base_template=self.appbuilder.base_template, appbuilder=self.appbuilder,
            template=template, lead=lead, leads=leads, search=search, language=language, languages=LANGUAGES,
            rendered=rendered, problems=problems, words=_preview_words(rendered), **self.extra_args)

    @expose("/send-test/<int:pk>", methods=["POST"])
    @has_access
    def send_test(self, pk: int):
        """Queue the template, filled for the chosen lead, to the signed-in user's own address."""
        template = _template_or_404(pk)
        language = request.form.get("language", "")
        language = language if language in LANGUAGES else ""
        lead = _visible_lead(request.form.get("lead"))
        back = url_for("EmailTemplateView.preview", pk=pk, lead=lead.id if lead else None,
                       language=language or None)
        if lead is None:
            flash(gettext("Choose a lead to fill the template in for."), "danger")
            return redirect(back)
        try:
            rendered = render_for_lead(db.session, template, lead, language=language or None)
            address = send_test_mail(rendered, g.user)
            db.session.commit()
        except (TemplateError, MessageError) as exc:
            db.session.rollback()
            flash(str(exc), "danger")
            return redirect(back)
        flash(gettext("A test of %(name)s (%(language)s) is on its way to %(address)s.", name=template.name,
                      language=LANGUAGES[rendered.language], address=address), "success")
        return redirect(back)


def send_test_mail(rendered: Rendered, user) -> str:
    """Queue `rendered` to `user`'s own address (source `nurture:test`), marked as a test in the subject.
    Returns the address; raises MessageError when the user has none."""
    address = (getattr(user, "email", None) or "").strip()
    if not address:
        raise MessageError(gettext("Your account has no e-mail address to send the test to."))
    name = " ".join(part for part in (user.first_name, user.last_name) if part) or None
    queue_email(db.session, to=address, to_name=name, subject=gettext("[Test] %(subject)s",
                                                                       subject=rendered.subject),
                text=rendered.text, html=rendered.html, source="nurture:test")
    return address


def _template_or_404(pk) -> EmailTemplate:
    template = db.session.get(EmailTemplate, pk)
    if template is None:
        abort(404)
    return template


def _visible_lead(pk) -> Lead | None:
    return visible_record(Lead, pk, g.user, db.session) if pk not in (None, "") else None


def _lead_choices(search: str, chosen: Lead | None) -> list:
    """Leads to pick from: those matching `search` (name, e-mail, company, pinyin, or an id), else the most
    recent; only leads the user may see; the chosen one first."""
    query = select(Lead.id, Lead.name, Lead.company_name, Lead.email, Lead.language)
    clause = visibility_clause(Lead, g.user, db.session)
    if clause is not None:
        query = query.where(clause)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        matches = [Lead.name.ilike(pattern, escape="\\"), Lead.email.ilike(pattern, escape="\\"),
                   Lead.company_name.ilike(pattern, escape="\\"), Lead.search_text.ilike(pattern, escape="\\")]
        if search.isdigit():
            matches.append(Lead.id == int(search))
        query = query.where(or_(*matches))
    rows = list(db.session.execute(query.order_by(Lead.id.desc()).limit(30)))
    if chosen is not None and all(row.id != chosen.id for row in rows):
        rows.insert(0, SimpleNamespace(id=chosen.id, name=chosen.name, company_name=chosen.company_name,
                                       email=chosen.email, language=chosen.language))
    return rows


def _preview_words(rendered: Rendered | None) -> dict:
    """The page's texts, translated here so that every message lives in Python code."""
    return {
        "title": gettext("Preview"), "back": gettext("Back to the template"), "lead": gettext("Lead"),
        "search": gettext("Name, e-mail, company or id"), "find": gettext("Find"),
        "language": gettext("Language"), "show": gettext("Preview"), "subject": gettext("Subject"),
        "html": gettext("HTML part"), "text": gettext("Plain-text part"),
        "send": gettext("Send test to me"), "none": gettext("No lead found. Search by name, e-mail or id."),
        "version": gettext("Version shown: %(language)s",
                           language=LANGUAGES[rendered.language]) if rendered else "",
        "note": gettext("Links do not work in the preview; the unsubscribe link is a placeholder."),
    }


PREVIEW_PAGE = """{% extends "bigledger/baselayout.html" %}
{% block content %}
<h2>{{ words.title }}: {{ template.name }}
  <a class="btn btn-default btn-sm pull-right"
     href="{{ url_for('EmailTemplateView.show', pk=template.id) }}">{{ words.back }}</a></h2>
<form method="get" class="form-inline" id="bl-template-preview-form">
  <input class="form-control input-sm" name="q" value="{{ search }}" placeholder="{{ words.search }}"
         id="bl-template-preview-q">
  <button class="btn btn-default btn-sm" name="find" value="1">{{ words.find }}</button>
  <label for="bl-template-preview-lead">{{ words.lead }}</label>
  <select class="form-control input-sm" name="lead" id="bl-template-preview-lead">
    {% for row in leads %}
    <option value="{{ row.id }}" {{ 'selected' if lead and lead.id == row.id else '' }}>{{ row.name }}
      {%- if row.company_name %} · {{ row.company_name }}{% endif %}
      {%- if row.email %} &lt;{{ row.email }}&gt;{% endif %}
      (#{{ row.id }}{% if row.language %}, {{ row.language }}{% endif %})</option>
    {% endfor %}
  </select>
  <label for="bl-template-preview-language">{{ words.language }}</label>
  <select class="form-control input-sm" name="language" id="bl-template-preview-language">
    {% for code, label in languages.items() %}
    <option value="{{ code }}" {{ 'selected' if code == language else '' }}>{{ label }}</option>
    {% endfor %}
  </select>
  <button class="btn btn-primary btn-sm" id="bl-template-preview-show">{{ words.show }}</button>
</form>
{% if not leads %}<p class="text-muted" id="bl-template-preview-none">{{ words.none }}</p>{% endif %}
{% if problems %}
<div class="alert alert-danger" id="bl-template-preview-problems">
  <ul>{% for p in problems %}<li>{{ p }}</li>{% endfor %}</ul></div>
{% endif %}
{% if rendered %}
<hr>
<p><span class="label label-info" id="bl-template-preview-version">{{ words.version }}</span>
  <small class="text-muted">{{ words.note }}</small></p>
<p><strong>{{ words.subject }}:</strong> <span id="bl-template-preview-subject">{{ rendered.subject }}</span></p>
{# the button stays above the frame: it can be reached without scrolling past the message #}
<form method="post" action="{{ url_for('EmailTemplateView.send_test', pk=template.id) }}" id="bl-template-send-test">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <input type="hidden" name="lead" value="{{ lead.id }}">
  <input type="hidden" name="language" value="{{ language }}">
  <button class="btn btn-default" id="bl-template-send-test-button">
    <i class="fa fa-paper-plane"></i> {{ words.send }}</button>
</form>
<h4>{{ words.html }}</h4>
{# sandbox="": no scripts, forms, plugins or same-origin access for whatever the message holds #}
<iframe id="bl-template-preview-html" sandbox="" referrerpolicy="no-referrer" srcdoc="{{ rendered.html }}"
        style="width:100%; min-height:420px; border:1px solid #ddd; background:#fff"></iframe>
<h4>{{ words.text }}</h4>
<pre id="bl-template-preview-text" style="white-space: pre-wrap">{{ rendered.text }}</pre>
{% endif %}
{% endblock %}
"""


# -- the REST API --------------------------------------------------------------------------------------------

class CrmEmailTemplateApi(_NullableColumns, ModelRestApi):
    """E-mail templates over REST: the same checks as the screen (400 with `problems`), and a preview."""

    resource_name = "crm/email_template"
    datamodel = SQLAInterface(EmailTemplate)
    class_permission_name = PERMISSION
    method_permission_name = {"get_list": "get", "get": "get", "post": "post", "put": "put", "delete": "delete",
                              "info": "info", "preview": "get"}
    openapi_spec_tag = "CRM nurturing"
    list_columns = ["id", "name", "subject_zh", "subject_en", "marketing", "active", "updated_at", "version"]
    show_columns = [*list_columns, "html_zh", "html_en", "created_at"]
    add_columns = COLUMNS
    edit_columns = [*COLUMNS, "version"]
    search_columns = ["name", "marketing", "active"]
    order_columns = ["id", "name", "updated_at"]

    def _refused(self, exc: TemplateError):
        db.session.rollback()
        return self.response(400, message="\n".join(exc.problems), problems=exc.problems)

    def _name_taken(self, name: str | None):
        db.session.rollback()
        message = gettext("name: %(name)s is used by another template", name=name)
        return self.response(400, message=message, problems=[message])

    def post_headless(self):
        """Create a template; refused with 400 and every problem (part, line, column) when it breaks a rule."""
        if not request.is_json:
            return self.response_400(message=gettext("Send the template as JSON."))
        try:
            item = self.add_model_schema.load(request.json)
        except SchemaError as err:
            return self.response_422(message=err.messages)
        try:
            _save_check(item)
            db.session.add(item)
            db.session.commit()
        except TemplateError as exc:
            return self._refused(exc)
        except IntegrityError:
            return self._name_taken(item.name)
        return self.response(201, id=item.id, result=self.show_model_schema.dump(item))

    def put_headless(self, pk):
        """Change a template (send `version` to be told when someone else changed it meanwhile)."""
        item = self.datamodel.get(pk, self._base_filters)
        if item is None:
            return self.response_404()
        if not request.is_json:
            return self.response_400(message=gettext("Send the template as JSON."))
        try:
            with db.session.no_autoflush:
                item = self.edit_model_schema.load(self._merge_update_item(item, request.json), instance=item)
                _check_version(item)
                _save_check(item)
            db.session.commit()
        except SchemaError as err:
            db.session.rollback()
            return self.response_422(message=err.messages)
        except BadRequest as exc:
            db.session.rollback()
            return self.response_400(message=exc.description)
        except TemplateError as exc:
            return self._refused(exc)
        except IntegrityError:
            return self._name_taken(item.name)
        return self.response(200, result=self.show_model_schema.dump(item))

    @expose("/<int:pk>/preview", methods=["POST"])
    @protect()
    @safe
    def preview(self, pk):
        """The template filled in for a lead (`{"lead_id": 7, "language": "en"}`; language optional: the
        lead's own).
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: "subject, html, text and the language of the version used"}
            400: {description: no lead_id, or the template cannot be filled in}
            404: {description: no such template, or no such lead (or not yours)}
        """
        template = db.session.get(EmailTemplate, pk)
        if template is None:
            return self.response_404()
        body = request.get_json(silent=True)
        lead_id = body.get("lead_id") if isinstance(body, dict) else None
        if not isinstance(lead_id, int) or isinstance(lead_id, bool):
            return self.response_400(message=gettext("lead_id: give the id of a lead"))
        lead = visible_record(Lead, lead_id, g.user, db.session)
        if lead is None:
            return self.response_404()
        language = body.get("language")
        try:
            rendered = render_for_lead(db.session, template, lead,
                                       language=str(language)[:10] if language else None)
        except TemplateError as exc:
            return self.response(400, message="\n".join(exc.problems), problems=exc.problems)
        return self.response(200, subject=rendered.subject, html=rendered.html, text=rendered.text,
                             language=rendered.language)


def register(appbuilder) -> None:
    """Add the e-mail template screen (menu CRM) and its REST API."""
    appbuilder.add_view(EmailTemplateView, PERMISSION, label=_l("E-mail templates"), icon="fa-file-text-o",
                        category="CRM", category_label=_l("CRM"))
    appbuilder.add_api(CrmEmailTemplateApi)


__all__ = ["CrmEmailTemplateApi", "EmailTemplateView", "register", "send_test_mail"]
