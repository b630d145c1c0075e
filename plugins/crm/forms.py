"""Screens for records with custom fields: the add and edit forms grow a field per active custom field
(read at each request, so a field an admin adds appears at once), validated like the API and import."""
from __future__ import annotations

import json

from flask import flash, g, has_request_context, request, url_for
from flask_appbuilder import expose, has_access
from flask_appbuilder.fieldwidgets import (
    BS3TextFieldWidget,
    DatePickerWidget,
    Select2ManyWidget,
    Select2Widget,
)
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import InputRequired, Optional, ValidationError

from bigledger_core.db import db

from .i18n import option_label
from .services import convert_custom, custom_fields, field_label

PREFIX = "custom__"


class _Checks:
    """WTForms validator running the same conversion the API and import use."""

    def __init__(self, definition):
        self.definition = definition

    def __call__(self, form, field):
        if field.data in (None, "", []):
            return
        try:
            convert_custom(self.definition, field.data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def _field(definition):
    label = field_label(definition)
    checks = [InputRequired(message=gettext("is required")) if definition.required and definition.type != "boolean"
              else Optional(), _Checks(definition)]
    choices = [(str(o.get("value")), option_label(o)) for o in (definition.options or [])]
    if definition.type == "date":
        return DateField(label, validators=checks, widget=DatePickerWidget())
    if definition.type == "boolean":
        return BooleanField(label, validators=[Optional()])
    if definition.type == "select":
        return SelectField(label, choices=[("", "—"), *choices], validators=checks, widget=Select2Widget())
    if definition.type == "multiselect":
        return SelectMultipleField(label, choices=choices, validators=checks, widget=Select2ManyWidget())
    return StringField(label, validators=checks, widget=BS3TextFieldWidget(),
                       description=definition.pattern and _l("Format: %(pattern)s", pattern=definition.pattern))


class CustomFieldsFormMixin:
    """Mix into a ModelView whose model has a `custom` JSON column; set `custom_entity`."""

    custom_entity = "contact"

    def __init_subclass__(cls, **kwargs):
        """Column lists a view declares become the base the properties below extend."""
        super().__init_subclass__(**kwargs)
        for name in ("add_columns", "edit_columns"):
            if name in cls.__dict__ and not isinstance(cls.__dict__[name], property):
                setattr(cls, f"_declared_{name}", cls.__dict__[name])
                delattr(cls, name)

    def __init__(self, *args, **kwargs):
        self.__dict__["_add_columns"] = list(getattr(self, "_declared_add_columns", []))
        self.__dict__["_edit_columns"] = list(getattr(self, "_declared_edit_columns", []))
        super().__init__(*args, **kwargs)

    def _with_custom(self, base):
        if base is None or not has_request_context():
            return base
        definitions = custom_fields(db.session, self.custom_entity)
        if not definitions:
            return base
        attrs = {f"{PREFIX}{d.key}": _field(d) for d in definitions}
        return type(f"{base.__name__}WithCustom", (base,), attrs)

    @property
    def add_form(self):
        return self._with_custom(self.__dict__.get("_add_form"))

    @add_form.setter
    def add_form(self, value):
        self.__dict__["_add_form"] = value

    @property
    def edit_form(self):
        return self._with_custom(self.__dict__.get("_edit_form"))

    @edit_form.setter
    def edit_form(self, value):
        self.__dict__["_edit_form"] = value

    @property
    def add_columns(self):
        return self._columns_with_custom(self.__dict__.get("_add_columns", []))

    @add_columns.setter
    def add_columns(self, value):
        self.__dict__["_add_columns"] = value

    @property
    def edit_columns(self):
        return self._columns_with_custom(self.__dict__.get("_edit_columns", []))

    @edit_columns.setter
    def edit_columns(self, value):
        self.__dict__["_edit_columns"] = value

    def _columns_with_custom(self, columns):
        if not has_request_context():  # FAB builds the view at start-up, before any field may exist
            return columns
        extra = [f"{PREFIX}{d.key}" for d in custom_fields(db.session, self.custom_entity)]
        return [*columns, *[c for c in extra if c not in columns]]

    def prefill_form(self, form, pk):
        item = self.datamodel.get(pk)
        for name, field in form._fields.items():
            if name.startswith(PREFIX):
                value = (item.custom or {}).get(name[len(PREFIX):])
                if field.type == "DateField" and value:
                    import datetime as dt

                    value = dt.date.fromisoformat(value)
                field.data = value

    def _custom_from_form(self, item):
        from .services import CrmValidationError, clean_custom

        values = {}
        for definition in custom_fields(db.session, self.custom_entity):
            key = f"{PREFIX}{definition.key}"
            if definition.type == "multiselect":
                values[definition.key] = request.form.getlist(key)
            elif definition.type == "boolean":
                values[definition.key] = "1" if request.form.get(key) else "0"
            else:
                values[definition.key] = request.form.get(key, "")
        kept = {k: v for k, v in (item.custom or {}).items() if k not in values}
        try:
            item.custom = {**kept, **clean_custom(db.session, self.custom_entity, values)}
        except CrmValidationError as exc:
            raise ValueError(str(exc)) from None

    def pre_add(self, item):
        self._custom_from_form(item)
        super().pre_add(item)

    def pre_update(self, item):
        self._custom_from_form(item)
        super_pre_update = getattr(super(), "pre_update", None)
        if super_pre_update:
            super_pre_update(item)

    def _warn_duplicates(self, item):
        from .normalize import InvalidValue, normalize_email, parse_phone
        from .queries import likely_duplicates
        from .services import phone_region

        emails, phones = [], []
        for email in item.emails:
            try:
                emails.append(normalize_email(email.address))
            except InvalidValue:
                pass
        for phone in item.phones:
            try:
                phones.append(parse_phone(phone.raw, phone_region()))
            except InvalidValue:
                pass
        name = getattr(item, "full_name", None) or getattr(item, "name", None)
        company_ids = [link.company_id for link in getattr(item, "links", [])] if self.custom_entity == "contact" \
            else []
        found = likely_duplicates(db.session, self.custom_entity, emails=emails, phones=phones, name=name,
                                  company_ids=company_ids, exclude_id=item.id, user=g.user)
        if self.custom_entity == "company":  # same name is enough for companies
            found = [d for d in found if d["id"] != item.id]
        if found:
            flash(json.dumps({"text": gettext("Possible duplicates, please check:"), "links": [
                [d["name"], url_for("CustomerView.show", kind=self.custom_entity, pk=d["id"])] for d in found]}),
                "links")

    def post_add(self, item):
        self._warn_duplicates(item)

    def post_update(self, item):
        self._warn_duplicates(item)


class ListExportMixin:
    """CSV and Excel export of a list with the filters and order it currently shows.

    Contacts and companies export in the import format (details, tags, custom fields); other lists
    export their list columns as shown.
    """

    list_template = "crm/list.html"
    export_name = "export"

    def render_template(self, template, **kwargs):
        return super().render_template(template, view_name=type(self).__name__, **kwargs)

    def _rows_and_columns(self, statement):
        from .exporter import company_rows, contact_rows, export_columns

        entity = getattr(self, "custom_entity", None)
        if entity in {"contact", "company"}:
            rows = (contact_rows if entity == "contact" else company_rows)(db.session, statement)
            return rows, export_columns(db.session, entity)
        from sqlalchemy import inspect as inspect_model
        from sqlalchemy.orm import selectinload

        columns = [(c, str(self.label_columns.get(c, c))) for c in self.list_columns]
        model = self.datamodel.obj
        related = inspect_model(model).relationships
        options = [selectinload(getattr(model, c)) for c, _label in columns if c in related]  # no query per row

        def rows():
            ids = [row[0] for row in db.session.execute(statement)]
            for start in range(0, len(ids), 1000):
                chunk = ids[start:start + 1000]
                found = {r.id: r for r in db.session.query(model).options(*options).filter(model.id.in_(chunk))}
                for pk in chunk:
                    record = found[pk]
                    yield {c: _plain(getattr(record, c, None)) for c, _label in columns}

        return rows(), columns

    @expose("/export/<fmt>")
    @has_access
    def export(self, fmt):
        from flask import abort
        from flask_appbuilder.urltools import get_filter_args, get_order_args

        if fmt not in {"csv", "xlsx"}:
            abort(404)
        get_filter_args(self._filters, disallow_if_not_in_search=False)
        filters = self._base_filters.get_joined_filters(self._filters)
        order_column, order_direction = get_order_args().get(type(self).__name__, ("", ""))
        if not order_column and self.base_order:
            order_column, order_direction = self.base_order
        model = self.datamodel.obj
        query = self.datamodel.apply_all(db.session.query(model.id), filters, order_column or "id",
                                         order_direction or "asc")
        rows, columns = self._rows_and_columns(query.statement)
        return send_table(rows, columns, fmt, self.export_name)


def send_table(rows, columns, fmt: str, name: str):
    """A download of `rows` as CSV or Excel (`fmt`), named `<name>-<today>.<fmt>`; large files spill to disk."""
    import datetime as dt
    import tempfile

    from flask import send_file

    from .exporter import export_table

    out = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
    export_table(rows, columns, fmt, out)
    out.seek(0)
    mimetype = "text/csv" if fmt == "csv" else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return send_file(out, mimetype=mimetype, as_attachment=True,
                     download_name=f"{name}-{dt.date.today().isoformat()}.{fmt}")


def _plain(value):
    """A cell for a list export: dates as ISO text, related records by their name."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
