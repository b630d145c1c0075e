"""Segment screens and REST API: saved filters with their live member counts and member lists."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from flask import abort, current_app, g, redirect, request, url_for
from flask_appbuilder import BaseView, ModelRestApi, ModelView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape
from werkzeug.exceptions import BadRequest
from werkzeug.routing import BuildError
from wtforms import SelectField, TextAreaField
from wtforms.validators import DataRequired, InputRequired
from wtforms.widgets import TextArea

from bigledger_core.db import db
from bigledger_core.i18n import current_locale
from bigledger_core.security import OwnedRecordsMixin, visibility_clause

from .exporter import company_rows, contact_rows, export_columns
from .forms import send_table
from .models import Contact, Segment
from .segments import (
    ENTITIES,
    field_reference,
    member_count,
    member_counts,
    member_ids,
    members,
    validate_definition,
)
from .services import CrmValidationError
from .views import LABELS, _NullableColumns

ENTITY_LABELS = {"contact": _l("Contacts"), "company": _l("Companies")}
PER_PAGE = 50
MAX_PER_PAGE = 200
EXAMPLE = '{"match": "all", "rules": [{"field": "tag", "op": "has", "value": "VIP"}, ' \
          '{"field": "last_activity", "op": "not_within_days", "value": 90}]}'

SEGMENT_LABELS = {**LABELS, "entity": _l("Record type"), "definition": _l("Definition"),
                  "member_count": _l("Members")}


class _JSONTextArea(TextArea):
    def __call__(self, field, **kwargs):
        kwargs.update({"class": "form-control", "rows": 12, "spellcheck": "false",
                       "style": "font-family: monospace"})
        return super().__call__(field, **kwargs)


class DefinitionField(TextAreaField):
    """A segment definition edited as JSON text; holds the parsed object."""

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        if isinstance(self.data, (dict, list)):
            return json.dumps(self.data, ensure_ascii=False, indent=2)
        return self.data or ""

    def process_formdata(self, valuelist: list[Any]) -> None:
        if not valuelist:
            return
        text = (valuelist[0] or "").strip()
        self.data = None
        if not text:
            return
        try:
            self.data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(gettext("This is not valid JSON (line %(line)s, column %(column)s).",
                                     line=exc.lineno, column=exc.colno)) from None


FIELD_LABELS = {**LABELS, "company": _l("Company"), "city": _l("City"), "province": _l("Province"),
                "email_domain": _l("E-mail domain"), "created_at": _l("Created"), "tag": _l("Tag"),
                "last_activity": _l("Last activity (days)")}


def _label(row: dict[str, Any], locale: str) -> str:
    if row["label"]:
        return row["label"].get(locale) or row["label"].get("en") or row["field"]
    return str(FIELD_LABELS.get(row["field"], row["field"]))


def _source(name: str, locale: str) -> str:
    if name == "crm":
        return gettext("CRM")
    if name == "custom":
        return gettext("Custom field")
    manifest = current_app.extensions["bigledger"].manifests.get(name)
    return manifest.label_for(locale) if manifest is not None else name


class FieldReference:
    """The definition's help on the segment form: an example, then every field rules may use for each record
    type (standard, custom, and those enabled modules contribute), read when the form is shown."""

    def __html__(self) -> str:
        locale = current_locale()
        parts = [Markup("{}<details class='bl-segment-fields'><summary>{}</summary>").format(
            gettext("Rules as JSON, for example %(example)s", example=EXAMPLE), gettext("Fields rules may use"))]
        for entity, title in ENTITY_LABELS.items():
            parts.append(Markup("<h5>{}</h5><table class='table table-condensed' data-entity='{}'><tr><th>{}</th>"
                                "<th>{}</th><th>{}</th><th>{}</th></tr>").format(
                title, entity, gettext("Field"), gettext("Meaning"), gettext("Operators"), gettext("From")))
            for row in field_reference(db.session, entity):
                parts.append(Markup("<tr data-field='{}' data-source='{}'><td><code>{}</code></td><td>{}</td>"
                                    "<td>{}</td><td>{}</td></tr>").format(
                    row["field"], row["source"], row["field"], _label(row, locale), ", ".join(row["ops"]),
                    _source(row["source"], locale)))
            parts.append(Markup("</table>"))
        parts.append(Markup("</details>"))
        return str(Markup("").join(parts))

    def __str__(self) -> str:
        return gettext("Rules as JSON, for example %(example)s", example=EXAMPLE)


def _form_fields() -> dict[str, Any]:
    return {
        "entity": SelectField(_l("Record type"), choices=[(k, v) for k, v in ENTITY_LABELS.items()],
                              validators=[DataRequired()], widget=Select2Widget()),
        "definition": DefinitionField(_l("Definition"), validators=[InputRequired()], widget=_JSONTextArea(),
                                      description=FieldReference()),
    }


def _pretty(definition: Any) -> Markup:
    return Markup("<pre>{}</pre>").format(json.dumps(definition, ensure_ascii=False, indent=2))


def _entity_label(entity: str) -> str:
    return str(ENTITY_LABELS.get(entity, entity))


@dataclass(frozen=True)
class MemberCount:
    """A segment's live member count in a list, linked to its members."""

    segment_id: int
    count: int | None

    def __str__(self) -> str:
        return "—" if self.count is None else str(self.count)

    def __html__(self) -> str:
        if self.count is None:
            return str(Markup('<span class="text-danger" title="{}">—</span>').format(
                gettext("This segment's definition no longer works; edit it.")))
        try:
            url = url_for("SegmentMembersView.members", pk=self.segment_id)
        except BuildError:
            return str(escape(self))
        return str(Markup('<a href="{}" class="bl-segment-count">{}</a>').format(url, self.count))


class _SegmentInterface(SQLAInterface):
    """Adds `member_count` to the segments of a list page, counted in one query."""

    def get_values(self, lst, list_columns):
        lst = list(lst)
        if "member_count" in list_columns and lst:
            counts = member_counts(self.session, lst, getattr(g, "user", None))
            for segment in lst:
                segment.member_count = MemberCount(segment.id, counts.get(segment.id))
        return super().get_values(lst, list_columns)


def _validated(item: Segment) -> None:
    """Check the definition against the record type and store it normalized (CrmValidationError)."""
    with db.session.no_autoflush:
        item.definition = validate_definition(db.session, item.entity, item.definition)


def _visible_segment(pk: int) -> Segment | None:
    query = db.session.query(Segment).filter(Segment.id == pk)
    clause = visibility_clause(Segment, getattr(g, "user", None), db.session)
    return (query.filter(clause) if clause is not None else query).one_or_none()


def _paging() -> tuple[int, int]:
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    per_page = min(max(request.args.get("per_page", PER_PAGE, type=int) or PER_PAGE, 1), MAX_PER_PAGE)
    return page, per_page


def _name(record) -> str:
    return record.full_name if isinstance(record, Contact) else record.name


# -- screens -------------------------------------------------------------------------------------------

class _CheckedDefinition:
    """A segment's definition is validated (and normalized) before it is saved, by screen or API."""

    refusal: type[Exception] = ValueError

    def pre_add(self, item: Segment) -> None:
        self._check(item)
        super().pre_add(item)

    def pre_update(self, item: Segment) -> None:
        self._check(item)

    def _check(self, item: Segment) -> None:
        try:
            _validated(item)
        except CrmValidationError as exc:
            raise self.refusal(str(exc)) from None


class SegmentView(_CheckedDefinition, OwnedRecordsMixin, ModelView):
    """Saved filters over contacts or companies; the list shows how many records each holds now."""

    datamodel = _SegmentInterface(Segment)
    class_permission_name = "CrmSegment"
    list_title = _l("Segments")
    show_title = _l("Segment")
    add_title = _l("Add segment")
    edit_title = _l("Edit segment")
    list_columns = ["name", "entity", "member_count", "owner"]
    add_columns = edit_columns = ["name", "entity", "definition", "owner", "team"]
    show_columns = ["name", "entity", "definition", "owner", "team"]
    search_columns = ["name", "entity", "owner", "team"]
    order_columns = ["name", "entity"]
    base_order = ("name", "asc")
    label_columns = SEGMENT_LABELS
    formatters_columns = {"definition": _pretty, "entity": _entity_label}
    add_form_extra_fields = edit_form_extra_fields = _form_fields()

    refusal = ValueError  # shown by FAB as a message on the form


class SegmentMembersView(BaseView):
    """The records a segment holds now, one page at a time."""

    route_base = "/crm/segment"
    class_permission_name = "CrmSegment"
    method_permission_name = {"members": "list", "export": "list"}
    base_permissions = ["can_list"]

    @expose("/<int:pk>/members")
    @has_access
    def members(self, pk: int):
        segment = _visible_segment(pk)
        if segment is None:
            abort(404)
        page, per_page = _paging()
        values: dict[str, Any] = {"segment": segment, "entity_label": _entity_label(segment.entity),
                                  "kind": segment.entity, "page": page, "per_page": per_page, "records": [],
                                  "count": 0, "pages": 0, "error": None}
        try:
            values["count"] = member_count(db.session, segment, g.user)
            values["records"] = members(db.session, segment, g.user, page, per_page)
        except CrmValidationError as exc:
            values["error"] = str(exc)
        values["pages"] = math.ceil(values["count"] / per_page)
        return self.render_template("crm/segment_members.html", **values)

    @expose("/<int:pk>/members/export/<fmt>")
    @has_access
    def export(self, pk: int, fmt: str):
        """Every member the user may see, as CSV or Excel in the import format (details, tags, custom
        fields), so the file can be worked on and imported back."""
        segment = _visible_segment(pk)
        if segment is None or fmt not in {"csv", "xlsx"}:
            abort(404)
        try:
            ids = member_ids(db.session, segment, g.user)
        except CrmValidationError:  # the members page says what is wrong with the definition
            return redirect(url_for("SegmentMembersView.members", pk=pk))
        rows = (contact_rows if segment.entity == "contact" else company_rows)(db.session, ids)
        return send_table(rows, export_columns(db.session, segment.entity), fmt, f"segment-{segment.id}")


# -- REST API ------------------------------------------------------------------------------------------

class SegmentApi(_CheckedDefinition, _NullableColumns, OwnedRecordsMixin, ModelRestApi):
    resource_name = "crm/segment"
    datamodel = SQLAInterface(Segment)
    class_permission_name = "CrmSegment"
    list_columns = show_columns = ["id", "name", "entity", "definition", "owner_id", "team_id"]
    add_columns = edit_columns = ["name", "entity", "definition", "owner_id", "team_id"]
    search_columns = ["name", "entity", "owner_id", "team_id"]
    order_columns = ["name", "id"]
    openapi_spec_tag = "CRM"
    method_permission_name = {"get_list": "get", "get": "get", "post": "post", "put": "put", "delete": "delete",
                              "info": "info", "fields": "get"}

    refusal = BadRequest  # answered 400 with the reasons

    @expose("/fields", methods=["GET"])
    @protect()
    @safe
    def fields(self):
        """The fields segment rules may use for a record type: standard, custom and contributed by modules.
        ---
        get:
          parameters:
          - {in: query, name: entity, required: true, schema: {type: string, enum: [contact, company]}}
          responses:
            200: {description: "`result`: field, ops, source (crm, custom or a module), label"}
            400: {description: unknown record type}
        """
        entity = request.args.get("entity", "contact")
        if entity not in ENTITIES:
            return self.response_400(message=gettext("entity: must be contact or company"))
        return self.response(200, entity=entity, result=field_reference(db.session, entity))


class SegmentMembersApi(BaseApi):
    """A segment's members as JSON."""

    resource_name = "crm/segment_members"
    class_permission_name = "CrmSegment"
    method_permission_name = {"members": "get"}
    openapi_spec_tag = "CRM"

    @expose("/<int:pk>", methods=["GET"])
    @protect()
    @safe
    def members(self, pk: int):
        """The records a segment holds now that the caller may see.
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          - {in: query, name: page, schema: {type: integer}}
          - {in: query, name: per_page, schema: {type: integer}}
          responses:
            200: {description: "count, page, per_page and result: [{id, name}]"}
            400: {description: the segment's definition no longer works, with the reasons}
            404: {description: no such segment, or not yours to see}
        """
        segment = _visible_segment(pk)
        if segment is None or segment.entity not in ENTITIES:
            return self.response_404()
        page, per_page = _paging()
        try:
            count = member_count(db.session, segment, g.user)
            records = members(db.session, segment, g.user, page, per_page)
        except CrmValidationError as exc:
            return self.response_400(message=str(exc))
        return self.response(200, count=count, page=page, per_page=per_page,
                             result=[{"id": r.id, "name": _name(r)} for r in records])
