"""The application factory: Flask + Flask-AppBuilder + SQLAlchemy + Babel + the plugin host."""
from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import Any

from flask import Flask
from flask_appbuilder import AppBuilder
from flask_appbuilder.api import BaseApi
from flask_wtf.csrf import CSRFProtect

from .config import build_config
from .db import db
from .i18n import select_locale
from .lists import cache_rison_schema_validation
from .modules import Ownership, guard_request
from .plugins import CORE, PluginHost
from .security import collect_roles

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def create_app(config: dict[str, Any] | None = None, plugin_host: PluginHost | None = None) -> Flask:
    """Build the app. `config` overrides settings from the environment (tests use it).

    Raises ConfigError or PluginError with one clear message when the configuration or a plugin is bad.
    """
    settings = build_config(config)
    # FAB reports every API column it cannot filter on at WARNING; only its errors matter here.
    logging.getLogger("flask_appbuilder").setLevel(logging.ERROR)
    app = Flask("bigledger_core", instance_path=settings["INSTANCE_PATH"],
                template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"),
                static_url_path="/static/bigledger")
    app.config.update(settings)
    app.add_template_filter(json.loads, "from_json")
    cache_rison_schema_validation()
    host = plugin_host or PluginHost(offered=_offered(settings["BIGLEDGER_MODULES"]),
                                     strict=settings["BIGLEDGER_STRICT_PLUGINS"],
                                     extra_plugins=settings["BIGLEDGER_EXTRA_PLUGINS"])
    app.extensions["bigledger"] = host

    roles = collect_roles(host.call_each("bigledger_roles"))
    app.config["BIGLEDGER_ROLE_SPECS"] = roles
    app.config["FAB_ROLES"] = {name: [list(p) for p in spec["permissions"]] for name, spec in roles.items()}
    dirs = [d for _name, answer in host.call_each("bigledger_translation_dirs") for d in answer or []]
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join(dirs)

    db.init_app(app)
    with app.app_context():
        appbuilder = AppBuilder(update_perms=False)
        appbuilder.init_app(app, db.session)
        app.extensions["babel"].locale_selector = select_locale
        # flask_login.login_required in plugin routes sends anonymous users to FAB's login form.
        app.login_manager.login_view = f"{appbuilder.sm.auth_view.endpoint}.login"
        ownership = Ownership()
        app.extensions["bigledger_ownership"] = ownership
        for name in host.modules:
            endpoints = set(app.view_functions)
            menu_items = set(appbuilder.menu.get_flat_name_list())
            host.call(name, "bigledger_register_views", appbuilder=appbuilder)
            if name == CORE:
                continue
            for endpoint in set(app.view_functions) - endpoints:
                ownership.endpoints[endpoint] = name
            for item in set(appbuilder.menu.get_flat_name_list()) - menu_items:
                ownership.menu_items[item] = name

    # Every form POST needs the CSRF token; the REST API authenticates with JWT instead.
    csrf = CSRFProtect(app)
    for view in appbuilder.baseviews:
        if isinstance(view, BaseApi) and getattr(view, "blueprint", None) is not None:
            csrf.exempt(view.blueprint)
        # FAB limits the login form; the JWT login gets the same limit.
        if type(view).__name__ == "SecurityApi" and app.config["AUTH_RATE_LIMITED"]:
            appbuilder.sm.limiter.limit(app.config["AUTH_RATE_LIMIT"], methods=["POST"])(view.blueprint)

    from .views import health, language_from_request

    app.before_request(guard_request)
    app.before_request(language_from_request)
    app.add_url_rule("/health", "health", health)

    from .cli import cli

    app.cli.add_command(cli, "bigledger")
    return app


def settle() -> None:
    """Once the app is built and before it serves: the objects made so far (about 400,000: Flask-AppBuilder's
    and SQLAlchemy's machinery, the modules' tables, phonenumbers' and pypinyin's dictionaries) live as long as
    the process, so Python's cyclic garbage collector stops walking them. Without this, each full collection
    walked them all and the request it fell in took 150–200 ms longer. Forked workers also keep sharing
    these objects' memory pages instead of copying them."""
    gc.collect()
    gc.freeze()


def configure_logging(app: Flask) -> None:
    """Log to `<instance>/logs/bigledger.log` (rotated) as well as to the console."""
    from logging.handlers import RotatingFileHandler

    folder = Path(app.instance_path) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    target = str(folder / "bigledger.log")
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == target for h in root.handlers):
        handler = RotatingFileHandler(target, maxBytes=10_000_000, backupCount=5, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)


def _offered(modules: list[str] | None) -> list[str] | None:
    return None if modules is None else [m for m in modules if m != CORE]
