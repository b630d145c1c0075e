"""Manifest and hook implementations of the module `finance_bridge`."""
from bigledger_core import __version__, hookimpl


@hookimpl
def bigledger_manifest():
    return {"name": "finance_bridge", "version": __version__,
            "label": {"zh": "财务桥接", "en": "Finance bridge"},
            "requires": ["crm"],
            "description": {"zh": "发票、付款与汇率", "en": "Invoices, payments and exchange rates"}}
