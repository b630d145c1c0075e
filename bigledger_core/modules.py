"""Switching modules on and off per deployment, at run time, for every worker at once.

The deployment offers a set of modules (`BIGLEDGER_MODULES`, default all installed). Among those,
an admin's choice stored in `bl_module` decides which are enabled. Every module's views are
registered when the app starts; a disabled module's routes answer 404, its menu entries are
hidden and its hooks are not called, so switching needs no restart.
"""
from __future__ import annotations

import copy
import logging

from flask import abort, current_app, g, has_request_context, request
from flask_appbuilder.menu import Menu
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from .db import db, utcnow
from .errors import ModuleStateError
from .events import emit
from .models import ModuleState
from .plugins import CORE, PluginHost

log = logging.getLogger(__name__)


def host() -> PluginHost:
    """The plugin host of the current app."""
    return current_app.extensions["bigledger"]


def ask_service(hook: str, **kwargs):
    """The answer to a firstresult service hook (a module's `finance_…`, the CRM's `crm_customers`…) from every
    plugin except switched-off modules, in pluggy's order: a module of the deployment answers before a bridge's
    own storage (`trylast`)."""
    return host().ask(hook, enabled_modules(), **kwargs)


def switched_off(session) -> set[str]:
    """Names of modules an admin switched off (empty before the first migration)."""
    try:
        return set(session.scalars(select(ModuleState.name).where(ModuleState.enabled.is_(False))))
    except (OperationalError, ProgrammingError):
        session.rollback()
        return set()


def enabled_modules(plugin_host: PluginHost | None = None, session=None) -> list[str]:
    """Enabled modules in requirement order: offered, not switched off, and all requirements enabled.

    Read once per request; pass `session` to read afresh through that session instead.
    """
    cache = has_request_context() and session is None
    if cache and "bigledger_enabled" in g:
        return g.bigledger_enabled
    plugin_host = plugin_host or host()
    off = switched_off(session or db.session)
    enabled: list[str] = []
    for name in plugin_host.modules:
        if name not in off and all(req in enabled for req in plugin_host.manifests[name].requires):
            enabled.append(name)
    if cache:
        g.bigledger_enabled = enabled
    return enabled


def is_enabled(name: str) -> bool:
    return name in enabled_modules()


def _display(plugin_host: PluginHost, names) -> str:
    from .i18n import current_locale

    locale = current_locale()
    return ", ".join(f"{plugin_host.manifests[n].label_for(locale)} ({n})" for n in names)


def _check_known(plugin_host: PluginHost, name: str) -> None:
    if name in plugin_host.manifests:
        return
    if name in plugin_host.failed:
        raise ModuleStateError(_l("Module %(module)s failed to load: %(error)s",
                                  module=name, error=plugin_host.failed[name]))
    raise ModuleStateError(_l("Unknown module %(module)s. Known modules: %(known)s",
                              module=name, known=", ".join(m for m in plugin_host.modules if m != CORE)))


def enable_module(name: str, by: str) -> None:
    """Switch module `name` on; its requirements must be on. Runs its migrations first."""
    from .migrate import upgrade

    plugin_host = host()
    _check_known(plugin_host, name)
    enabled = enabled_modules(plugin_host)
    missing = [req for req in plugin_host.manifests[name].requires if req not in enabled]
    if missing:
        raise ModuleStateError(_l("Cannot enable %(module)s: it requires %(missing)s, which is disabled. "
                                  "Enable that first.", module=name, missing=_display(plugin_host, missing)))
    if name in enabled:
        return
    upgrade(modules=[name])
    _record(name, True, by)


def disable_module(name: str, by: str) -> None:
    """Switch module `name` off; refused while an enabled module requires it. Its data is kept."""
    plugin_host = host()
    _check_known(plugin_host, name)
    if name == CORE:
        raise ModuleStateError(_l("The core module cannot be disabled."))
    enabled = enabled_modules(plugin_host)
    users = [dep for dep in plugin_host.dependents(name) if dep in enabled]
    if users:
        raise ModuleStateError(_l("Cannot disable %(module)s: %(users)s require it. Disable them first.",
                                  module=name, users=_display(plugin_host, users)))
    if name not in enabled:
        return
    _record(name, False, by)


def _record(name: str, enabled: bool, by: str) -> None:
    session = db.session
    state = session.get(ModuleState, name) or ModuleState(name=name)
    state.enabled, state.changed_at, state.changed_by = enabled, utcnow(), by
    session.add(state)
    emit(session, "bigledger_module_switched", {"module": name, "enabled": enabled, "by": by})
    if has_request_context():
        g.pop("bigledger_enabled", None)
    session.commit()
    log.info("module %s %s by %s", name, "enabled" if enabled else "disabled", by)


# -- what belongs to which module ---------------------------------------------------------------------

class Ownership:
    """Endpoints and menu items each module added while the app was built."""

    def __init__(self) -> None:
        self.endpoints: dict[str, str] = {}
        self.menu_items: dict[str, str] = {}

    def module_of_endpoint(self, endpoint: str | None) -> str | None:
        return self.endpoints.get(endpoint or "")


def guard_request() -> None:
    """before_request: a disabled module's routes do not exist."""
    owner = current_app.extensions["bigledger_ownership"].module_of_endpoint(request.endpoint)
    if owner and not is_enabled(owner):
        abort(404)


class ModuleMenu(Menu):
    """FAB's menu, without the entries of disabled modules (and categories left empty by that)."""

    def _visible(self, items):
        ownership = current_app.extensions.get("bigledger_ownership")
        enabled = set(enabled_modules())
        result = []
        for item in items:
            owner = ownership.menu_items.get(item.name) if ownership else None
            if owner and owner not in enabled:
                continue
            if item.childs:
                kept = self._visible(item.childs)
                if not [child for child in kept if child.name != "-"]:
                    continue
                item = copy.copy(item)
                item.childs = kept
            result.append(item)
        return result

    def get_list(self):
        return self._visible(self.menu)

    def get_data(self, menu=None):
        return super().get_data(menu or self.get_list())
