"""The inventory bridge: a deal's line items show stock and the customer's price (from an inventory module of the
deployment, or the bridge's own products, stock and price lists), a line added without a price takes the
customer's price, a short or unavailable product is flagged on the deal's page and warned about when saved; with
the bridge switched off the CRM works and no inventory hook is called.

This test module is also a plugin: loaded as `erp_inventory` (see `erp`), it plays the BigLedger inventory module
an integrator would install, answering the `inventory_*` service hooks and recording every call.
"""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from bigledger_core import hookimpl
from bigledger_core.db import db, utcnow
from tests.conftest import SAMPLE_PLUGIN, add_user, api_token, csrf_token, login

INVENTORY_MODULE = __name__
EN = {"Accept-Language": "en"}
SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")

# -- the inventory module, as an integrator would write it -------------------------------------------------------

MODULE = {"answer": True, "fail": False, "calls": [], "stock": {}, "prices": {}}


@hookimpl
def bigledger_manifest():
    return {"name": "erp_inventory", "version": "1.0", "label": {"zh": "ERP 库存", "en": "ERP inventory"},
            "requires": []}


@hookimpl
def inventory_availability(product_codes, warehouse):
    MODULE["calls"].append(("inventory_availability", list(product_codes), warehouse))
    if MODULE["fail"]:
        raise ConnectionError("inventory module is down for maintenance")
    if not MODULE["answer"]:
        return None
    return {code: MODULE["stock"][code] for code in product_codes if code in MODULE["stock"]}


@hookimpl
def inventory_prices(request):
    MODULE["calls"].append(("inventory_prices", request))
    if MODULE["fail"] or not MODULE["answer"]:
        return None
    return [MODULE["prices"].get(item["product_code"]) for item in request["items"]]


# -- fixtures and helpers -----------------------------------------------------------------------------------

@pytest.fixture
def erp(make_app):
    """An app with the inventory module installed."""
    MODULE.update(answer=True, fail=False, calls=[], stock={}, prices={})
    return make_app.reused(BIGLEDGER_EXTRA_PLUGINS=[SAMPLE_PLUGIN, INVENTORY_MODULE])


def _world(app) -> dict:
    """A sales pipeline, an admin, a sales rep, and two companies: 华信 buys from a contract price list."""
    from plugins.crm.models import Company
    from plugins.crm.pipeline import config
    from plugins.crm.pipeline.services import load_pipeline

    add_user(app, "boss", "Admin")
    add_user(app, "rep", "Sales Rep")
    with app.app_context():
        rep = app.appbuilder.sm.find_user(username="rep")
        load_pipeline(db.session, config.parse(SEED))
        company = Company(name="华信科技有限公司", external_id="ERP-C-001", owner_id=rep.id)
        other = Company(name="Maju Jaya Sdn Bhd", owner_id=rep.id)
        db.session.add_all([company, other])
        db.session.commit()
        return {"rep": rep.id, "company": company.id, "other": other.id}


def _deal(app, world, lines, *, company=None, currency="CNY") -> int:
    """A deal with line items (product, code, quantity, unit price)."""
    from plugins.crm.pipeline.models import Deal, DealLine
    from plugins.crm.pipeline.services import create_deal

    with app.app_context():
        deal = create_deal(db.session, Deal(name="门店升级 / Store upgrade", company_id=company or world["company"],
                                            owner_id=world["rep"], currency=currency), user_id=world["rep"])
        for position, (product, code, quantity, price) in enumerate(lines):
            deal.lines.append(DealLine(product=product, product_code=code, quantity=Decimal(quantity),
                                       unit_price=Decimal(price), position=position))
        db.session.commit()
        return deal.id


def _catalogue(app, world) -> None:
    """The bridge's own storage: products, stock in two warehouses, a default CNY and USD list, a contract list
    for 华信 and one that has expired."""
    from plugins.inventory_bridge.models import (
        CustomerPriceList,
        PriceList,
        PriceListItem,
        Product,
        Stock,
    )

    with app.app_context():
        s = db.session
        kiosk, terminal = Product(code="KIOSK-01", name="自助收银机", name_en="Self-checkout kiosk", unit="台"), \
            Product(code="TERM-02", name="收银终端", name_en="POS terminal")
        scanner = Product(code="SCAN-03", name="扫描枪", name_en="Scanner")
        old = Product(code="OLD-04", name="旧款打印机", name_en="Old printer", active=False)
        setup = Product(code="SVC-05", name="安装服务", name_en="Installation", stocked=False)
        s.add_all([kiosk, terminal, scanner, old, setup])
        s.flush()
        s.add_all([Stock(product_id=kiosk.id, warehouse="SH-01", on_hand=Decimal(2), reserved=Decimal(1)),
                   Stock(product_id=kiosk.id, warehouse="KL-01", on_hand=Decimal(2)),
                   Stock(product_id=terminal.id, warehouse="SH-01", on_hand=Decimal(40)),
                   Stock(product_id=scanner.id, warehouse="SH-01", on_hand=Decimal(4), reserved=Decimal(4)),
                   Stock(product_id=old.id, warehouse="SH-01", on_hand=Decimal(9))])
        today = utcnow().date()
        standard = PriceList(name="Standard CNY", currency="CNY", is_default=True)
        dollars = PriceList(name="Standard USD", currency="USD", is_default=True)
        contract = PriceList(name="华信协议价", currency="CNY", valid_from=today - dt.timedelta(days=30))
        expired = PriceList(name="2020 promotion", currency="CNY", valid_to=dt.date(2020, 12, 31))
        for price_list, rows in ((standard, [(kiosk, "1", "15800"), (kiosk, "5", "14900"), (terminal, "1", "2600"),
                                             (setup, "1", "800")]),
                                 (dollars, [(kiosk, "1", "2200")]),
                                 (contract, [(kiosk, "1", "15000"), (kiosk, "3", "14000")]),
                                 (expired, [(terminal, "1", "1")])):
            price_list.items = [PriceListItem(product_id=p.id, min_quantity=Decimal(q), price=Decimal(v))
                                for p, q, v in rows]
        s.add_all([standard, dollars, contract, expired])
        s.flush()
        s.add_all([CustomerPriceList(company_id=world["company"], price_list_id=contract.id),
                   CustomerPriceList(company_id=world["company"], price_list_id=expired.id)])
        s.commit()


def _auth(client, username="boss"):
    return {"Authorization": f"Bearer {api_token(client, username)}", **EN}


def _extras(client, deal_id, headers) -> list[dict]:
    response = client.get(f"/api/v1/crm/deal/{deal_id}/extras", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["lines"]


def _inventory(lines: list[dict]) -> list[dict | None]:
    """The inventory bridge's check of each line (None for a line it said nothing about)."""
    return [next((c for c in line["checks"] if c["module"] == "inventory_bridge"), None) for line in lines]


LINES = [("自助收银机 / Kiosk", "KIOSK-01", "5", "0"), ("收银终端 / Terminal", "TERM-02", "10", "2500"),
         ("培训 / Training", None, "1", "900"), ("扫描枪 / Scanner", "SCAN-03", "2", "0"),
         ("旧款打印机 / Old printer", "OLD-04", "1", "0"), ("安装 / Installation", "SVC-05", "3", "0"),
         ("未知 / Unknown", "NOPE-9", "1", "0")]


# -- standalone: the bridge's own products, stock and price lists -------------------------------------------------

def test_standalone_each_line_shows_its_stock_and_the_customers_price_with_a_fixed_number_of_queries(app, client):
    world = _world(app)
    _catalogue(app, world)
    deal_id = _deal(app, world, LINES)
    h = _auth(client)
    lines = _extras(client, deal_id, h)
    checks = _inventory(lines)
    assert [(c["status"], c["message"]) if c else None for c in checks] == [
        ("short", "KIOSK-01: only 3 of 5 in stock."),
        ("available", "TERM-02: 40 in stock."),
        None,  # no product code: not the inventory's business
        ("unavailable", "SCAN-03: none in stock, 2 wanted."),  # all 4 reserved
        ("unavailable", "OLD-04 is no longer sold."),
        ("available", "SVC-05 is not kept in stock: always available."),
        ("unavailable", "NOPE-9 is not in the product list.")]
    assert [line["flagged"] for line in lines] == [True, False, False, True, True, False, True]
    # 华信's contract list (its best tier for 5), then the default CNY list; an expired list never counts
    assert [(c["price"], c["price_list"]) if c and "price" in c else None for c in checks] == [
        ("14000.00", "华信协议价"), ("2600.00", "Standard CNY"), None, None, None, ("800.00", "Standard CNY"), None]
    assert checks[0]["available"] == "3.0000" and checks[0]["currency"] == "CNY"

    other = _inventory(_extras(client, _deal(app, world, LINES[:1], company=world["other"]), h))
    assert (other[0]["price"], other[0]["price_list"]) == ("14900.00", "Standard CNY")  # the default list's tier
    dollars = _inventory(_extras(client, _deal(app, world, LINES[:1], currency="USD"), h))
    assert (dollars[0]["price"], dollars[0]["currency"]) == ("2200.00", "USD")  # a USD deal is priced in USD
    euros = _inventory(_extras(client, _deal(app, world, LINES[:1], currency="EUR"), h))
    assert "price" not in euros[0] and euros[0]["status"] == "short"  # no EUR list: no price, never converted

    # the same number of statements for one line and for nineteen
    from plugins.crm.pipeline.models import Deal
    from plugins.crm.pipeline.services import line_checks

    def statements(deal_id: int) -> int:
        with app.test_request_context(headers=EN):
            deal = db.session.get(Deal, deal_id)
            lines = list(deal.lines)
            _ = deal.company, deal.contact
            seen = []

            def listener(_conn, _cursor, statement, *_rest):
                seen.append(statement)

            event.listen(db.engine, "before_cursor_execute", listener)
            try:
                line_checks(deal, lines)
            finally:
                event.remove(db.engine, "before_cursor_execute", listener)
            return len(seen)

    big = _deal(app, world, LINES * 2 + [("再来 / More", "TERM-02", "1", "0")] * 5)
    assert statements(big) == statements(_deal(app, world, LINES[:1])) <= 4


def test_the_deal_page_flags_short_and_unavailable_lines(app, client):
    world = _world(app)
    _catalogue(app, world)
    deal_id = _deal(app, world, LINES)
    login(client, "boss")
    client.get("/lang/en")
    html = client.get(f"/dealview/show/{deal_id}", headers=EN).get_data(as_text=True)
    table = html.split('id="bl-deal-line-checks"', 1)[1].split("</table>", 1)[0]
    statuses = re.findall(r'<tr class="(danger)?" data-line="\d+" data-status="(\w+)"', table)
    assert [(flagged == "danger", status) for flagged, status in statuses] == [
        (True, "short"), (False, "available"), (True, "unavailable"), (True, "unavailable"), (False, "available"),
        (True, "unavailable")]
    assert "KIOSK-01: only 3 of 5 in stock." in table and "14000.00 CNY · 华信协议价" in table
    assert "NOPE-9 is not in the product list." in table


# -- saving a line: the customer's price, warnings ---------------------------------------------------------------

def test_a_new_line_without_a_price_takes_the_customers_price_and_a_short_one_warns_in_the_api(app, client):
    from plugins.crm.pipeline.models import DealLine

    world = _world(app)
    _catalogue(app, world)
    deal_id = _deal(app, world, [])
    h = _auth(client)
    short = client.post("/api/v1/crm/deal_line/", headers=h, json={
        "deal_id": deal_id, "product": "自助收银机 / Kiosk", "product_code": "KIOSK-01", "quantity": 4})
    assert short.status_code == 201, short.get_json()
    assert short.get_json()["warnings"] == ["KIOSK-01: only 3 of 4 in stock."]
    fine = client.post("/api/v1/crm/deal_line/", headers=h, json={
        "deal_id": deal_id, "product": "收银终端 / Terminal", "product_code": "TERM-02", "quantity": 2,
        "unit_price": 0})
    assert fine.status_code == 201 and fine.get_json()["warnings"] == []
    priced = client.post("/api/v1/crm/deal_line/", headers=h, json={
        "deal_id": deal_id, "product": "收银终端 / Terminal", "product_code": "TERM-02", "quantity": 1,
        "unit_price": "2399.00"})
    with app.app_context():
        assert db.session.get(DealLine, short.get_json()["id"]).unit_price == Decimal("14000.00")  # contract tier 3+
        assert db.session.get(DealLine, fine.get_json()["id"]).unit_price == Decimal("2600.00")  # default list
        assert db.session.get(DealLine, priced.get_json()["id"]).unit_price == Decimal("2399.00")  # a given price stays
    changed = client.put(f"/api/v1/crm/deal_line/{fine.get_json()['id']}", headers=h, json={"quantity": 50})
    assert changed.status_code == 200 and changed.get_json()["warnings"] == ["TERM-02: only 40 of 50 in stock."]
    gone = client.post("/api/v1/crm/deal_line/", headers=h, json={
        "deal_id": deal_id, "product": "旧款打印机", "product_code": "OLD-04", "quantity": 1})
    assert gone.status_code == 201 and gone.get_json()["warnings"] == ["OLD-04 is no longer sold."]
    with app.app_context():
        assert db.session.get(DealLine, gone.get_json()["id"]).unit_price == Decimal("0.00")  # nobody sells it


def test_a_line_added_on_the_screen_takes_the_customers_price_and_flashes_the_shortage(app, client):
    from plugins.crm.pipeline.models import DealLine

    world = _world(app)
    _catalogue(app, world)
    deal_id = _deal(app, world, [])
    login(client, "rep")
    client.get("/lang/en")
    page = client.post("/deallineview/add", headers=EN, follow_redirects=True, data={
        "deal": str(deal_id), "product": "自助收银机 / Kiosk", "product_code": "KIOSK-01", "quantity": "6",
        "unit_price": "", "discount": "0", "billing_period": "once", "position": "0",
        "csrf_token": csrf_token(client, "/deallineview/add")})  # no price typed: the customer's is taken
    assert page.status_code == 200
    assert "KIOSK-01: only 3 of 6 in stock." in page.get_data(as_text=True)
    with app.app_context():
        line = db.session.scalar(select(DealLine).where(DealLine.deal_id == deal_id))
        assert (line.quantity, line.unit_price) == (Decimal(6), Decimal("14000.00"))


# -- an inventory module of the deployment ------------------------------------------------------------------------

def test_the_inventory_module_is_asked_once_per_deal_page_and_its_answers_win(erp):
    client = erp.test_client()
    world = _world(erp)
    _catalogue(erp, world)  # the bridge's own storage says otherwise: the module wins
    MODULE["stock"] = {"KIOSK-01": {"name": "Kiosk", "unit": "pc", "active": True, "stocked": True,
                                    "on_hand": Decimal(30), "reserved": Decimal(0), "available": Decimal(30)},
                       "TERM-02": {"name": "Terminal", "unit": "pc", "active": True, "stocked": True,
                                   "on_hand": Decimal(7), "reserved": Decimal(0), "available": Decimal(7)},
                       "SCAN-03": {"name": "Scanner", "active": True, "available": None}}
    MODULE["prices"] = {"KIOSK-01": {"price": Decimal("12345.00"), "currency": "CNY", "price_list": "ERP 合同价"}}
    deal_id = _deal(erp, world, LINES[:4])
    MODULE["calls"].clear()
    checks = _inventory(_extras(client, deal_id, _auth(client)))
    assert [(c["status"], c["message"]) if c else None for c in checks] == [
        ("available", "KIOSK-01: 30 in stock."), ("short", "TERM-02: only 7 of 10 in stock."), None,
        ("unknown", "SCAN-03: stock not known.")]
    assert (checks[0]["price"], checks[0]["price_list"]) == ("12345.00", "ERP 合同价") and "price" not in checks[1]
    assert [call[0] for call in MODULE["calls"]] == ["inventory_availability", "inventory_prices"]
    assert MODULE["calls"][0] == ("inventory_availability", ["KIOSK-01", "SCAN-03", "TERM-02"], None)
    request = MODULE["calls"][1][1]
    assert request["customer"] == {"company_id": world["company"], "contact_id": None, "name": "华信科技有限公司",
                                   "external_id": "ERP-C-001"}
    assert request["currency"] == "CNY" and request["on"] == utcnow().date()
    assert request["items"] == [{"product_code": "KIOSK-01", "quantity": Decimal(5)},
                                {"product_code": "TERM-02", "quantity": Decimal(10)},
                                {"product_code": "SCAN-03", "quantity": Decimal(2)}]

    MODULE["answer"] = False  # a module that knows nothing leaves it to the bridge's own storage
    assert [c["status"] if c else None for c in _inventory(_extras(client, deal_id, _auth(client)))] == [
        "short", "available", None, "unavailable"]


def test_a_failing_inventory_module_leaves_stock_unknown_and_the_deal_page_works(erp):
    client = erp.test_client()
    world = _world(erp)
    MODULE["fail"] = True
    deal_id = _deal(erp, world, LINES[:2])
    checks = _inventory(_extras(client, deal_id, _auth(client)))
    assert [(c["status"], c["message"]) for c in checks] == [
        ("unknown", "KIOSK-01: stock not checked, the inventory module did not answer."),
        ("unknown", "TERM-02: stock not checked, the inventory module did not answer.")]
    login(client, "boss")
    assert client.get(f"/dealview/show/{deal_id}", headers=EN).status_code == 200


# -- switched off ---------------------------------------------------------------------------------------------------

def test_with_the_bridge_switched_off_the_crm_works_and_no_inventory_hook_is_called(erp):
    from bigledger_core.modules import disable_module
    from plugins.crm.pipeline.models import DealLine

    client = erp.test_client()
    world = _world(erp)
    MODULE["stock"] = {"KIOSK-01": {"name": "Kiosk", "active": True, "stocked": True, "on_hand": Decimal(1),
                                    "reserved": Decimal(0), "available": Decimal(1)}}
    MODULE["prices"] = {"KIOSK-01": {"price": Decimal("99.00"), "currency": "CNY", "price_list": "P"}}
    deal_id = _deal(erp, world, LINES[:1])
    with erp.test_request_context():
        disable_module("inventory_bridge", by="test")
    MODULE["calls"].clear()
    h = _auth(client)
    assert _extras(client, deal_id, h)[0]["checks"] == []
    added = client.post("/api/v1/crm/deal_line/", headers=h, json={
        "deal_id": deal_id, "product": "自助收银机", "product_code": "KIOSK-01", "quantity": 5})
    assert added.status_code == 201 and added.get_json()["warnings"] == []
    with erp.app_context():
        assert db.session.get(DealLine, added.get_json()["id"]).unit_price == Decimal("0.00")
    login(client, "boss")
    page = client.get(f"/dealview/show/{deal_id}", headers=EN)
    assert page.status_code == 200 and "bl-deal-line-checks" not in page.get_data(as_text=True)
    assert client.get("/inventory/products/list/").status_code == 404
    assert client.get("/api/v1/inventory/availability?codes=KIOSK-01", headers=h).status_code == 404
    assert client.get("/api/v1/inventory/product/", headers=h).status_code == 404
    assert MODULE["calls"] == []


# -- screens, API, roles, bad input ---------------------------------------------------------------------------------

def test_a_sales_rep_checks_availability_and_price_before_promising(app, client):
    world = _world(app)
    _catalogue(app, world)
    rep = _auth(client, "rep")
    answer = client.get(f"/api/v1/inventory/availability?codes=KIOSK-01,NOPE-9,SVC-05&quantity=3&currency=cny"
                        f"&company_id={world['company']}", headers=rep)
    assert answer.status_code == 200, answer.get_json()
    rows = {row["code"]: row for row in answer.get_json()["result"]}
    kiosk = rows["KIOSK-01"]
    assert (kiosk["known"], kiosk["name"], kiosk["unit"], kiosk["on_hand"], kiosk["reserved"], kiosk["available"]) \
        == (True, "Self-checkout kiosk", "台", "4.0000", "1.0000", "3.0000")
    assert (kiosk["status"], kiosk["message"], kiosk["price"], kiosk["price_list"]) == \
        ("available", "KIOSK-01: 3 in stock.", "14000.00", "华信协议价")
    assert (rows["NOPE-9"]["known"], rows["NOPE-9"]["status"]) == (False, "unavailable")
    assert (rows["SVC-05"]["status"], rows["SVC-05"]["price"]) == ("available", "800.00")
    one = client.get("/api/v1/inventory/availability?codes=KIOSK-01&warehouse=KL-01", headers=rep).get_json()
    assert one["result"][0]["available"] == "2.0000" and one["result"][0]["price"] is None  # no currency: no price
    zh = client.get("/api/v1/inventory/availability?codes=KIOSK-01", headers={**rep, "Accept-Language": "zh"})
    assert zh.get_json()["result"][0]["name"] == "自助收银机"


def test_bad_input_is_refused_with_a_message_naming_the_field(app, client):
    world = _world(app)
    _catalogue(app, world)
    h = _auth(client)

    def refused(response, text):
        assert response.status_code == 400, response.get_data(as_text=True)
        assert text in response.get_json()["message"], response.get_json()

    check = "/api/v1/inventory/availability"
    refused(client.get(check, headers=h), "codes: give one or more product codes")
    refused(client.get(f"{check}?codes=KIOSK-01&quantity=-2", headers=h), "quantity: give a quantity above zero")
    refused(client.get(f"{check}?codes=KIOSK-01&quantity=lots", headers=h), "not “lots”")
    refused(client.get(f"{check}?codes=KIOSK-01&currency=RMB1", headers=h), "currency: give a three-letter")
    refused(client.get(f"{check}?codes=KIOSK-01&company_id=abc", headers=h), "company_id: give the CRM id")
    refused(client.get(f"{check}?codes=" + ",".join(f"C{i}" for i in range(201)), headers=h), "at most 200")

    refused(client.post("/api/v1/inventory/product/", headers=h, json={"code": "KIOSK-01", "name": "重复"}),
            "code: KIOSK-01 is already the code of another product.")
    refused(client.post("/api/v1/inventory/product/", headers=h, json={"code": "A B", "name": "x"}),
            "no spaces or commas")
    created = client.post("/api/v1/inventory/product/", headers=h, json={"code": "CHAIR-7", "name": "收银椅",
                                                                         "unit": "把"})
    assert created.status_code == 201, created.get_json()
    chair = created.get_json()["id"]
    refused(client.post("/api/v1/inventory/stock/", headers=h, json={
        "product_id": chair, "warehouse": "SH-01", "on_hand": "2", "reserved": "5"}),
        "reserved: at most what is on hand (2).")
    stocked = client.post("/api/v1/inventory/stock/", headers=h, json={
        "product_id": chair, "warehouse": "SH-01", "on_hand": "2"})
    assert stocked.status_code == 201, stocked.get_json()
    refused(client.post("/api/v1/inventory/stock/", headers=h, json={
        "product_id": chair, "warehouse": "SH-01", "on_hand": "1"}), "already has stock in SH-01")
    refused(client.post("/api/v1/inventory/price_list/", headers=h, json={
        "name": "Spring", "currency": "CNY", "valid_from": "2026-05-01", "valid_to": "2026-04-01"}),
        "valid_to: the list cannot end (2026-04-01) before it starts (2026-05-01).")
    refused(client.post("/api/v1/inventory/price_list/", headers=h, json={"name": "Spring", "currency": "元"}),
            "currency: give a three-letter currency code")
    spring = client.post("/api/v1/inventory/price_list/", headers=h, json={"name": "Spring", "currency": "cny"})
    assert spring.status_code == 201 and spring.get_json()["result"]["currency"] == "CNY"
    refused(client.post("/api/v1/inventory/price_list_item/", headers=h, json={
        "price_list_id": spring.get_json()["id"], "product_id": chair, "price": "-1"}), "price: give zero or")
    refused(client.post("/api/v1/inventory/customer_price_list/", headers=h, json={
        "company_id": 0, "price_list_id": spring.get_json()["id"]}), "company_id: give the CRM id")
    refused(client.post("/api/v1/inventory/customer_price_list/", headers=h, json={
        "company_id": 987654, "price_list_id": spring.get_json()["id"]}), "there is no company 987654 in the CRM")

    login(client, "boss")
    client.get("/lang/en")
    page = client.post("/inventory/products/add", headers=EN, follow_redirects=True, data={
        "code": "TERM 02", "name": "又一个终端", "stocked": "y", "active": "y",
        "csrf_token": csrf_token(client, "/inventory/products/add")})
    assert "code: a product code has no spaces or commas, e.g. KIOSK-01 (not “TERM 02”)." in \
        page.get_data(as_text=True)
    from plugins.inventory_bridge.models import Product

    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Product).where(Product.name == "又一个终端")) == 0


def test_the_inventory_screens_follow_the_roles(app, client):
    world = _world(app)
    _catalogue(app, world)
    add_user(app, "keeper", "Inventory")
    add_user(app, "agent", "Support Agent")
    login(client, "keeper")
    client.get("/lang/en")
    listing = client.get("/inventory/stock/list/", headers=EN)
    assert listing.status_code == 200 and "KL-01" in listing.get_data(as_text=True)
    added = client.post("/inventory/products/add", headers=EN, follow_redirects=True, data={
        "code": "CHAIR-7", "name": "收银椅", "name_en": "Cashier chair", "stocked": "y", "active": "y",
        "csrf_token": csrf_token(client, "/inventory/products/add")})
    assert added.status_code == 200 and "CHAIR-7" in client.get("/inventory/products/list/").get_data(as_text=True)
    assert client.get("/inventory/customer_price_lists/list/").status_code == 200

    rep = app.test_client()
    login(rep, "rep")
    assert rep.get("/inventory/products/list/").status_code == 200  # sales reps read products, stock and prices
    assert rep.get("/inventory/products/add").status_code != 200  # but do not keep them
    assert rep.get("/inventory/customer_price_lists/list/").status_code != 200

    agent = app.test_client()
    login(agent, "agent")
    for page in ("/inventory/products/list/", "/inventory/stock/list/", "/inventory/price_lists/list/"):
        assert agent.get(page).status_code != 200
    assert "/inventory/" not in agent.get("/", headers=EN).get_data(as_text=True)
    token = _auth(client, "agent")
    assert client.get("/api/v1/inventory/availability?codes=KIOSK-01", headers=token).status_code == 403
    assert client.get("/api/v1/inventory/product/", headers=token).status_code == 403


# -- demo -------------------------------------------------------------------------------------------------------

def test_the_demo_deal_page_flags_the_short_licences_and_prices_them_from_the_contract_list(app, client):
    from bigledger_core.demo import load_demo
    from plugins.crm.pipeline.models import Deal
    from plugins.inventory_bridge.models import PriceList, Product, Stock

    with app.app_context():
        load_demo()
        load_demo()  # twice: nothing is added twice
        assert db.session.scalar(select(func.count()).select_from(Product)) == 8
        assert db.session.scalar(select(func.count()).select_from(Stock)) == 7
        assert db.session.scalar(select(func.count()).select_from(PriceList)) == 3
        upgrade = db.session.scalar(select(Deal.id).where(Deal.name == "华夏零售 ERP 升级 / ERP upgrade"))
        warehouse = db.session.scalar(select(Deal.id).where(Deal.name == "Maju Jaya 仓储系统 / Warehouse system"))
    add_user(app, "boss", "Admin")
    h = _auth(client)
    checks = _inventory(_extras(client, upgrade, h))
    assert [(c["status"], c["message"], c["price"], c["price_list"]) for c in checks] == [
        ("short", "ERP-LIC-STD: only 32 of 50 in stock.", "2750.00", "华夏零售协议价 / Huaxia Retail contract prices"),
        ("available", "SVC-IMPL-DAY is not kept in stock: always available.", "2300.00",
         "华夏零售协议价 / Huaxia Retail contract prices")]
    assert [(c["status"], c["price"]) for c in _inventory(_extras(client, warehouse, h))] == \
        [("unavailable", "88000.00")]
    login(client, "boss")
    html = client.get(f"/dealview/show/{upgrade}").get_data(as_text=True)  # in Chinese, the default
    assert 'data-status="short"' in html and "ERP-LIC-STD：需要 50，库存仅 32。" in html
    client.get("/lang/en")
    html = client.get(f"/dealview/show/{upgrade}").get_data(as_text=True)
    assert 'data-status="short"' in html and "ERP-LIC-STD: only 32 of 50 in stock." in html
