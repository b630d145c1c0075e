"""Manifest and hook implementations of the module `project_bridge` (thin: the work is in services.py).

The bridge listens to the CRM (`crm_deal_won`): when a project rule matches the won deal it asks the project
module for a delivery project through the `project_*` service hooks; it answers the CRM's extension hooks (the
deal's page, the 360° panel and timeline) by asking the same hooks, and answers those service hooks itself, last
(`trylast`), from its own tables when no project module is installed.
"""
from pathlib import Path

from bigledger_core import __version__, hookimpl

from . import models  # noqa: F401  (tables)

_PROJECTS = r"^(Projects|Project.*)$"
_READ = r"^(can_list|can_show|can_get|can_info|menu_access)$"
_API = r"^(can_get|can_post|can_put|can_delete|can_info)$"


@hookimpl
def bigledger_manifest():
    return {"name": "project_bridge", "version": __version__,
            "label": {"zh": "项目桥接", "en": "Project bridge"},
            "requires": ["crm"],
            "description": {"zh": "成交后的项目交付", "en": "Delivery projects for won deals"}}


@hookimpl
def bigledger_migration_dirs():
    return [str(Path(__file__).parent / "migrations" / "versions")]


@hookimpl
def bigledger_register_views(appbuilder):
    from .views import register

    register(appbuilder)


@hookimpl
def bigledger_roles():
    return [{"name": "Project Manager", "label": {"zh": "项目经理", "en": "Project Manager"},
             "permissions": [(_PROJECTS, ".*"), (r"^(CRM|CrmCustomer.*|CrmCompany.*|CrmContact.*|CrmDeal)$", _READ)],
             "record_scope": "all"},
            {"name": "Sales Manager", "permissions": [(_PROJECTS, _READ)]},
            {"name": "Sales Rep", "permissions": [(r"^(Projects|ProjectProject|ProjectMilestone)$", _READ)]},
            {"name": "Integrator", "permissions": [(_PROJECTS, _API)]}]


@hookimpl
def bigledger_load_demo(session, users):
    from .demo import load

    load(session, users)


# -- the CRM's events and extension points ------------------------------------------------------------------

@hookimpl
def crm_deal_won(event):
    """A won deal a project rule matches: the project module creates its delivery project (once per deal)."""
    from bigledger_core.db import db

    from .services import project_for_won_deal

    project_for_won_deal(db.session, event)


@hookimpl
def crm_company_merged(event):
    """The projects of a merged company follow it to the survivor."""
    from bigledger_core.db import db

    from .services import move_customer

    move_customer(db.session, "company", event.payload["merged_id"], event.payload["survivor_id"])
    db.session.commit()


@hookimpl
def crm_contact_merged(event):
    """The projects of a merged contact follow it to the survivor."""
    from bigledger_core.db import db

    from .services import move_customer

    move_customer(db.session, "contact", event.payload["merged_id"], event.payload["survivor_id"])
    db.session.commit()


@hookimpl
def crm_deal_panels(deal):
    from .presentation import deal_panel
    from .services import ask_projects

    projects = ask_projects("project_status", deal_ids=[deal.id]) or {}
    project = projects.get(deal.id) or projects.get(str(deal.id))  # a module may key by the id as text
    return [deal_panel(project)] if project else []


@hookimpl
def crm_customer_panels(customer):
    from .presentation import PANEL_PROJECTS, customer_panel
    from .services import projects_for_view

    account = projects_for_view(customer, PANEL_PROJECTS)
    return [customer_panel(account, customer)] if account and account.get("projects") else []


@hookimpl
def crm_timeline_entries(customer, limit):
    from .presentation import timeline
    from .services import projects_for_view

    account = projects_for_view(customer, limit)
    return timeline(account, limit) if account else []


# -- standalone answers to the project service hooks: last, so that a real project module wins ----------------

@hookimpl(trylast=True)
def project_create(request):
    from bigledger_core.db import db

    from .services import create_project

    return create_project(db.session, request)


@hookimpl(trylast=True)
def project_status(deal_ids):
    from bigledger_core.db import db

    from .services import deal_projects

    return deal_projects(db.session, deal_ids)


@hookimpl(trylast=True)
def project_customer_projects(customer, limit):
    from bigledger_core.db import db

    from .services import customer_projects

    return customer_projects(db.session, customer, limit)
