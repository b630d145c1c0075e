"""Hook implementations: everything the host learns about this plugin is said here."""
import logging
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask_babel import lazy_gettext as _l

from bigledger_core import hookimpl
from bigledger_core.db import db

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
TRANSLATIONS = HERE / "translations"


def _compile_catalogs() -> None:
    """Compile the shipped .po catalogs when their .mo is missing or older (editable installs too)."""
    for po in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            with po.open("rb") as source:
                catalog = read_po(source)
            try:
                with mo.open("wb") as target:
                    write_mo(target, catalog)
            except OSError as exc:  # a read-only install: strings stay in English
                log.warning("cannot compile %s: %s", po, exc)


@hookimpl
def bigledger_manifest():
    return {"name": "hello", "version": "1.0.0", "label": {"zh": "你好示例", "en": "Hello example"},
            "requires": ["crm"],
            "description": {"zh": "第三方插件的完整示例", "en": "A complete third-party plugin"}}


@hookimpl
def bigledger_register_views(appbuilder):
    from .views import HelloApi, HelloGreetingView

    appbuilder.add_view(HelloGreetingView, "Greetings", label=_l("Greetings"), icon="fa-hand-paper-o",
                        category="Hello", category_label=_l("Hello"))
    appbuilder.add_api(HelloApi)


@hookimpl
def bigledger_roles():
    return [{"name": "Sales Rep", "permissions": [("^(Hello|HelloGreeting)$", ".*")]},
            {"name": "Integrator", "permissions": [("^HelloGreeting$", "^can_(get|post|put|delete|info)$")]}]


@hookimpl
def bigledger_translation_dirs():
    _compile_catalogs()
    return [str(TRANSLATIONS)]


@hookimpl
def bigledger_migration_dirs():
    return [str(HERE / "migrations")]


@hookimpl
def bigledger_module_switched(event):
    from .models import HelloGreeting

    module, enabled = event.payload["module"], event.payload["enabled"]
    message = (f"模块 {module} 已{'启用' if enabled else '停用'} / "
               f"module {module} switched {'on' if enabled else 'off'}")
    db.session.add(HelloGreeting(message=message, language="zh"))
    db.session.commit()
