"""Manifest and hook implementations of the module `finance_bridge` (thin: the work is in services.py).

The bridge listens to the CRM (`crm_deal_won`), answers the CRM's extension hooks (360° panel, timeline,
deal warnings, exchange rates) by asking the finance module through the `finance_*` service hooks, and
answers those service hooks itself, last (`trylast`), from its own tables when no finance module is installed.
"""
from pathlib import Path

from bigledger_core import __version__, hookimpl

from . import (
    events,
    models,  # noqa: F401  (tables)
)

_FINANCE = r"^(Finance|Finance.*)$"
_READ = r"^(can_list|can_show|can_get|can_info|menu_access)$"
_API = r"^(can_get|can_post|can_put|can_delete|can_info)$"


@hookimpl
def bigledger_manifest():
    return {"name": "finance_bridge", "version": __version__,
            "label": {"zh": "财务桥接", "en": "Finance bridge"},
            "requires": ["crm"],
            "description": {"zh": "发票、付款与汇率", "en": "Invoices, payments and exchange rates"}}


@hookimpl
def bigledger_migration_dirs():
    return [str(Path(__file__).parent / "migrations" / "versions")]


@hookimpl
def bigledger_register_views(appbuilder):
    from .views import register

    register(appbuilder)


@hookimpl
def bigledger_roles():
    return [{"name": "Finance", "label": {"zh": "财务", "en": "Finance"},
             "permissions": [(_FINANCE, ".*"), (r"^(CRM|CrmCustomer.*|CrmCompany.*|CrmContact.*)$", _READ)],
             "record_scope": "all"},
            {"name": "Sales Manager", "permissions": [(_FINANCE, _READ)]},
            {"name": "Sales Rep", "permissions": [(r"^(Finance|FinanceInvoice|FinancePayment)$", _READ)]},
            {"name": "Integrator", "permissions": [(_FINANCE, _API)]}]


@hookimpl
def bigledger_event_types():
    return events.event_types()


@hookimpl
def bigledger_load_demo(session, users):
    from .demo import load

    load(session, users)


# -- the CRM's events and extension points ------------------------------------------------------------------

@hookimpl
def crm_deal_won(event):
    """A won deal: the finance module drafts its invoice (once per deal)."""
    from bigledger_core.db import db

    from .services import invoice_won_deal

    invoice_won_deal(db.session, event)


@hookimpl
def crm_company_merged(event):
    """Invoices, payments and the credit hold of a merged company follow it to the survivor."""
    from bigledger_core.db import db

    from .services import move_company

    move_company(db.session, event.payload["merged_id"], event.payload["survivor_id"])
    db.session.commit()


@hookimpl
def crm_deal_warnings(deal):
    from .services import credit_hold_warnings

    return credit_hold_warnings(deal)


@hookimpl
def crm_exchange_rate(from_currency, to_currency, on):
    from .services import ask_finance

    return ask_finance("finance_exchange_rate", from_currency=from_currency, to_currency=to_currency, on=on)


@hookimpl
def crm_customer_panels(customer):
    from .presentation import panel
    from .services import account_for_view

    account = account_for_view(customer, 1)
    if not account:
        return []
    shown = panel(account)
    if customer.kind == "company":
        from flask import current_app, url_for

        if current_app.appbuilder.sm.has_access("can_edit", "FinanceCreditHold"):
            shown["url"] = url_for("CreditHoldView.add", company_id=customer.id)  # opens its entry if it has one
            shown["link"] = {"zh": "设置信用冻结或付款条件", "en": "Set a credit hold or payment terms"}
    return [shown]


@hookimpl
def crm_timeline_entries(customer, limit):
    from .presentation import timeline
    from .services import account_for_view

    account = account_for_view(customer, limit)
    return timeline(account, limit) if account else []


# -- standalone answers to the finance service hooks: last, so that a real finance module wins ----------------

@hookimpl(trylast=True)
def finance_create_invoice(request):
    from bigledger_core.db import db

    from .services import create_invoice

    return create_invoice(db.session, request)


@hookimpl(trylast=True)
def finance_customer_account(customer, limit):
    from bigledger_core.db import db

    from .services import customer_account

    return customer_account(db.session, customer, limit)


@hookimpl(trylast=True)
def finance_exchange_rate(from_currency, to_currency, on):
    from bigledger_core.db import db

    from .services import exchange_rate

    return exchange_rate(db.session, from_currency, to_currency, on)
