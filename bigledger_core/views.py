"""The host's own screens: home, Modules, Teams, and the /health endpoint."""
from __future__ import annotations

import logging

from flask import current_app, flash, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, IndexView, ModelView, expose, has_access
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from sqlalchemy import text

from .db import db
from .errors import ModuleStateError
from .i18n import current_locale
from .models import ModuleState, Team
from .modules import disable_module, enable_module, enabled_modules, switched_off

log = logging.getLogger(__name__)


class HomeView(IndexView):
    """Landing page after login: the enabled modules and where to go."""

    route_base = ""
    index_template = "bigledger/index.html"

    @expose("/")
    def index(self):
        host = current_app.extensions["bigledger"]
        locale = current_locale()
        modules = [host.manifests[name] for name in enabled_modules()]
        return self.render_template(self.index_template, modules=modules, locale=locale)


class ModulesView(BaseView):
    """Admin screen: every module of the deployment, its state, and a switch."""

    route_base = "/modules"
    default_view = "list"
    class_permission_name = "Modules"
    method_permission_name = {"list": "list", "switch": "edit"}
    base_permissions = ["can_list", "can_edit"]

    @expose("/")
    @has_access
    def list(self):
        host = current_app.extensions["bigledger"]
        enabled = set(enabled_modules())
        off = switched_off(db.session)
        states = {row.name: row for row in db.session.query(ModuleState)}
        rows = []
        for name in host.modules:
            manifest = host.manifests[name]
            if name in enabled:
                status = "enabled"
            elif name in off:
                status = "disabled"
            else:
                status = "blocked"  # a requirement is off
            rows.append({"manifest": manifest, "status": status, "state": states.get(name),
                         "dependents": host.dependents(name)})
        failed = sorted(host.failed.items())
        return self.render_template("bigledger/modules.html", rows=rows, failed=failed,
                                    locale=current_locale(), core="core")

    @expose("/<name>/<action>", methods=["POST"])
    @has_access
    def switch(self, name: str, action: str):
        user = self.appbuilder.sm.current_user
        by = user.username if user else "?"
        try:
            if action == "enable":
                enable_module(name, by)
                flash(str(_l("Module %(module)s enabled.", module=name)), "success")
            elif action == "disable":
                disable_module(name, by)
                flash(str(_l("Module %(module)s disabled. Its data is kept.", module=name)), "success")
            else:
                flash(str(_l("Unknown action %(action)s.", action=action)), "danger")
        except ModuleStateError as exc:
            flash(str(exc), "danger")
        return redirect(url_for("ModulesView.list"))


class TeamModelView(ModelView):
    """Teams: members see the team's records, managers see their teams' and sub-teams' records."""

    datamodel = SQLAInterface(Team)
    class_permission_name = "Teams"
    list_title = _l("Teams")
    show_title = _l("Team")
    add_title = _l("Add team")
    edit_title = _l("Edit team")
    list_columns = ["name", "name_en", "parent", "manager"]
    add_columns = edit_columns = ["name", "name_en", "parent", "manager", "members"]
    show_columns = ["name", "name_en", "parent", "manager", "members"]
    search_columns = ["name", "name_en", "manager"]
    label_columns = {"name": _l("Name"), "name_en": _l("English name"), "parent": _l("Parent team"),
                     "manager": _l("Manager"), "members": _l("Members")}


def health():
    """Public liveness/readiness: database reachability and enabled modules, no secrets."""
    host = current_app.extensions["bigledger"]
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # reported, not raised: this endpoint must answer
        db.session.rollback()
        checks["database"] = type(exc).__name__
        log.warning("health: database unreachable: %s", exc)
    modules: list[str] = []
    if checks["database"] == "ok":
        modules = enabled_modules()
        for plugin, answer in host.call_each("bigledger_health", modules=modules):
            for key, value in (answer or {}).items():
                checks[f"{plugin}.{key}"] = str(value)
    ok = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ok else "degraded", "checks": checks, "modules": modules,
            "failed_plugins": sorted(host.failed)}
    return jsonify(body), 200 if ok else 503


def language_from_request() -> None:
    """Remember the language negotiated from Accept-Language for the rest of the session."""
    from flask import session

    if (request.endpoint or "").endswith("static") or request.path.startswith("/api/"):
        return
    if "locale" not in session:
        session["locale"] = current_locale()
