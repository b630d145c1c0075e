"""Manifest and hook implementations of the module `inventory_bridge`."""
from bigledger_core import __version__, hookimpl


@hookimpl
def bigledger_manifest():
    return {"name": "inventory_bridge", "version": __version__,
            "label": {"zh": "库存桥接", "en": "Inventory bridge"},
            "requires": ["crm"],
            "description": {"zh": "产品可用性与价格", "en": "Product availability and prices"}}
