"""The store sales screen (read-only, newest first, searchable by store, receipt, customer and match) and the
screen that imports a CSV of sales."""
from __future__ import annotations

import io

from flask import Blueprint, current_app, request
from flask_appbuilder import BaseView, ModelView, expose, has_access
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import RequestEntityTooLarge

from bigledger_core.db import db

from .models import PosSale
from .services import CSV_COLUMNS, CSV_REQUIRED, import_sales

MATCH_LABELS = {"card": _l("Loyalty card"), "phone": _l("Phone"), "email": _l("E-mail"),
                "created": _l("New contact")}


class PosSaleView(ModelView):
    datamodel = SQLAInterface(PosSale)
    class_permission_name = "PosSales"
    base_permissions = ["can_list", "can_show"]
    list_title = _l("Store sales")
    show_title = _l("Store sale")
    list_columns = ["sold_at", "store", "receipt", "total", "currency", "contact", "matched_by"]
    show_columns = ["sold_at", "store", "receipt", "total", "currency", "card", "phone", "email", "contact",
                    "matched_by", "created_at"]
    search_columns = ["store", "receipt", "currency", "card", "phone", "email", "contact", "matched_by", "sold_at"]
    order_columns = ["sold_at", "store", "receipt", "total"]
    base_order = ("sold_at", "desc")
    label_columns = {"sold_at": _l("Time"), "store": _l("Store"), "receipt": _l("Receipt"), "total": _l("Total"),
                     "currency": _l("Currency"), "card": _l("Loyalty card"), "phone": _l("Phone"),
                     "email": _l("E-mail"), "contact": _l("Contact"), "matched_by": _l("Matched by"),
                     "created_at": _l("Recorded at")}
    formatters_columns = {"matched_by": lambda value: MATCH_LABELS.get(value, "—")}


MAX_UPLOAD = 10 * 1024 * 1024
SHOWN_ERRORS = 200


class PosImportView(BaseView):
    """Upload a CSV of store sales (one row per receipt), as `bigledger pos import` reads it, and see what was
    recorded and which rows were refused and why."""

    route_base = "/pos/import"
    default_view = "form"
    class_permission_name = "PosImport"
    method_permission_name = {"form": "import", "upload": "import"}
    base_permissions = ["can_import"]
    template = "pos/import.html"

    def _page(self, status: int = 200, **values):
        return self.render_template(self.template, columns=CSV_COLUMNS, required=CSV_REQUIRED,
                                    max_mb=MAX_UPLOAD // (1024 * 1024), shown=SHOWN_ERRORS, **values), status

    @expose("/", methods=["GET"])
    @has_access
    def form(self):
        return self._page(create_contacts=bool(current_app.config.get("BIGLEDGER_POS_CREATE_CONTACTS", True)))

    @expose("/", methods=["POST"])
    @has_access
    def upload(self):
        too_large = gettext("The file is larger than %(size)s MB; split it or import it with `bigledger pos import`.",
                            size=MAX_UPLOAD // (1024 * 1024))
        if (request.content_length or 0) > MAX_UPLOAD + 64 * 1024:
            return self._page(413, error=too_large)
        request.max_content_length = MAX_UPLOAD + 64 * 1024
        try:
            upload = request.files.get("file")
            create_contacts = bool(request.form.get("create_contacts"))
        except RequestEntityTooLarge:
            return self._page(413, error=too_large)
        if upload is None or not upload.filename:
            return self._page(400, error=gettext("Choose a file to import."), create_contacts=create_contacts)
        if not upload.filename.lower().endswith(".csv"):
            return self._page(400, error=gettext("%(file)s is not a CSV file.", file=upload.filename),
                              create_contacts=create_contacts)
        raw = upload.stream.read(MAX_UPLOAD + 1)
        if len(raw) > MAX_UPLOAD:
            return self._page(413, error=too_large, create_contacts=create_contacts)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                text = raw.decode("gb18030")
            except UnicodeDecodeError:
                return self._page(400, error=gettext("%(file)s is neither UTF-8 nor GBK text.", file=upload.filename),
                                  create_contacts=create_contacts)
        report = import_sales(db.session, io.StringIO(text, newline=""), create_contacts=create_contacts)
        return self._page(report=report, filename=upload.filename, create_contacts=create_contacts,
                          refused=len({row for row, _column, _message in report.errors}),
                          errors=report.errors[:SHOWN_ERRORS])


blueprint = Blueprint("pos_bridge_assets", __name__, template_folder="templates")
