"""Manifest and hook implementations of the module `project_bridge`."""
from bigledger_core import __version__, hookimpl


@hookimpl
def bigledger_manifest():
    return {"name": "project_bridge", "version": __version__,
            "label": {"zh": "项目桥接", "en": "Project bridge"},
            "requires": ["crm"],
            "description": {"zh": "成交后的项目交付", "en": "Delivery projects for won deals"}}
