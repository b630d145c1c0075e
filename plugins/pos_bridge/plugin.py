"""Manifest and hook implementations of the module `pos_bridge`."""
from bigledger_core import __version__, hookimpl


@hookimpl
def bigledger_manifest():
    return {"name": "pos_bridge", "version": __version__,
            "label": {"zh": "销售终端桥接", "en": "POS bridge"},
            "requires": ["crm"],
            "description": {"zh": "购买历史与会员积分", "en": "Purchase history and loyalty"}}
