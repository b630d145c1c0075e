"""Manifest and hook implementations of the module `pos_bridge` (thin: it wires the bridge's parts)."""
from pathlib import Path

from bigledger_core import __version__, hookimpl

from . import models  # noqa: F401  (tables)


@hookimpl
def bigledger_manifest():
    return {"name": "pos_bridge", "version": __version__,
            "label": {"zh": "销售终端桥接", "en": "POS bridge"},
            "requires": ["crm"],
            "description": {"zh": "购买历史与会员积分", "en": "Purchase history and loyalty"}}


@hookimpl
def bigledger_migration_dirs():
    return [str(Path(__file__).parent / "migrations")]


@hookimpl
def bigledger_register_views(appbuilder):
    from flask import current_app
    from flask_babel import lazy_gettext as _l

    from .api import PosSaleApi
    from .views import PosImportView, PosSaleView, blueprint

    current_app.register_blueprint(blueprint)
    appbuilder.add_api(PosSaleApi)
    appbuilder.add_view(PosSaleView, "PosSales", label=_l("Store sales"), icon="fa-shopping-cart",
                        category="CRM", category_label=_l("CRM"))
    appbuilder.add_view(PosImportView, "PosImport", label=_l("Import store sales"), icon="fa-upload",
                        category="CRM", category_label=_l("CRM"))


@hookimpl
def bigledger_roles():
    # a POS terminal signs in with an Integrator account and may only post sales; staff read them
    read = (r"^PosSales$", r"^(can_list|can_show|menu_access)$")
    imports = (r"^PosImport$", r"^(can_import|menu_access)$")
    return [{"name": "Integrator", "permissions": [(r"^PosSale$", r"^can_post$")]},
            {"name": "Sales Manager", "permissions": [read, imports]},
            {"name": "Marketing", "permissions": [read]}]


@hookimpl
def bigledger_cli_commands():
    from .cli import pos

    return [pos]


@hookimpl
def bigledger_load_demo(session, users):
    from .demo import load

    load(session, users)


@hookimpl
def crm_customer_panels(customer):
    from .customer_view import panels

    return panels(customer)


@hookimpl
def crm_timeline_entries(customer, limit):
    from .customer_view import timeline_entries

    return timeline_entries(customer, limit)


@hookimpl
def crm_segment_conditions():
    from .segments import conditions

    return conditions()


@hookimpl
def crm_contact_merged(event):
    """Sales and cards of a merged contact belong to the contact it was merged into."""
    from sqlalchemy import update

    from bigledger_core.db import db

    from .models import LoyaltyCard, PosSale

    for model in (PosSale, LoyaltyCard):
        db.session.execute(update(model).where(model.contact_id == event.payload["merged_id"])
                           .values(contact_id=event.payload["survivor_id"]))
    db.session.commit()


# -- the standalone POS: answers last, so a POS module of the deployment wins ------------------------------

@hookimpl(trylast=True)
def pos_purchase_history(customer, limit):
    from bigledger_core.db import db

    from .store import purchase_history

    return purchase_history(db.session, customer, limit)


@hookimpl(trylast=True)
def pos_purchase_totals(customer, since):
    from bigledger_core.db import db

    from .store import purchase_totals

    return purchase_totals(db.session, customer, since)


@hookimpl(trylast=True)
def pos_loyalty_status(customer):
    from bigledger_core.db import db

    from .store import loyalty_status

    return loyalty_status(db.session, customer)
