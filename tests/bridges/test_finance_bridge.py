"""The finance bridge: a won deal becomes one draft invoice (with a finance module, and standalone), even when
the event comes twice or the module fails first; payments, balances, credit hold and exchange rates reach the
CRM's 360° view, deals and forecast; with the bridge switched off the CRM works and nothing is invoiced.

This test module is also a plugin: loaded as `erp_finance` (see `erp`), it plays the BigLedger finance
module an integrator would install, answering the `finance_*` service hooks and recording every call.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from bigledger_core import hookimpl
from bigledger_core.db import db, utcnow
from bigledger_core.events import deliver_due
from bigledger_core.models import EventDelivery
from tests.conftest import SAMPLE_PLUGIN, add_user, api_token, csrf_token, login

FINANCE_MODULE = __name__
EN = {"Accept-Language": "en"}
SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")

# -- the finance module, as an integrator would write it ---------------------------------------------------

MODULE = {"answer": True, "fail": 0, "calls": [], "invoices": {}, "account": None, "rates": {}, "payments": []}


@hookimpl
def bigledger_manifest():
    return {"name": "erp_finance", "version": "1.0", "label": {"zh": "ERP 财务", "en": "ERP finance"},
            "requires": []}


@hookimpl
def finance_create_invoice(request):
    MODULE["calls"].append(("finance_create_invoice", request))
    if MODULE["fail"]:
        MODULE["fail"] -= 1
        raise ConnectionError("finance module is down for maintenance")
    if not MODULE["answer"]:
        return None
    invoices = MODULE["invoices"]
    if request["idempotency_key"] not in invoices:
        invoices[request["idempotency_key"]] = {"id": f"ERP-{len(invoices) + 1}",
                                                "number": f"SI-2026-{len(invoices) + 1:04d}", "status": "draft"}
    return invoices[request["idempotency_key"]]


@hookimpl
def finance_customer_account(customer, limit):
    MODULE["calls"].append(("finance_customer_account", customer, limit))
    return MODULE["account"] if MODULE["answer"] else None


@hookimpl
def finance_exchange_rate(from_currency, to_currency, on):
    MODULE["calls"].append(("finance_exchange_rate", from_currency, to_currency, on))
    return MODULE["rates"].get((from_currency, to_currency)) if MODULE["answer"] else None


@hookimpl
def finance_payment_received(event):
    MODULE["payments"].append(event)


# -- fixtures and helpers -----------------------------------------------------------------------------------

@pytest.fixture
def erp(make_app):
    """An app with the finance module installed (answering unless a test says otherwise)."""
    MODULE.update(answer=True, fail=0, calls=[], invoices={}, account=None, rates={}, payments=[])
    return make_app.reused(BIGLEDGER_EXTRA_PLUGINS=[SAMPLE_PLUGIN, FINANCE_MODULE])


def _world(app) -> dict:
    """A sales pipeline, a sales rep, an admin and two companies of the rep."""
    from plugins.crm.models import Company
    from plugins.crm.pipeline import config
    from plugins.crm.pipeline.services import load_pipeline

    add_user(app, "rep", "Sales Rep")
    add_user(app, "boss", "Admin")
    with app.app_context():
        rep = app.appbuilder.sm.find_user(username="rep")
        load_pipeline(db.session, config.parse(SEED))
        company = Company(name="华信科技有限公司", external_id="ERP-C-001", owner_id=rep.id)
        other = Company(name="Maju Jaya Sdn Bhd", owner_id=rep.id)
        db.session.add_all([company, other])
        db.session.commit()
        return {"rep": rep.id, "company": company.id, "other": other.id}


def _deal(world, *, currency="CNY", lines=(("ERP 许可 / ERP licence", "2", "15000.00"),), company=None,
          amount=None, expected_close=None):
    from plugins.crm.pipeline.models import Deal, DealLine
    from plugins.crm.pipeline.services import create_deal

    deal = create_deal(db.session, Deal(name="ERP 升级 / ERP upgrade", company_id=company or world["company"],
                                        owner_id=world["rep"], currency=currency, amount=amount,
                                        expected_close=expected_close), user_id=world["rep"])
    for position, (product, quantity, price) in enumerate(lines):
        deal.lines.append(DealLine(product=product, product_code=f"P-{position + 1}", quantity=Decimal(quantity),
                                   unit_price=Decimal(price), position=position))
    db.session.commit()
    return deal


def _win(app, world, **values) -> int:
    from plugins.crm.pipeline.services import win_deal

    with app.app_context():
        deal = _deal(world, **values)
        win_deal(db.session, deal, reason="签约 / signed", user_id=world["rep"])
        db.session.commit()  # the won event is delivered after this commit
        return deal.id


def _finance_deliveries(app) -> list[EventDelivery]:
    """The bridge's event deliveries."""
    with app.app_context():
        rows = db.session.scalars(select(EventDelivery).where(EventDelivery.subscriber == "finance_bridge")).all()
        db.session.expunge_all()
        return rows


def _deliver_again(app) -> None:
    """Deliver the bridge's events once more, as after a crash between handling and recording them."""
    with app.app_context():
        db.session.execute(update(EventDelivery).where(EventDelivery.subscriber == "finance_bridge")
                           .values(status="pending", next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()
    deliver_due(app)


def _count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def _auth(client, username="boss"):
    """API headers: a token, and English answers (the messages asserted here are the English ones)."""
    return {"Authorization": f"Bearer {api_token(client, username)}", **EN}


def _panel(view) -> dict[str, str]:
    panels = [p for p in view["panels"] if p["module"] == "finance_bridge"]
    assert len(panels) == 1 and panels[0]["title"] == {"zh": "财务", "en": "Finance"}
    return dict(panels[0]["rows"])


# -- won deal -> draft invoice --------------------------------------------------------------------------------

def test_a_won_deal_asks_the_finance_module_for_one_draft_invoice_even_when_delivered_twice(erp):
    from plugins.finance_bridge.models import Invoice, InvoiceLink

    world = _world(erp)
    deal_id = _win(erp, world, lines=[("ERP 许可 / ERP licence", "2", "15000.00"), ("实施 / Setup", "1", "8000.00")])
    calls = [c for c in MODULE["calls"] if c[0] == "finance_create_invoice"]
    assert len(calls) == 1
    request = calls[0][1]
    assert request["idempotency_key"] == f"crm-deal-{deal_id}"
    assert request["customer"] == {"company_id": world["company"], "contact_id": None, "name": "华信科技有限公司",
                                   "external_id": "ERP-C-001"}
    assert request["currency"] == "CNY" and request["payment_terms_days"] == 30
    assert request["source"] == {"kind": "deal", "id": deal_id}
    assert [(line["description"], line["quantity"], line["unit_price"], line["amount"]) for line in request["lines"]] \
        == [("ERP 许可 / ERP licence", Decimal("2"), Decimal("15000.00"), Decimal("30000.00")),
            ("实施 / Setup", Decimal("1"), Decimal("8000.00"), Decimal("8000.00"))]
    with erp.app_context():
        link = db.session.scalar(select(InvoiceLink))
        assert (link.source_kind, link.source_id, link.invoice_ref, link.invoice_number, link.invoice_status) == \
            ("deal", deal_id, "ERP-1", "SI-2026-0001", "draft")
    assert _count(erp, Invoice) == 0  # the module answered: nothing in the bridge's own storage

    _deliver_again(erp)
    assert len([c for c in MODULE["calls"] if c[0] == "finance_create_invoice"]) == 1
    assert len(MODULE["invoices"]) == 1 and _count(erp, InvoiceLink) == 1


def test_when_the_finance_module_fails_the_event_is_retried_later_and_invoiced_exactly_once(erp):
    from plugins.finance_bridge.models import InvoiceLink

    erp.config.update(BIGLEDGER_EVENT_RETRY_SECONDS=60)
    MODULE["fail"] = 1
    world = _world(erp)
    deal_id = _win(erp, world)  # the user's win succeeds although the module is down
    with erp.app_context():
        from plugins.crm.pipeline.models import Deal

        assert db.session.get(Deal, deal_id).status == "won"
    [delivery] = _finance_deliveries(erp)
    assert delivery.status == "failed" and "finance module is down for maintenance" in delivery.last_error
    assert MODULE["invoices"] == {} and _count(erp, InvoiceLink) == 0
    assert deliver_due(erp)["delivered"] == 0  # not before its back-off

    with erp.app_context():
        db.session.execute(update(EventDelivery).where(EventDelivery.id == delivery.id)
                           .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()
    assert deliver_due(erp)["delivered"] == 1
    keys = [c[1]["idempotency_key"] for c in MODULE["calls"] if c[0] == "finance_create_invoice"]
    assert keys == [f"crm-deal-{deal_id}"] * 2
    assert len(MODULE["invoices"]) == 1 and _count(erp, InvoiceLink) == 1
    assert _finance_deliveries(erp)[0].status == "delivered"


def test_standalone_a_won_deal_becomes_one_draft_invoice_in_the_bridge(app):
    from plugins.finance_bridge.models import Invoice, InvoiceLink

    world = _world(app)
    deal_id = _win(app, world, currency="USD", lines=[("Cloud plan 云方案", "12", "99.50")])
    with app.app_context():
        invoice = db.session.scalar(select(Invoice))
        assert (invoice.status, invoice.currency, invoice.total, invoice.company_id, invoice.customer_name) == \
            ("draft", "USD", Decimal("1194.00"), world["company"], "华信科技有限公司")
        assert invoice.number == f"INV-{invoice.id:06d}" and invoice.idempotency_key == f"crm-deal-{deal_id}"
        assert [(line.description, line.quantity, line.amount) for line in invoice.lines] == \
            [("Cloud plan 云方案", Decimal("12"), Decimal("1194.00"))]
        assert db.session.scalar(select(InvoiceLink.invoice_ref)) == str(invoice.id)
    _deliver_again(app)
    assert _count(app, Invoice) == 1 and _count(app, InvoiceLink) == 1


def test_a_deal_won_again_after_reopening_is_not_invoiced_twice(app):
    from plugins.crm.pipeline.models import Deal
    from plugins.crm.pipeline.services import reopen_deal, win_deal
    from plugins.finance_bridge.models import Invoice

    world = _world(app)
    deal_id = _win(app, world)
    with app.app_context():
        deal = db.session.get(Deal, deal_id)
        reopen_deal(db.session, deal)
        db.session.commit()
        win_deal(db.session, deal, reason="再次签约 / signed again")
        db.session.commit()
    assert _count(app, Invoice) == 1


# -- payments and balances ------------------------------------------------------------------------------------

def test_payments_through_the_api_and_the_screen_reduce_the_balance_and_emit_payment_received(erp):
    client = erp.test_client()
    from plugins.finance_bridge.models import Invoice, Payment

    MODULE["answer"] = False  # no finance module answers: the bridge's own storage does
    world = _world(erp)
    _win(erp, world, lines=[("ERP 许可 / ERP licence", "1", "10000.00")])
    with erp.app_context():
        invoice_id = db.session.scalar(select(Invoice.id))
    h = _auth(client)
    refused = client.post("/api/v1/finance/payment/", json={"invoice_id": invoice_id, "amount": "100.00"}, headers=h)
    assert refused.status_code == 400 and "draft" in refused.get_json()["message"]

    issued = client.post(f"/api/v1/finance/invoice/{invoice_id}/issue", headers=h)
    assert issued.status_code == 200 and issued.get_json()["status"] == "issued"
    assert client.post(f"/api/v1/finance/invoice/{invoice_id}/issue", headers=h).status_code == 409

    paid = client.post("/api/v1/finance/payment/", headers=h, json={
        "invoice_id": invoice_id, "amount": "4000.00", "received_at": "2026-03-02T08:30:00+00:00",
        "reference": "ICBC 0042"})
    assert paid.status_code == 201, paid.get_json()
    too_much = client.post("/api/v1/finance/payment/", json={"invoice_id": invoice_id, "amount": "6000.01"},
                           headers=h)
    assert too_much.status_code == 400 and "6,000.00" in too_much.get_json()["message"]

    [event] = MODULE["payments"]
    assert event.name == "finance_payment_received"
    assert {k: event.payload[k] for k in ("invoice_id", "company_id", "currency", "amount", "invoice_outstanding",
                                          "reference")} == {
        "invoice_id": invoice_id, "company_id": world["company"], "currency": "CNY", "amount": "4000.00",
        "invoice_outstanding": "6000.00", "reference": "ICBC 0042"}

    login(client, "boss")
    page = client.post("/finance/payments/add", data={
        "invoice": str(invoice_id), "amount": "6000.00", "received_at": "2026-03-09 09:00:00", "reference": "现金",
        "csrf_token": csrf_token(client, "/finance/payments/add")}, follow_redirects=True)
    assert page.status_code == 200
    with erp.app_context():
        invoice = db.session.get(Invoice, invoice_id)
        assert (invoice.paid, invoice.status) == (Decimal("10000.00"), "paid")
        assert db.session.scalar(select(func.count()).select_from(Payment)) == 2
    assert [e.payload["invoice_outstanding"] for e in MODULE["payments"]] == ["6000.00", "0.00"]


def test_finance_screens_issue_drafts_and_follow_the_roles(app, client):
    from plugins.finance_bridge.models import Invoice

    world = _world(app)
    _win(app, world)
    add_user(app, "cashier", "Finance")
    with app.app_context():
        invoice_id = db.session.scalar(select(Invoice.id))
    login(client, "cashier")
    client.get("/lang/en")
    listing = client.get("/finance/invoices/list/", headers=EN)
    assert listing.status_code == 200 and "INV-" in listing.get_data(as_text=True)
    page = client.post("/finance/invoices/action_post", headers=EN, follow_redirects=True, data={
        "action": "issue", "rowid": [str(invoice_id)], "csrf_token": csrf_token(client, "/finance/invoices/list/")})
    assert f"Invoice INV-{invoice_id:06d} issued, due on" in page.get_data(as_text=True)
    with app.app_context():
        invoice = db.session.get(Invoice, invoice_id)
        assert invoice.status == "issued" and invoice.due_on - invoice.issued_on == dt.timedelta(days=30)
    assert client.get("/finance/rates/add", headers=EN).status_code == 200

    rep = app.test_client()
    login(rep, "rep")
    assert rep.get("/finance/invoices/list/").status_code == 200  # sales reps read invoices
    assert rep.get("/finance/rates/add").status_code != 200  # but do not keep the rates


# -- the 360° view -------------------------------------------------------------------------------------------

def _standalone_history(app, world) -> None:
    """Two issued CNY invoices (one overdue, part paid), a USD draft and a credit hold, for the company."""
    from plugins.finance_bridge.models import Invoice
    from plugins.finance_bridge.services import (
        create_invoice,
        issue_invoice,
        record_payment,
        set_credit_hold,
        today,
    )

    with app.app_context():
        customer = {"company_id": world["company"], "contact_id": None, "name": "华信科技有限公司"}

        def invoice(key, currency, amount, issued_days_ago, created_days_ago):
            answer = create_invoice(db.session, {"idempotency_key": key, "customer": customer, "currency": currency,
                                                 "payment_terms_days": 30,
                                                 "lines": [{"description": "服务 / Service", "amount": amount}]})
            row = db.session.get(Invoice, int(answer["id"]))
            row.created_at = utcnow() - dt.timedelta(days=created_days_ago)
            if issued_days_ago is not None:
                issue_invoice(db.session, row, on=today() - dt.timedelta(days=issued_days_ago))
            return row

        overdue = invoice("t-1", "CNY", Decimal("5000.00"), 45, 46)
        invoice("t-2", "CNY", Decimal("2000.00"), 3, 4)
        invoice("t-3", "USD", Decimal("900.00"), None, 1)
        record_payment(db.session, overdue, Decimal("1500.00"), received_at=utcnow() - dt.timedelta(days=2),
                       reference="CMB 77")
        set_credit_hold(db.session, world["company"], True, "逾期 / overdue")
        db.session.commit()


def test_the_360_view_shows_balances_credit_hold_last_payment_and_a_timeline_of_invoices_and_payments(app, client):
    world = _world(app)
    _standalone_history(app, world)
    view = client.get(f"/api/v1/crm/customer/company/{world['company']}/360",
                      headers=_auth(client)).get_json()["result"]
    rows = _panel(view)
    assert rows["Outstanding (CNY)"] == "5,500.00" and rows["Overdue (CNY)"] == "3,500.00"
    assert "Outstanding (USD)" not in rows  # a draft is not owed yet
    assert rows["Credit hold"] == "Yes: 逾期 / overdue"
    assert rows["Last payment"].endswith("CNY 1,500.00 · INV-000001")
    finance = [e for e in view["timeline"]["entries"] if e["source"] == "finance_bridge"]
    assert [(e["kind"], e["title"]) for e in finance] == [
        ("invoice", "Invoice INV-000003 (draft)"), ("payment", "Payment received for INV-000001"),
        ("invoice", "Invoice INV-000002 (issued)"), ("invoice", "Invoice INV-000001 (issued)")]
    assert finance[1]["detail"] == "CNY 1,500.00 · CMB 77"

    with app.test_request_context():
        from plugins.crm.queries import CustomerRef
        from plugins.finance_bridge import plugin

        ref = CustomerRef("company", world["company"], "华信科技有限公司", (world["company"],), ())
        assert [e["kind"] for e in plugin.crm_timeline_entries(ref, 2)] == ["invoice", "payment"]

    other = client.get(f"/api/v1/crm/customer/company/{world['other']}/360", headers=_auth(client)).get_json()
    assert _panel(other["result"]) == {"Outstanding": "Nothing owed", "Credit hold": "No", "Last payment": "—"}


def test_the_360_view_shows_what_the_finance_module_says(erp):
    client = erp.test_client()
    world = _world(erp)
    MODULE["account"] = {
        "balances": [{"currency": "MYR", "outstanding": Decimal("1200.00"), "overdue": Decimal("0.00")}],
        "credit_hold": False, "credit_hold_reason": None,
        "invoices": [{"id": "ERP-9", "number": "SI-0009", "status": "issued", "created_at": utcnow(),
                      "issued_on": dt.date(2026, 1, 5), "due_on": dt.date(2026, 2, 4), "currency": "MYR",
                      "total": Decimal("1200.00"), "outstanding": Decimal("1200.00")}],
        "payments": []}
    view = client.get(f"/api/v1/crm/customer/company/{world['company']}/360",
                      headers=_auth(client)).get_json()["result"]
    assert _panel(view)["Outstanding (MYR)"] == "1,200.00"
    assert [e["title"] for e in view["timeline"]["entries"] if e["source"] == "finance_bridge"] == \
        ["Invoice SI-0009 (issued)"]
    asked = [c for c in MODULE["calls"] if c[0] == "finance_customer_account"]
    assert [(c[1]["id"], c[2]) for c in asked] == [(world["company"], 25)]  # once, for timeline and panel
    assert asked[0][1]["kind"] == "company"
    assert asked[0][1]["name"] == "华信科技有限公司"


def test_a_merged_companys_invoices_payments_and_credit_hold_follow_it_to_the_survivor(app, client):
    from plugins.crm.merge import merge

    world = _world(app)
    _standalone_history(app, world)
    with app.app_context():
        merge(db.session, "company", world["other"], world["company"])
        db.session.commit()
    h = _auth(client)
    rows = _panel(client.get(f"/api/v1/crm/customer/company/{world['other']}/360", headers=h).get_json()["result"])
    assert rows["Outstanding (CNY)"] == "5,500.00" and rows["Credit hold"] == "Yes: 逾期 / overdue"
    assert rows["Last payment"].endswith("CNY 1,500.00 · INV-000001")


# -- credit hold warns on new deals --------------------------------------------------------------------------------

def test_a_new_deal_for_a_company_on_credit_hold_warns_in_the_api_and_on_the_screen(app, client):
    from plugins.finance_bridge.services import set_credit_hold

    world = _world(app)
    with app.app_context():
        set_credit_hold(db.session, world["company"], True, "逾期 60 天 / 60 days overdue")
        db.session.commit()
        from plugins.crm.pipeline.models import Pipeline

        pipeline_id = db.session.scalar(select(Pipeline.id))
    h = _auth(client)
    held = client.post("/api/v1/crm/deal/", headers=h, json={"name": "扩容 / Expansion", "company_id": world["company"],
                                                             "pipeline_id": pipeline_id, "currency": "CNY"})
    assert held.status_code == 201
    assert held.get_json()["warnings"] == [
        "华信科技有限公司 is on credit hold (逾期 60 天 / 60 days overdue): check with finance before promising "
        "delivery."]
    free = client.post("/api/v1/crm/deal/", headers=h, json={"name": "新机会", "company_id": world["other"],
                                                            "pipeline_id": pipeline_id, "currency": "CNY"})
    assert free.status_code == 201 and free.get_json()["warnings"] == []

    login(client, "boss")
    client.get("/lang/en")
    page = client.post("/dealview/add", data={
        "name": "第二期 / Phase 2", "company": str(world["company"]), "pipeline": str(pipeline_id), "currency": "CNY",
        "amount": "1000", "csrf_token": csrf_token(client, "/dealview/add")}, headers=EN, follow_redirects=True)
    assert "华信科技有限公司 is on credit hold" in page.get_data(as_text=True)

    board = client.post(f"/api/v1/crm/board/{pipeline_id}/deals", headers=h,
                        json={"name": "看板新建 / From the board", "company_id": world["company"]})
    assert board.status_code == 201 and board.get_json()["warnings"][0].startswith("华信科技有限公司 is on credit hold")


def test_credit_holds_and_payment_terms_are_set_from_the_360_view_and_used_on_invoices(app, client):
    from plugins.finance_bridge.models import CreditHold, Invoice

    world = _world(app)
    app.config["BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS"] = 14
    login(client, "boss")
    client.get("/lang/en")
    view = client.get(f"/crm/customer/company/{world['company']}").get_data(as_text=True)
    assert f'href="/finance/credit_holds/add?company_id={world["company"]}"' in view
    assert "Set a credit hold or payment terms" in view
    form = client.get(f"/finance/credit_holds/add?company_id={world['company']}").get_data(as_text=True)
    assert f'value="{world["company"]}"' in form  # the company is filled in

    def add(company_id, terms="45", on_hold=None):
        data = {"company_id": str(company_id), "reason": "", "payment_terms_days": terms,
                "csrf_token": csrf_token(client, "/finance/credit_holds/add")}
        if on_hold:
            data["on_hold"] = "y"
        return client.post("/finance/credit_holds/add", data=data, follow_redirects=True).get_data(as_text=True)

    assert "there is no company 987654 in the CRM" in add(987654)
    assert "between 0 and 365 days" in add(world["company"], terms="400")
    add(world["company"])
    listing = client.get("/finance/credit_holds/list/").get_data(as_text=True)
    assert "华信科技有限公司" in listing  # by its CRM name
    with app.app_context():
        hold = db.session.scalar(select(CreditHold).where(CreditHold.company_id == world["company"]))
        assert (hold.on_hold, hold.payment_terms_days) == (False, 45)
    again = client.get(f"/crm/customer/company/{world['company']}").get_data(as_text=True)
    assert f'href="/finance/credit_holds/add?company_id={world["company"]}"' in again
    opened = client.get(f"/finance/credit_holds/add?company_id={world['company']}")
    assert opened.status_code == 302 and opened.location.endswith(f"/finance/credit_holds/edit/{hold.id}")  # not a second

    _win(app, world)
    _win(app, world, company=world["other"])
    with app.app_context():
        terms = dict(db.session.execute(select(Invoice.company_id, Invoice.payment_terms_days)).all())
    assert terms == {world["company"]: 45, world["other"]: 14}

    h = _auth(client)
    refused = client.post("/api/v1/finance/credit_hold/", headers=h, json={"company_id": 987654, "on_hold": True})
    assert refused.status_code == 400 and "there is no company 987654" in refused.get_json()["message"]
    client.get("/logout/")
    login(client, "rep")  # a sales rep sees the panel, not the link
    assert "/finance/credit_holds/" not in client.get(f"/crm/customer/company/{world['company']}").get_data(
        as_text=True)


# -- exchange rates for reports ----------------------------------------------------------------------------------

def test_the_forecast_in_one_currency_converts_with_finance_rates_and_names_a_missing_rate(app, client):
    world = _world(app)
    with app.app_context():
        _deal(world, currency="CNY", lines=(), amount=Decimal("10000.00"), expected_close=dt.date(2026, 2, 10))
        _deal(world, currency="USD", lines=(), amount=Decimal("1000.00"), expected_close=dt.date(2026, 2, 20))
    h = _auth(client)
    query = "/api/v1/crm/forecast/?period=month&date_from=2026-01-01&date_to=2026-03-31&report_currency=CNY"
    missing = client.get(query, headers=h)
    assert missing.status_code == 400 and "USD → CNY" in missing.get_json()["message"]
    same = client.get(query.replace("CNY", "USD") + "&currency=USD", headers=h)  # one currency needs no rate
    assert same.status_code == 200 and same.get_json()["totals"]["pipeline"] == "1000.00"

    bad = client.post("/api/v1/finance/exchange_rate/", headers=h, json={
        "from_currency": "usd", "to_currency": "USD", "valid_from": "2026-01-01", "rate": "7.1"})
    assert bad.status_code == 400
    added = client.post("/api/v1/finance/exchange_rate/", headers=h, json={
        "from_currency": "usd", "to_currency": "cny", "valid_from": "2026-01-01", "rate": "7.1000"})
    assert added.status_code == 201, added.get_json()
    converted = client.get(query, headers=h).get_json()
    assert converted["currency"] == "CNY"
    assert [(r["period"], r["pipeline"]) for r in converted["result"]] == [("2026-02", "17100.00")]
    login(client, "boss")
    client.get("/lang/en")
    page = client.get("/crm/forecast/?period=month&date_from=2026-01-01&date_to=2026-03-31&report_currency=CNY")
    html = page.get_data(as_text=True)
    picker = html[html.index('id="bl-report-currency"'):]
    picker = picker[:picker.index("</select>")]
    assert '<option value="CNY" selected>' in picker and '<option value="USD">' in picker
    assert "17,100" in html or "17100" in html
    missing_rate = client.get("/crm/forecast/?period=month&date_from=2026-01-01&date_to=2026-03-31"
                              "&report_currency=EUR").get_data(as_text=True)
    assert 'id="bl-forecast-error"' in missing_rate and "CNY → EUR" in missing_rate

    with app.test_request_context():  # the inverse rate serves the other direction
        from plugins.crm.pipeline.services import exchange_rate

        assert exchange_rate("CNY", "USD", dt.date(2026, 5, 1)).quantize(Decimal("0.0001")) == Decimal("0.1408")
        assert exchange_rate("USD", "CNY", dt.date(2025, 12, 31)) is None  # before the rate was valid


def test_rates_come_from_the_finance_module_when_it_has_them(erp):
    MODULE["rates"] = {("EUR", "CNY"): Decimal("7.8")}
    with erp.test_request_context():
        from plugins.crm.pipeline.services import exchange_rate

        assert exchange_rate("EUR", "CNY", dt.date(2026, 6, 1)) == Decimal("7.8")
        assert exchange_rate("CNY", "CNY", dt.date(2026, 6, 1)) == Decimal(1)
    assert [c for c in MODULE["calls"] if c[0] == "finance_exchange_rate"] == [
        ("finance_exchange_rate", "EUR", "CNY", dt.date(2026, 6, 1))]


# -- switched off -------------------------------------------------------------------------------------------------

def test_with_the_bridge_switched_off_the_crm_works_and_nothing_is_asked_or_invoiced(erp):
    client = erp.test_client()
    from bigledger_core.modules import disable_module
    from plugins.finance_bridge.models import Invoice, InvoiceLink
    from plugins.finance_bridge.services import set_credit_hold

    world = _world(erp)
    with erp.app_context():
        set_credit_hold(db.session, world["company"], True, "hold")
        db.session.commit()
    with erp.test_request_context():
        disable_module("finance_bridge", by="test")
    deal_id = _win(erp, world)
    with erp.app_context():
        from plugins.crm.pipeline.models import Deal

        assert db.session.get(Deal, deal_id).status == "won"
    assert MODULE["calls"] == [] and MODULE["invoices"] == {}
    assert _count(erp, Invoice) == 0 and _count(erp, InvoiceLink) == 0 and _finance_deliveries(erp) == []
    h = _auth(client)
    view = client.get(f"/api/v1/crm/customer/company/{world['company']}/360", headers=h).get_json()["result"]
    assert [p for p in view["panels"] if p["module"] == "finance_bridge"] == []
    with erp.test_request_context():
        from plugins.crm.pipeline.models import Deal
        from plugins.crm.pipeline.services import deal_warnings, exchange_rate

        assert deal_warnings(db.session.get(Deal, deal_id)) == []
        assert exchange_rate("USD", "CNY", dt.date(2026, 1, 1)) is None
    assert client.get("/api/v1/finance/invoice/", headers=h).status_code == 404
    assert MODULE["calls"] == []


# -- demo -------------------------------------------------------------------------------------------------------

def test_the_demo_shows_invoices_payments_and_a_credit_hold_in_the_360_view(app, client):
    from bigledger_core.demo import load_demo
    from plugins.crm.models import Company
    from plugins.finance_bridge.models import Invoice, Payment

    with app.app_context():
        load_demo()
        load_demo()
        invoices, payments = _count(app, Invoice), _count(app, Payment)
        assert invoices >= 5 and payments == 2  # the demo's won deal is invoiced too
        huaxia = db.session.scalar(select(Company.id).where(Company.external_id == "demo-co-1"))
        lion = db.session.scalar(select(Company.id).where(Company.external_id == "demo-co-4"))
    add_user(app, "boss", "Admin")
    h = _auth(client)
    rows = _panel(client.get(f"/api/v1/crm/customer/company/{huaxia}/360", headers=h).get_json()["result"])
    assert rows["Outstanding (CNY)"] == "76,000.00" and rows["Overdue (CNY)"] == "28,000.00"
    assert "CNY 20,000.00" in rows["Last payment"]
    assert _panel(client.get(f"/api/v1/crm/customer/company/{lion}/360", headers=h).get_json()["result"])[
        "Credit hold"].startswith("Yes")
