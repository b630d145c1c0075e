"""Manifest and hook implementations of the module `inventory_bridge` (thin: the work is in services.py).

The bridge answers the CRM's `crm_deal_line_checks` (stock and price of a deal's line items) by asking the
inventory module through the `inventory_*` service hooks, and answers those service hooks itself, last
(`trylast`), from its own tables when no inventory module is installed.
"""
from pathlib import Path

from bigledger_core import __version__, hookimpl

from . import models  # noqa: F401  (tables)

_INVENTORY = r"^(Inventory|Inventory.*)$"
_READ = r"^(can_list|can_show|can_get|can_info|menu_access)$"
_API = r"^(can_get|can_post|can_put|can_delete|can_info)$"
# what a sales rep needs before promising: products, stock, prices and the availability check
_SALES_READ = r"^(Inventory|InventoryProduct|InventoryStock|InventoryPriceList|InventoryAvailability)$"


@hookimpl
def bigledger_manifest():
    return {"name": "inventory_bridge", "version": __version__,
            "label": {"zh": "库存桥接", "en": "Inventory bridge"},
            "requires": ["crm"],
            "description": {"zh": "产品可用性与价格", "en": "Product availability and prices"}}


@hookimpl
def bigledger_migration_dirs():
    return [str(Path(__file__).parent / "migrations" / "versions")]


@hookimpl
def bigledger_register_views(appbuilder):
    from .views import register

    register(appbuilder)


@hookimpl
def bigledger_roles():
    return [{"name": "Inventory", "label": {"zh": "库存管理", "en": "Inventory"},
             "permissions": [(_INVENTORY, ".*")], "record_scope": "all"},
            {"name": "Sales Manager", "permissions": [(_INVENTORY, _READ)]},
            {"name": "Sales Rep", "permissions": [(_SALES_READ, _READ)]},
            {"name": "Integrator", "permissions": [(_INVENTORY, _API)]}]


@hookimpl
def bigledger_load_demo(session, users):
    from .demo import load

    load(session, users)


# -- the CRM's extension point ----------------------------------------------------------------------------------

@hookimpl
def crm_deal_line_checks(deal, lines):
    """Stock and the customer's price of every line item with a product code (two module calls per deal)."""
    from .services import line_checks

    return line_checks(deal, lines)


# -- standalone answers to the inventory service hooks: last, so that a real inventory module wins ------------

@hookimpl(trylast=True)
def inventory_availability(product_codes, warehouse):
    from bigledger_core.db import db

    from .services import availability

    return availability(db.session, list(product_codes), warehouse)


@hookimpl(trylast=True)
def inventory_prices(request):
    from bigledger_core.db import db

    from .services import prices

    return prices(db.session, request)
