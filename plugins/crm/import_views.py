"""The import screen: upload a CSV, XLSX or vCard file of contacts or companies, see what was done."""
from __future__ import annotations

import secrets
import time
from pathlib import Path

from flask import current_app, g, request, send_file, session
from flask_appbuilder import BaseView, expose, has_access
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import NotFound, RequestEntityTooLarge

from bigledger_core.db import db

from .importer import ImportFileError, import_records, write_error_report

MAX_UPLOAD = 50 * 1024 * 1024
SHOWN_ERRORS = 100
SUFFIXES = (".csv", ".xlsx", ".vcf")
ENTITIES = {"contact": _l("Contacts"), "company": _l("Companies")}
_REPORTS_KEPT = 24 * 3600  # seconds an error report stays downloadable
_SESSION_KEY = "crm_import_reports"


def _folder() -> Path:
    folder = Path(current_app.instance_path) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _forget_old_reports(folder: Path) -> None:
    limit = time.time() - _REPORTS_KEPT
    for report in folder.glob("*.errors.csv"):
        if report.stat().st_mtime < limit:
            report.unlink(missing_ok=True)


class CrmImportView(BaseView):
    """Upload a file, import it (or try it with a dry run), and read the summary and the refused values."""

    route_base = "/crm/import"
    default_view = "form"
    class_permission_name = "CrmImport"
    method_permission_name = {"form": "import", "upload": "import", "report": "import"}
    base_permissions = ["can_import"]
    template = "crm/import.html"

    def _page(self, status: int = 200, **values):
        values.setdefault("entity", "contact")
        return self.render_template(self.template, entities=ENTITIES, max_mb=MAX_UPLOAD // (1024 * 1024),
                                    shown=SHOWN_ERRORS, **values), status

    @expose("/", methods=["GET"])
    @has_access
    def form(self):
        return self._page()

    @expose("/", methods=["POST"])
    @has_access
    def upload(self):
        too_large = str(_l("The file is larger than %(size)s MB; split it or import it with "
                           "`bigledger crm import`.", size=MAX_UPLOAD // (1024 * 1024)))
        if (request.content_length or 0) > MAX_UPLOAD + 64 * 1024:  # the form fields around the file
            return self._page(413, error=too_large)
        request.max_content_length = MAX_UPLOAD + 64 * 1024
        try:
            upload = request.files.get("file")
            entity = request.form.get("entity", "contact")
            dry_run = bool(request.form.get("dry_run"))
        except RequestEntityTooLarge:
            return self._page(413, error=too_large)
        if entity not in ENTITIES:
            return self._page(400, error=str(_l("Choose contacts or companies.")))
        if upload is None or not upload.filename:
            return self._page(400, entity=entity, error=str(_l("Choose a file to import.")))
        suffix = Path(upload.filename).suffix.lower()
        if suffix not in SUFFIXES:
            return self._page(400, entity=entity, error=str(_l(
                "%(file)s is not a CSV, XLSX or vCard file.", file=upload.filename)))
        folder = _folder()
        _forget_old_reports(folder)
        token = secrets.token_urlsafe(16)
        path = folder / f"{token}{suffix}"
        upload.save(path)
        try:
            if path.stat().st_size > MAX_UPLOAD:
                return self._page(413, entity=entity, error=too_large)
            result = import_records(db.session, entity, path, dry_run=dry_run, owner_id=g.user.id, user=g.user)
        except ImportFileError as exc:
            return self._page(400, entity=entity, error=str(exc).replace(path.name, upload.filename))
        finally:
            path.unlink(missing_ok=True)
        report = None
        if result.errors:
            write_error_report(result.errors, folder / f"{token}.errors.csv")
            session[_SESSION_KEY] = [*session.get(_SESSION_KEY, [])[-9:], token]
            report = token
        return self._page(entity=entity, result=result, filename=upload.filename, report=report,
                          errors=result.errors[:SHOWN_ERRORS])

    @expose("/report/<token>", methods=["GET"])
    @has_access
    def report(self, token: str):
        """The error report of an import this browser session ran."""
        path = _folder() / f"{token}.errors.csv"
        if token not in session.get(_SESSION_KEY, []) or not path.is_file():
            raise NotFound()
        return send_file(path, mimetype="text/csv", as_attachment=True, download_name="import-errors.csv")
