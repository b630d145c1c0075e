"""CRM screens and REST API: companies, contacts and their details, activities, tags, custom fields,
search, duplicates and the 360° customer view."""
from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    request,
    send_file,
    url_for,
)
from flask_appbuilder import BaseView, ModelRestApi, ModelView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import joinedload
from werkzeug.exceptions import BadRequest, NotFound
from wtforms import BooleanField, SelectField
from wtforms.validators import Optional

from bigledger_core.db import db
from bigledger_core.i18n import current_locale
from bigledger_core.lists import CappedCountApiMixin, CappedCountInterface
from bigledger_core.security import OwnedRecordsMixin, visibility_clause, visible_record

from .documents import path_for, store
from .filters import CrmInterface
from .forms import CustomFieldsFormMixin, ListExportMixin
from .models import (
    ACTIVITY_KINDS,
    Activity,
    Address,
    Company,
    Contact,
    ContactCompany,
    ContactRole,
    CustomField,
    Document,
    Email,
    Phone,
    Tag,
)
from .queries import KINDS, SearchTimeout, customer_360, likely_duplicates, search
from .services import CrmValidationError, check_parent, clean_custom

LABELS = {
    "name": _l("Name"), "name_en": _l("English name"), "legal_name": _l("Legal name"), "industry": _l("Industry"),
    "employees": _l("Employees"), "region": _l("Region"), "website": _l("Website"), "status": _l("Status"),
    "parent": _l("Parent company"), "owner": _l("Owner"), "team": _l("Team"), "tags": _l("Tags"),
    "full_name": _l("Name"), "family_name": _l("Family name"), "given_name": _l("Given name"), "title": _l("Title"),
    "external_id": _l("External id"), "custom": _l("Custom fields"), "contact": _l("Contact"),
    "company": _l("Company"), "role": _l("Role"), "is_primary": _l("Primary"), "kind": _l("Type"),
    "raw": _l("Number"), "e164": _l("International format"), "address": _l("E-mail"), "country": _l("Country"),
    "province": _l("Province"), "city": _l("City"), "district": _l("District"), "street": _l("Street"),
    "postcode": _l("Postcode"), "subject": _l("Subject"), "body": _l("Notes"), "outcome": _l("Outcome"),
    "duration_minutes": _l("Duration (minutes)"), "occurred_at": _l("When"), "due_at": _l("Due"),
    "done": _l("Done"), "user": _l("By"), "color": _l("Colour"), "code": _l("Code"), "label": _l("Label"),
    "label_en": _l("English label"), "type": _l("Type"), "required": _l("Required"),
    "pattern": _l("Validation pattern"), "options": _l("Choices"), "position": _l("Position"), "active": _l("Active"),
    "entity": _l("Record type"), "key": _l("Key"), "created_at": _l("Created"), "updated_at": _l("Updated"),
    "parent_id": _l("Parent company"), "owner_id": _l("Owner"), "team_id": _l("Team"),
}


KIND_LABELS = {"call": _l("Call"), "meeting": _l("Meeting"), "email": _l("E-mail"), "note": _l("Note"),
               "task": _l("Task")}
DEAL_STATUS_LABELS = {"open": _l("Open"), "won": _l("Won"), "lost": _l("Lost")}
LEAD_STATUS_LABELS = {"new": _l("New"), "working": _l("Working"), "nurturing": _l("Nurturing"),
                      "qualified": _l("Qualified"), "converted": _l("Converted"), "disqualified": _l("Disqualified")}
STATUS_LABELS = {"prospect": _l("Prospect"), "customer": _l("Customer"), "partner": _l("Partner"),
                 "inactive": _l("Inactive")}


class _RecordInterface(CappedCountInterface, CrmInterface):
    """Companies and contacts: custom-field filters, and a list count that stops at BIGLEDGER_LIST_COUNT_CAP."""


class FilterNotMerged(BaseFilter):
    """Hides records merged into another (they stay, for the audit trail and undo)."""

    name = _l("Not merged")
    arg_name = "notmerged"

    def apply(self, query, value):
        return query.filter(self.model.merged_into_id.is_(None))


class _NotMerged:
    base_filters = [*OwnedRecordsMixin.base_filters, ["merged_into_id", FilterNotMerged, lambda: None]]


def _check_version(item) -> None:
    """Optimistic locking for the API: a PUT that carries an older `version` is refused."""
    from sqlalchemy import inspect

    history = inspect(item).attrs.version.history
    if history.added and history.deleted and history.added[0] != history.deleted[0]:
        current = history.deleted[0]
        item.version = current
        raise BadRequest(str(_l("version: this record was changed by someone else since you loaded it "
                                "(now version %(version)s); reload it and try again", version=current)))


def _check_custom(entity: str, item) -> None:
    try:
        with db.session.no_autoflush:
            item.custom = clean_custom(db.session, entity, item.custom or {})
    except CrmValidationError as exc:
        raise BadRequest(str(exc)) from None


def _flags(*names: str) -> dict:
    """Yes/no fields that may be left unticked (FAB would make a NOT NULL boolean required)."""
    return {name: BooleanField(LABELS[name], validators=[Optional()]) for name in names}


def _choices(label, labels: dict) -> SelectField:
    return SelectField(label=label, choices=list(labels.items()), widget=Select2Widget())


class _DetailChecks:
    """Phones and e-mails are checked wherever they are written: a bad one is refused, naming it."""

    def _check_detail(self, item, refuse):
        from .services import clean_email, clean_phone

        try:
            if isinstance(item, Phone):
                item.raw, item.e164 = clean_phone(item.raw or "")
            elif isinstance(item, Email):
                item.address = clean_email(item.address or "")
        except CrmValidationError as exc:
            refuse(str(exc))
        if getattr(item, "contact_id", None) is None and getattr(item, "company_id", None) is None and \
                getattr(item, "contact", None) is None and getattr(item, "company", None) is None:
            refuse(str(_l("It belongs to a contact or a company: choose one.")))

    def pre_add(self, item):
        self._check_detail(item, self._refuse)

    def pre_update(self, item):
        self._check_detail(item, self._refuse)

    @staticmethod
    def _refuse(message):
        raise ValueError(message)


class _ApiDetailChecks(_DetailChecks):
    @staticmethod
    def _refuse(message):
        raise BadRequest(message)


# -- screens -------------------------------------------------------------------------------------------

class PhoneView(_DetailChecks, ModelView):
    datamodel = SQLAInterface(Phone)
    class_permission_name = "CrmContactDetails"
    list_columns = ["kind", "raw", "e164", "is_primary"]
    add_columns = edit_columns = ["contact", "company", "kind", "raw", "is_primary"]
    label_columns = LABELS
    add_form_extra_fields = edit_form_extra_fields = _flags("is_primary")


class EmailView(_DetailChecks, ModelView):
    datamodel = SQLAInterface(Email)
    class_permission_name = "CrmContactDetails"
    list_columns = ["kind", "address", "is_primary"]
    add_columns = edit_columns = ["contact", "company", "kind", "address", "is_primary"]
    label_columns = LABELS
    add_form_extra_fields = edit_form_extra_fields = _flags("is_primary")


class AddressView(ModelView):
    datamodel = SQLAInterface(Address)
    class_permission_name = "CrmContactDetails"
    list_columns = ["kind", "province", "city", "district", "street", "postcode", "is_primary"]
    add_columns = edit_columns = ["contact", "company", "kind", "country", "province", "city", "district",
                                  "street", "postcode", "is_primary"]
    label_columns = LABELS
    add_form_extra_fields = edit_form_extra_fields = _flags("is_primary")


class ContactCompanyView(ModelView):
    datamodel = SQLAInterface(ContactCompany)
    class_permission_name = "CrmContactDetails"
    list_columns = ["contact", "company", "role", "is_primary"]
    add_columns = edit_columns = ["contact", "company", "role", "is_primary"]
    label_columns = LABELS
    add_form_extra_fields = edit_form_extra_fields = _flags("is_primary")


class ActivityView(ListExportMixin, ModelView):
    export_name = "activities"
    datamodel = SQLAInterface(Activity)
    class_permission_name = "CrmActivity"
    list_title = _l("Activities")
    list_columns = ["occurred_at", "kind", "subject", "contact", "company", "user", "outcome"]
    add_columns = edit_columns = ["kind", "subject", "body", "contact", "company", "occurred_at",
                                  "duration_minutes", "outcome", "due_at", "done"]
    search_columns = ["kind", "subject", "contact", "company", "user", "occurred_at", "done"]
    base_order = ("occurred_at", "desc")
    label_columns = LABELS
    add_form_extra_fields = edit_form_extra_fields = {"kind": _choices(LABELS["kind"], KIND_LABELS), **_flags("done")}

    def pre_add(self, item):
        if item.contact is None and item.company is None:
            raise ValueError(str(_l("An activity belongs to a contact or a company.")))
        if item.user_id is None and getattr(g, "user", None) is not None:
            item.user_id = g.user.id


class CompanyView(ListExportMixin, CustomFieldsFormMixin, _NotMerged, OwnedRecordsMixin, ModelView):
    export_name = "companies"
    custom_entity = "company"
    datamodel = _RecordInterface(Company)
    class_permission_name = "CrmCompany"
    list_title = _l("Companies")
    show_title = _l("Company")
    add_title = _l("Add company")
    edit_title = _l("Edit company")
    list_columns = ["name", "industry", "region", "status", "parent", "owner"]
    add_columns = edit_columns = ["name", "name_en", "legal_name", "industry", "employees", "region", "website",
                                  "status", "parent", "external_id", "owner", "team", "tags"]
    show_columns = add_columns + ["created_at", "updated_at"]
    search_columns = ["name", "name_en", "industry", "region", "status", "parent", "owner", "team", "tags",
                      "external_id", "custom", "created_at"]
    order_columns = ["name", "industry", "region", "status"]
    label_columns = LABELS
    add_form_extra_fields = edit_form_extra_fields = {"status": _choices(LABELS["status"], STATUS_LABELS)}
    related_views = [ContactCompanyView, PhoneView, EmailView, AddressView, ActivityView]

    @expose("/360/<int:pk>")
    @has_access
    def customer(self, pk):
        return redirect(url_for("CustomerView.show", kind="company", pk=pk))


class ContactView(ListExportMixin, CustomFieldsFormMixin, _NotMerged, OwnedRecordsMixin, ModelView):
    export_name = "contacts"
    custom_entity = "contact"
    datamodel = _RecordInterface(Contact)
    class_permission_name = "CrmContact"
    list_title = _l("Contacts")
    show_title = _l("Contact")
    add_title = _l("Add contact")
    edit_title = _l("Edit contact")
    list_columns = ["full_name", "title", "name_en", "owner", "team"]
    add_columns = edit_columns = ["full_name", "family_name", "given_name", "name_en", "title", "external_id",
                                  "owner", "team", "tags"]
    show_columns = add_columns + ["created_at", "updated_at"]
    search_columns = ["full_name", "name_en", "title", "owner", "team", "tags", "external_id", "custom",
                      "created_at"]
    order_columns = ["full_name", "title"]
    label_columns = LABELS
    related_views = [ContactCompanyView, PhoneView, EmailView, AddressView, ActivityView]


class TagView(ListExportMixin, ModelView):
    export_name = "tags"
    datamodel = SQLAInterface(Tag)
    class_permission_name = "CrmTag"
    list_title = _l("Tags")
    list_columns = add_columns = edit_columns = ["name", "color"]
    label_columns = LABELS


class ContactRoleView(ModelView):
    datamodel = SQLAInterface(ContactRole)
    class_permission_name = "CrmSettingsRole"
    list_title = _l("Contact roles")
    list_columns = add_columns = edit_columns = ["code", "name", "name_en"]
    label_columns = LABELS


class CustomFieldView(ModelView):
    """Admins define fields without code or restart; they apply at once to forms, API and import."""

    datamodel = SQLAInterface(CustomField)
    class_permission_name = "CrmSettingsCustomField"
    list_title = _l("Custom fields")
    list_columns = ["entity", "key", "label", "label_en", "type", "required", "active"]
    add_columns = edit_columns = ["entity", "key", "label", "label_en", "type", "required", "pattern", "options",
                                  "position", "active"]
    label_columns = LABELS
    add_form_extra_fields = edit_form_extra_fields = _flags("required", "active")
    description_columns = {
        "entity": _l("contact, company or lead"),
        "type": _l("text, number, date, select, multiselect or boolean"),
        "options": _l('For select fields, a JSON list such as [{"value": "a", "label": "甲", "label_en": "A"}]'),
        "pattern": _l("A regular expression the whole value must match, e.g. ^[A-Z]{2}\\d{4}$"),
    }

    def pre_add(self, item):
        self._check(item)

    def pre_update(self, item):
        self._check(item)

    def _check(self, item):
        import re

        from .models import FIELD_TYPES

        if item.entity not in (*KINDS, "lead"):
            raise ValueError(str(_l("Record type must be contact, company or lead.")))
        if item.type not in FIELD_TYPES:
            raise ValueError(str(_l("Unknown field type %(type)s.", type=item.type)))
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,59}", item.key or ""):
            raise ValueError(str(_l("Key: lower-case letters, digits and _, starting with a letter.")))
        if item.pattern:
            try:
                re.compile(item.pattern)
            except re.error as exc:
                raise ValueError(str(_l("Validation pattern is not a valid regular expression: %(error)s",
                                        error=str(exc)))) from None


class CustomerView(BaseView):
    """The 360° page of a company or a contact."""

    route_base = "/crm/customer"
    class_permission_name = "CrmCustomer"
    method_permission_name = {"show": "show", "upload": "edit", "download": "show", "delete_document": "edit",
                              "merge": "merge"}
    base_permissions = ["can_show", "can_edit", "can_merge"]

    @expose("/<kind>/<int:pk>/merge", methods=["GET", "POST"])
    @has_access
    def merge(self, kind, pk):
        """Compare this record with another, choose field by field, and merge the other into this one."""
        from .merge import MERGEABLE, merge

        record = _visible_record(kind, pk)
        other_id = request.values.get("other", type=int)
        if other_id is None:
            abort(404)
        other = _visible_record(kind, other_id)
        if request.method == "POST":
            take = {field: "loser" for field in MERGEABLE[kind] if request.form.get(f"take_{field}") == "other"}
            try:
                merge(db.session, kind, record.id, other.id, take)
                db.session.commit()
            except CrmValidationError as exc:
                db.session.rollback()
                flash(str(exc), "danger")
                return redirect(url_for("CustomerView.show", kind=kind, pk=pk))
            flash(str(_l("%(other)s was merged into %(name)s.", other=str(other), name=str(record))), "success")
            return redirect(url_for("CustomerView.show", kind=kind, pk=pk))
        fields = [(f, LABELS.get(f.removesuffix("_id"), f), getattr(record, f), getattr(other, f))
                  for f in MERGEABLE[kind]]
        return self.render_template("crm/merge.html", kind=kind, record=record, other=other, fields=fields)

    @expose("/<kind>/<int:pk>")
    @has_access
    def show(self, kind, pk):
        record = _visible_record(kind, pk)
        chosen = [k for k in request.args.getlist("kind") if k]
        data = customer_360(db.session, kind, record, g.user, page=request.args.get("page", 1, type=int),
                            kinds=chosen, people_page=request.args.get("people_page", 1, type=int))
        return self.render_template("crm/customer.html", data=data, kind=kind, record=record,
                                    locale=current_locale(), kinds=ACTIVITY_KINDS, chosen=chosen,
                                    kind_labels=KIND_LABELS, status_labels=STATUS_LABELS,
                                    deal_status=DEAL_STATUS_LABELS, lead_status=LEAD_STATUS_LABELS,
                                    module_labels=[_module_label(name) for name in data["timeline"]["missing"]])

    @expose("/<kind>/<int:pk>/documents", methods=["POST"])
    @has_access
    def upload(self, kind, pk):
        record = _visible_record(kind, pk)
        files = request.files.getlist("file")
        if not files or not files[0].filename:
            flash(str(_l("Choose a file to upload.")), "warning")
        for upload in files:
            try:
                store(db.session, upload.stream, upload.filename, user_id=g.user.id,
                      **{f"{kind}_id": record.id})
                db.session.commit()
                flash(str(_l("%(name)s uploaded.", name=upload.filename)), "success")
            except CrmValidationError as exc:
                db.session.rollback()
                flash(str(exc), "danger")
        return redirect(url_for("CustomerView.show", kind=kind, pk=pk))

    @expose("/document/<int:pk>")
    @has_access
    def download(self, pk):
        return _send_document(_visible_document(pk))

    @expose("/document/<int:pk>/delete", methods=["POST"])
    @has_access
    def delete_document(self, pk):
        document = _visible_document(pk)
        kind, owner = ("contact", document.contact_id) if document.contact_id else ("company", document.company_id)
        db.session.delete(document)
        db.session.commit()
        flash(str(_l("%(name)s deleted.", name=document.filename)), "success")
        return redirect(url_for("CustomerView.show", kind=kind, pk=owner))


def _visible_document(pk: int) -> Document:
    document = db.session.get(Document, pk)
    if document is None:
        abort(404)
    _visible_record("contact" if document.contact_id else "company", document.contact_id or document.company_id)
    return document


def _send_document(document: Document):
    response = send_file(path_for(document.sha256), mimetype=document.content_type, as_attachment=True,
                         download_name=document.filename, max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _visible_record(kind: str, pk: int):
    model = KINDS.get(kind)
    if model is None:
        abort(404)
    record = visible_record(model, pk, getattr(g, "user", None), db.session)
    if record is None:
        abort(404)
    return record


# -- REST API ------------------------------------------------------------------------------------------

class _NullableColumns:
    """Nullable columns accept null in the API (a PUT re-sends the record's current values)."""

    def _init_model_schemas(self):
        super()._init_model_schemas()
        table = self.datamodel.obj.__table__
        for schema in (self.add_model_schema, self.edit_model_schema):
            for name, field in schema.fields.items():
                if name in table.c and table.c[name].nullable:
                    field.allow_none = True


class CompanyApi(CappedCountApiMixin, _NullableColumns, OwnedRecordsMixin, ModelRestApi):
    resource_name = "crm/company"
    datamodel = _RecordInterface(Company)
    class_permission_name = "CrmCompany"
    list_columns = ["id", "name", "name_en", "industry", "region", "status", "parent_id", "owner_id", "team_id",
                    "external_id", "custom", "version"]
    show_columns = list_columns + ["legal_name", "employees", "website", "created_at", "updated_at"]
    add_columns = ["name", "name_en", "legal_name", "industry", "employees", "region", "website",
                   "status", "parent_id", "external_id", "owner_id", "team_id", "custom"]
    edit_columns = [*add_columns, "version"]
    search_columns = ["name", "industry", "region", "status", "parent_id", "owner_id", "external_id", "custom"]
    order_columns = ["name", "id", "industry", "region"]
    base_filters = _NotMerged.base_filters

    def pre_add(self, item):
        _check_custom("company", item)
        super().pre_add(item)

    def pre_update(self, item):
        _check_version(item)
        if item.parent_id is not None:
            try:
                check_parent(db.session, item.id, item.parent_id)
            except CrmValidationError as exc:
                raise BadRequest(str(exc)) from None
        _check_custom("company", item)


class ContactApi(CappedCountApiMixin, _NullableColumns, OwnedRecordsMixin, ModelRestApi):
    resource_name = "crm/contact"
    datamodel = _RecordInterface(Contact)
    class_permission_name = "CrmContact"
    list_columns = ["id", "full_name", "family_name", "given_name", "name_en", "title", "owner_id", "team_id",
                    "external_id", "custom", "version"]
    show_columns = list_columns + ["created_at", "updated_at"]
    add_columns = ["full_name", "family_name", "given_name", "name_en", "title", "external_id",
                   "owner_id", "team_id", "custom"]
    edit_columns = [*add_columns, "version"]
    search_columns = ["full_name", "title", "owner_id", "external_id", "custom"]
    order_columns = ["full_name", "id"]
    base_filters = _NotMerged.base_filters

    def pre_add(self, item):
        if not (item.full_name or item.family_name or item.given_name):
            raise BadRequest(str(_l("full_name: a contact needs a name")))
        _check_custom("contact", item)
        super().pre_add(item)

    def pre_update(self, item):
        _check_version(item)
        _check_custom("contact", item)


def _detail_api(model, name: str):
    columns = [c.key for c in model.__table__.columns if c.key != "id"]
    bases = (_ApiDetailChecks, _NullableColumns, ModelRestApi) if model in (Phone, Email, Address) \
        else (_NullableColumns, ModelRestApi)
    return type(f"{model.__name__}Api", bases, {
        "resource_name": f"crm/{name}", "datamodel": SQLAInterface(model), "class_permission_name": "CrmContactDetails",
        "list_columns": ["id", *columns], "show_columns": ["id", *columns], "add_columns": columns,
        "edit_columns": columns, "search_columns": [c for c in ("contact_id", "company_id", "kind") if c in columns],
    })


PhoneApi = _detail_api(Phone, "phone")
EmailApi = _detail_api(Email, "email")
AddressApi = _detail_api(Address, "address")
ContactCompanyApi = _detail_api(ContactCompany, "contact_company")
ActivityApi = _detail_api(Activity, "activity")
ActivityApi.class_permission_name = "CrmActivity"
TagApi = _detail_api(Tag, "tag")
TagApi.class_permission_name = "CrmTag"


class CrmApi(BaseApi):
    """Search, duplicates and the 360° view as JSON."""

    resource_name = "crm"
    class_permission_name = "CrmCustomer"
    method_permission_name = {"search": "get", "customer": "get", "duplicates": "get", "merge": "merge"}
    openapi_spec_tag = "CRM"

    @expose("/search", methods=["GET"])
    @protect()
    @safe
    def search(self):
        """One search box across companies and contacts (name, pinyin, e-mail, phone, company).
        ---
        get:
          parameters:
          - {in: query, name: q, required: true, schema: {type: string}}
          - {in: query, name: limit, schema: {type: integer}}
          responses:
            200: {description: matching records}
            503: {description: the search ran past BIGLEDGER_SEARCH_TIMEOUT and was stopped}
        """
        q = (request.args.get("q") or "").strip()
        if not q:
            return self.response_400(message=str(_l("q: give something to search for")))
        if len(q) > 200:
            return self.response_400(message=str(_l("q: at most 200 characters")))
        limit = min(max(request.args.get("limit", 20, type=int), 1), 100)
        try:
            return self.response(200, result=search(db.session, q, g.user, limit))
        except SearchTimeout:
            return self.response(503, message=str(_l(
                "q: this search took too long and was stopped; type more of the name, e-mail or phone number "
                "and try again")))

    @expose("/duplicates/<kind>", methods=["GET"])
    @protect()
    @safe
    def duplicates(self, kind):
        """Likely duplicates of the values given (email, phone, name, company_id, exclude_id).
        ---
        get:
          responses:
            200: {description: likely duplicates with the reasons}
        """
        from .normalize import InvalidValue, normalize_email, parse_phone
        from .services import phone_region

        if kind not in KINDS:
            return self.response_404()
        emails, phones = [], []
        for raw in request.args.getlist("email"):
            try:
                emails.append(normalize_email(raw))
            except InvalidValue:
                pass
        for raw in request.args.getlist("phone"):
            try:
                phones.append(parse_phone(raw, phone_region()))
            except InvalidValue:
                pass
        result = likely_duplicates(db.session, kind, emails=emails, phones=phones, name=request.args.get("name"),
                                   company_ids=request.args.getlist("company_id", type=int),
                                   exclude_id=request.args.get("exclude_id", type=int), user=g.user)
        return self.response(200, result=result)

    @expose("/merge/<kind>", methods=["POST"])
    @protect()
    @safe
    def merge(self, kind):
        """Merge two contacts or two companies: {"survivor_id", "loser_id", "take": {field: "loser"}}.
        ---
        post:
          responses:
            200: {description: merged; the loser is kept, marked as merged into the survivor}
            400: {description: refused, with the reason}
        """
        if kind not in KINDS:
            return self.response_404()
        return _merge_endpoint(self, kind)

    @expose("/customer/<kind>/<int:pk>/360", methods=["GET"])
    @protect()
    @safe
    def customer(self, kind, pk):
        """The 360° view of a company or contact.
        ---
        get:
          responses:
            200: {description: profile, hierarchy, people, details, timeline, documents, panels}
            404: {description: no such record, or not yours to see}
        """
        model = KINDS.get(kind)
        if model is None:
            return self.response_404()
        query = db.session.query(model).filter(model.id == pk).options(  # the profile shows both
            joinedload(model.owner), joinedload(model.team))
        clause = visibility_clause(model, g.user, db.session)
        record = (query.filter(clause) if clause is not None else query).one_or_none()
        if record is None:
            return self.response_404()
        kinds = [k for k in request.args.getlist("kind") if k]
        return self.response(200, result=customer_360(
            db.session, kind, record, g.user, page=request.args.get("page", 1, type=int), kinds=kinds,
            people_page=request.args.get("people_page", 1, type=int)))


def _module_label(name: str) -> str:
    manifest = current_app.extensions["bigledger"].manifests.get(name)
    return manifest.label_for(current_locale()) if manifest else name


blueprint = Blueprint("crm_assets", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/static/crm_assets")


def _merge_endpoint(api, kind):
    from .merge import merge

    body = request.get_json(silent=True) or {}
    survivor, loser = body.get("survivor_id"), body.get("loser_id")
    if not isinstance(survivor, int) or not isinstance(loser, int):
        return api.response_400(message=str(_l("survivor_id and loser_id: give the ids of two records")))
    for pk in (survivor, loser):
        model = KINDS[kind]
        clause = visibility_clause(model, g.user, db.session)
        query = db.session.query(model.id).filter(model.id == pk)
        if (query.filter(clause) if clause is not None else query).one_or_none() is None:
            return api.response_404()
    try:
        merge(db.session, kind, survivor, loser, body.get("take") or {})
        db.session.commit()
    except CrmValidationError as exc:
        db.session.rollback()
        return api.response_400(message=str(exc))
    return api.response(200, result={"survivor_id": survivor, "merged": [loser]})


class DocumentApi(BaseApi):
    """Upload, download and delete documents of a contact or company."""

    resource_name = "crm/document"
    class_permission_name = "CrmDocument"
    method_permission_name = {"upload": "post", "download": "get", "delete": "post"}
    openapi_spec_tag = "CRM"

    @expose("/<kind>/<int:pk>", methods=["POST"])
    @protect()
    @safe
    def upload(self, kind, pk):
        """Upload one file (multipart field `file`) to a contact or company.
        ---
        post:
          responses:
            201: {description: the stored document}
            400: {description: refused type, size or empty file}
            404: {description: no such record, or not yours to see}
        """
        if kind not in KINDS:
            return self.response_404()
        try:
            record = _visible_record(kind, pk)
        except NotFound:
            return self.response_404()
        upload = request.files.get("file")
        if upload is None:
            return self.response_400(message=str(_l("file: send the file as multipart field 'file'")))
        try:
            document = store(db.session, upload.stream, upload.filename or "", user_id=g.user.id,
                             **{f"{kind}_id": record.id})
            db.session.commit()
        except CrmValidationError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(201, id=document.id, filename=document.filename, size=document.size,
                             sha256=document.sha256)

    @expose("/<int:pk>/download", methods=["GET"])
    @protect()
    @safe
    def download(self, pk):
        """The document's file, if its contact or company is yours to see.
        ---
        get:
          responses:
            200: {description: the file}
            404: {description: no such document, or not yours to see}
        """
        try:
            return _send_document(_visible_document(pk))
        except NotFound:
            return self.response_404()

    @expose("/<int:pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk):
        """Delete a document (its file goes when no other document uses the same content).
        ---
        delete:
          responses:
            200: {description: deleted}
            404: {description: no such document, or not yours to see}
        """
        try:
            document = _visible_document(pk)
        except NotFound:
            return self.response_404()
        db.session.delete(document)
        db.session.commit()
        return self.response(200, message="OK")


def register(appbuilder) -> None:
    """Add the CRM's screens and APIs (called by the plugin's `bigledger_register_views`)."""
    current_app.register_blueprint(blueprint)
    category = {"category": "CRM", "category_label": _l("CRM")}
    appbuilder.add_view(CompanyView, "CrmCompany", label=_l("Companies"), icon="fa-building", **category)
    appbuilder.add_view(ContactView, "CrmContact", label=_l("Contacts"), icon="fa-address-book", **category)
    appbuilder.add_view(ActivityView, "CrmActivity", label=_l("Activities"), icon="fa-calendar", **category)
    appbuilder.add_view(TagView, "CrmTag", label=_l("Tags"), icon="fa-tags", **category)
    appbuilder.add_view(CustomFieldView, "CrmSettingsCustomField", label=_l("Custom fields"), icon="fa-sliders", **category)
    appbuilder.add_view(ContactRoleView, "CrmSettingsRole", label=_l("Contact roles"), icon="fa-id-badge", **category)
    from .segment_views import (
        SegmentApi,
        SegmentMembersApi,
        SegmentMembersView,
        SegmentView,
    )

    appbuilder.add_view(SegmentView, "CrmSegment", label=_l("Segments"), icon="fa-filter", **category)
    for view in (PhoneView, EmailView, AddressView, ContactCompanyView, CustomerView, SegmentMembersView):
        appbuilder.add_view_no_menu(view)
    for api in (CompanyApi, ContactApi, PhoneApi, EmailApi, AddressApi, ContactCompanyApi, ActivityApi, TagApi,
                CrmApi, DocumentApi, SegmentApi, SegmentMembersApi):
        appbuilder.add_api(api)
