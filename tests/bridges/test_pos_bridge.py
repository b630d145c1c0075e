"""POS bridge: sales posted by a terminal or imported from CSV, matched to contacts, shown in the 360° view,
feeding segments; a POS module registered by the deployment answers instead of the bridge's own storage."""
from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from bigledger_core import hookimpl
from bigledger_core.cli import cli
from bigledger_core.db import db, utcnow
from bigledger_core.modules import disable_module
from plugins.crm.models import Contact, Email, Phone, Segment
from plugins.crm.segments import member_count, members, validate_definition
from plugins.crm.services import CrmValidationError
from plugins.pos_bridge.customers import PosCustomer
from plugins.pos_bridge.models import LoyaltyCard, PosSale, PosSaleLine
from tests.conftest import add_user, api_token, csrf_token, login

SALES = "/api/v1/pos/sale/"


@pytest.fixture
def people(app):
    """Three contacts: 张伟 (phone), Mei Ling Lee (e-mail), 王芳 (holds loyalty card 8800-0007)."""
    with app.app_context():
        s = db.session
        zhang, lee, wang = Contact(full_name="张伟"), Contact(full_name="Mei Ling Lee"), Contact(full_name="王芳")
        s.add_all([zhang, lee, wang])
        s.flush()
        s.add_all([Phone(contact_id=zhang.id, raw="138 0013 8000", is_primary=True),
                   Email(contact_id=lee.id, address="MeiLing@Acme.example.com", is_primary=True),
                   LoyaltyCard(number="8800-0007", contact_id=wang.id, tier="银卡 Silver", points=300)])
        s.commit()
        return {"zhang": zhang.id, "lee": lee.id, "wang": wang.id}


@pytest.fixture
def terminal(app, client):
    """Headers of a POS terminal signed in with an Integrator account."""
    add_user(app, "till", "Integrator")
    return {"Authorization": f"Bearer {api_token(client, 'till')}"}


@pytest.fixture
def admin(app, client):
    add_user(app, "boss", "Admin")
    return {"Authorization": f"Bearer {api_token(client, 'boss')}"}


def sale(receipt="R-1001", store="SH-01", total="1280.00", **extra) -> dict:
    body = {"receipt": receipt, "store": store, "sold_at": "2026-11-20T10:15:00+08:00", "currency": "CNY",
            "total": total, "lines": [{"sku": "WINE-12", "name": "宁夏红酒 / Ningxia red wine", "quantity": "2",
                                       "unit_price": "640.00"}]}
    body.update(extra)
    return body


def stored(app):
    with app.app_context():
        return db.session.execute(select(PosSale.store, PosSale.receipt, PosSale.contact_id, PosSale.matched_by,
                                         PosSale.total, PosSale.sold_at).order_by(PosSale.id)).all()


# -- capturing sales -------------------------------------------------------------------------------------

def test_a_terminal_posts_a_sale_that_is_recorded_once(app, client, people, terminal):
    first = client.post(SALES, json=sale(customer={"phone": "+86 138-0013-8000"}), headers=terminal)
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["contact_id"] == people["zhang"] and body["matched_by"] == "phone" and body["created"] is True

    again = client.post(SALES, json=sale(customer={"phone": "+86 138-0013-8000"}), headers=terminal)
    assert again.status_code == 200
    assert again.get_json()["id"] == body["id"] and again.get_json()["created"] is False
    rows = stored(app)
    assert len(rows) == 1 and rows[0].total == Decimal("1280.00")
    assert rows[0].sold_at.replace(tzinfo=None) == dt.datetime(2026, 11, 20, 2, 15)  # stored in UTC
    with app.app_context():
        line = db.session.scalars(select(PosSaleLine)).one()
        assert (line.quantity, line.unit_price, line.amount) == (Decimal(2), Decimal("640.00"), Decimal("1280.00"))

    changed = client.post(SALES, json=sale(total="999.00"), headers=terminal)
    assert changed.status_code == 409 and "R-1001" in changed.get_json()["message"]
    other_store = client.post(SALES, json=sale(store="SZ-02"), headers=terminal)
    assert other_store.status_code == 201 and len(stored(app)) == 2


def test_only_signed_in_accounts_with_the_permission_may_post(app, client):
    assert client.post(SALES, json=sale()).status_code == 401
    add_user(app, "viewer", "Read-only")
    token = api_token(client, "viewer")
    refused = client.post(SALES, json=sale(), headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code in (401, 403)
    assert stored(app) == []


def test_bad_sales_are_refused_naming_each_field(app, client, terminal):
    bad = {"store": "SH-01", "sold_at": "yesterday", "total": "12,80.0.0", "currency": "RMB1",
           "lines": [{"name": "茶", "quantity": "two", "unit_price": "10"}, "tea"],
           "customer": {"phone": "12", "email": "not-an-address"}, "loyalty": {"tier": "Gold", "points": -5}, "colour": "red"}
    response = client.post(SALES, json=bad, headers={**terminal, "Accept-Language": "en"})
    assert response.status_code == 400
    problems = {p["field"]: p["message"] for p in response.get_json()["problems"]}
    assert set(problems) == {"receipt", "sold_at", "total", "currency", "lines[0].quantity", "lines[1]",
                             "customer.phone", "customer.email", "loyalty.points", "loyalty", "colour"}
    assert problems["receipt"] == "is required"
    assert "not a date and time" in problems["sold_at"] and "not a valid phone number" in problems["customer.phone"]
    assert client.post(SALES, data="{not json", headers={**terminal, "Content-Type": "application/json"}) \
        .status_code == 400
    assert client.post(SALES, json=["a list"], headers=terminal).status_code == 400
    assert stored(app) == []


def test_a_sale_too_large_is_refused(app, client, terminal):
    many = sale(lines=[{"name": f"商品 {n}", "quantity": "1", "unit_price": "1.00"} for n in range(501)])
    response = client.post(SALES, json=many, headers=terminal)
    assert response.status_code == 400
    assert [p["field"] for p in response.get_json()["problems"]] == ["lines"]
    huge = sale(lines=[{"name": "x" * 200, "quantity": "1", "unit_price": "1.00"}] * 2000)
    too_large = client.post(SALES, data=json.dumps(huge), headers={**terminal, "Content-Type": "application/json"})
    assert too_large.status_code == 413 and "256 KB" in too_large.get_json()["message"]
    assert stored(app) == []


# -- matching --------------------------------------------------------------------------------------------

def test_a_sale_is_matched_by_card_then_phone_then_email(app, client, people, terminal):
    # the card wins over a phone number that belongs to someone else
    by_card = client.post(SALES, json=sale("R-1", customer={"card": "8800-0007", "phone": "13800138000"},
                                           loyalty={"tier": "金卡 Gold", "points": 1520}), headers=terminal)
    by_phone = client.post(SALES, json=sale("R-2", customer={"phone": "13800138000",
                                                             "email": "meiling@acme.example.com"}), headers=terminal)
    by_email = client.post(SALES, json=sale("R-3", customer={"email": "MEILING@acme.example.com"}), headers=terminal)
    assert [(r.get_json()["contact_id"], r.get_json()["matched_by"]) for r in (by_card, by_phone, by_email)] == [
        (people["wang"], "card"), (people["zhang"], "phone"), (people["lee"], "email")]
    with app.app_context():
        card = db.session.scalars(select(LoyaltyCard)).one()
        assert (card.tier, card.points) == ("金卡 Gold", 1520)


def test_an_unknown_customer_becomes_a_contact_with_their_card(app, client, people, terminal):
    response = client.post(SALES, json=sale(customer={"card": "8800-0100", "phone": "+60 12-345 6789",
                                                      "email": "ahmad@majujaya.example.com", "name": "Ahmad"}),
                           headers=terminal)
    body = response.get_json()
    assert response.status_code == 201 and body["matched_by"] == "created"
    with app.app_context():
        contact = db.session.get(Contact, body["contact_id"])
        assert contact.full_name == "Ahmad"
        assert [p.e164 for p in contact.phones] == ["+60123456789"]
        assert [e.address for e in contact.emails] == ["ahmad@majujaya.example.com"]
        assert db.session.scalar(select(LoyaltyCard.contact_id).where(LoyaltyCard.number == "8800-0100")) \
            == contact.id
    # the next sale on that card finds the same person
    again = client.post(SALES, json=sale("R-1002", customer={"card": "8800-0100"}), headers=terminal)
    assert again.get_json()["contact_id"] == body["contact_id"] and again.get_json()["matched_by"] == "card"


def test_with_creation_switched_off_an_unknown_customer_stays_unmatched(app, client, people, terminal):
    app.config["BIGLEDGER_POS_CREATE_CONTACTS"] = False
    response = client.post(SALES, json=sale(customer={"email": "stranger@example.com"}), headers=terminal)
    assert response.status_code == 201
    assert (response.get_json()["contact_id"], response.get_json()["matched_by"]) == (None, None)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Contact)) == 3


# -- CSV import ------------------------------------------------------------------------------------------

def test_the_csv_import_keeps_good_rows_and_reports_bad_ones(app, people, tmp_path):
    source = tmp_path / "sales.csv"
    source.write_text(
        "receipt,store,sold_at,total,currency,card,phone,email,name,tier,points\n"
        "C-1,SH-01,2026-11-01T09:00:00+08:00,88.50,CNY,,13800138000,,,,\n"
        "C-2,SH-01,2026-11-02T09:00:00,abc,CNY,,,new.person@example.com,新顾客,,\n"
        "C-3,SH-01,2026-11-03 09:00:00,120.00,,8800-0007,,,,金卡 Gold,2000\n"
        "C-1,SH-01,2026-11-01T09:00:00+08:00,88.50,CNY,,13800138000,,,,\n", encoding="utf-8")
    with app.app_context():
        result = CliRunner().invoke(cli, ["pos", "import", str(source)], env={"LC_ALL": "en_US.UTF-8"},
                                   catch_exceptions=False)
    assert result.exit_code == 1
    assert "row 3, column total:" in result.output and "abc is not an amount" in result.output
    assert "2 sales imported, 1 already recorded, 1 rows refused." in result.output
    assert [(r.receipt, r.contact_id, r.matched_by) for r in stored(app)] == [
        ("C-1", people["zhang"], "phone"), ("C-3", people["wang"], "card")]
    with app.app_context():  # the refused row wrote nothing, not even its new contact
        assert db.session.scalar(select(func.count()).select_from(Email)
                                 .where(Email.address == "new.person@example.com")) == 0
        assert db.session.scalar(select(LoyaltyCard.points).where(LoyaltyCard.number == "8800-0007")) == 2000


def test_a_csv_with_a_wrong_header_imports_nothing(app, tmp_path):
    source = tmp_path / "sales.csv"
    source.write_text("receipt,shop,total\nC-1,SH,1\n", encoding="utf-8")
    with app.app_context():
        result = CliRunner().invoke(cli, ["pos", "import", str(source)], env={"LC_ALL": "en_US.UTF-8"},
                                   catch_exceptions=False)
    assert result.exit_code == 1
    assert "row 1, column store: column missing from the header" in result.output
    assert "row 1, column shop: unknown column" in result.output
    assert stored(app) == []


def test_the_import_screen_takes_a_gbk_csv_reports_bad_rows_and_follows_the_roles(app, client, people):
    add_user(app, "manager", "Sales Manager")
    add_user(app, "rep", "Sales Rep")
    content = ("receipt,store,sold_at,total,currency,card,phone,email,name,tier,points\n"
               "G-1,GZ-02,2026-11-05T10:00:00+08:00,66.00,CNY,,13800138000,,,,\n"
               "G-2,GZ-02,2026-11-05T11:00:00+08:00,12.00,CNY,,,new.buyer@example.com,新顾客,,\n"
               "G-3,GZ-02,yesterday,10.00,CNY,,,,,,\n").encode("gbk")

    def upload(data=content, name="门店销售.csv", create=False):
        form = {"csrf_token": csrf_token(client, "/pos/import/"), "file": (io.BytesIO(data), name)}
        if create:
            form["create_contacts"] = "1"
        return client.post("/pos/import/", data=form, content_type="multipart/form-data")

    login(client, "rep")
    assert client.get("/pos/import/").status_code in (302, 403)
    client.get("/logout/")
    login(client, "manager")
    client.get("/lang/en")
    page = upload()
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "门店销售.csv" in html
    assert 'data-count="created">2<' in html and 'data-count="rejected">1<' in html
    assert "<td>4</td><td>sold_at</td>" in html
    assert [(r.receipt, r.contact_id) for r in stored(app)] == [("G-1", people["zhang"]), ("G-2", None)]
    again = upload(create=True).get_data(as_text=True)  # the same receipts are not recorded twice
    assert 'data-count="created">0<' in again and 'data-count="duplicates">2<' in again
    assert "is not a CSV file" in upload(name="sales.xlsx").get_data(as_text=True)
    client.get("/lang/zh")
    assert "导入门店销售" in client.get("/pos/import/").get_data(as_text=True)


# -- the 360° view ---------------------------------------------------------------------------------------

def _post_history(client, terminal, days_and_totals, prefix="H", **customer):
    now = utcnow()
    for n, (days, total) in enumerate(days_and_totals):
        body = sale(f"{prefix}-{n}", total=total, sold_at=(now - dt.timedelta(days=days)).isoformat(),
                    customer=customer, lines=[])
        assert client.post(SALES, json=body, headers=terminal).status_code == 201


def view(client, headers, contact_id, **query):
    response = client.get(f"/api/v1/crm/customer/contact/{contact_id}/360", headers={**headers, "Accept-Language": "en"},
                          query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["result"]


def test_the_360_view_shows_loyalty_and_purchases(app, client, people, terminal, admin):
    _post_history(client, terminal, [(200, "5000.00"), (30, "8000.50"), (2, "3000.00")], card="8800-0007")
    result = view(client, admin, people["wang"])
    panel = [p for p in result["panels"] if p["module"] == "pos_bridge"]
    assert panel == [{"module": "pos_bridge", "title": {"zh": "门店消费与会员", "en": "Store purchases and loyalty"},
                      "rows": [["Loyalty card", "8800-0007"], ["Tier", "银卡 Silver"], ["Loyalty points", "300"],
                               ["Purchases in the last 90 days", "2"], ["Spent in the last 90 days", "CNY 11,000.50"],
                               ["Purchases, all time", "3"], ["Spent, all time", "CNY 16,000.50"]]}]
    purchases = [e for e in result["timeline"]["entries"] if e["source"] == "pos_bridge"]
    assert [e["title"] for e in purchases] == ["Purchase at SH-01, receipt H-2", "Purchase at SH-01, receipt H-1",
                                               "Purchase at SH-01, receipt H-0"]
    assert purchases[0]["kind"] == "purchase" and purchases[0]["detail"] == "CNY 3,000.00"
    only_purchases = view(client, admin, people["wang"], kind="purchase")["timeline"]
    assert only_purchases["total"] == 3
    # someone who never bought in a store has no POS panel
    assert "pos_bridge" not in [p["module"] for p in view(client, admin, people["lee"])["panels"]]


def test_the_timeline_takes_at_most_the_limit(app, people):
    from plugins.pos_bridge.plugin import crm_timeline_entries
    from plugins.crm.queries import CustomerRef

    with app.app_context():
        s = db.session
        s.add_all([PosSale(store="SH-01", receipt=f"L-{n}", sold_at=utcnow() - dt.timedelta(hours=n),
                           total=Decimal("10.00"), currency="CNY", contact_id=people["zhang"]) for n in range(5)])
        s.commit()
    with app.test_request_context():
        entries = crm_timeline_entries(CustomerRef("contact", people["zhang"], "张伟", (), (people["zhang"],)), 2)
    assert [e["title"].rsplit(" ", 1)[1] for e in entries] == ["L-0", "L-1"]


# -- segments --------------------------------------------------------------------------------------------

def _segment_names(app, definition):
    with app.test_request_context():
        user = app.appbuilder.sm.find_user(username="boss")
        segment = Segment(name="probe", entity="contact", definition=definition)
        found = members(db.session, segment, user, per_page=500)
        assert member_count(db.session, segment, user) == len(found)
        return {c.full_name for c in found}


def test_purchases_feed_segments(app, client, people, terminal, admin):
    _post_history(client, terminal, [(10, "9000.00"), (20, "1500.00"), (120, "50000.00")], phone="13800138000")
    _post_history(client, terminal, [(5, "200.00")], prefix="M", email="meiling@acme.example.com")
    spent = {"match": "all", "rules": [{"field": "pos_spent", "op": "gt", "value": {"amount": 10000, "days": 90}}]}
    assert _segment_names(app, spent) == {"张伟"}
    chinese = {"匹配": "全部", "条件": [{"字段": "pos_spent", "运算": "gt", "值": {"金额": "10,000", "天数": 90}}]}
    assert _segment_names(app, chinese) == {"张伟"}
    assert _segment_names(app, {"rules": [{"field": "pos_spent", "op": "gt",
                                           "value": {"amount": 10000, "days": 90, "currency": "MYR"}}]}) == set()
    twice = {"rules": [{"field": "pos_purchases", "op": "gte", "value": {"count": 2, "days": 30}}]}
    assert _segment_names(app, twice) == {"张伟"}
    few = {"rules": [{"field": "pos_purchases", "op": "lt", "value": {"count": 2, "days": 30}}]}
    assert _segment_names(app, few) == {"Mei Ling Lee", "王芳"}  # those who bought nothing are in too
    with app.test_request_context(headers={"Accept-Language": "en"}):
        with pytest.raises(CrmValidationError) as err:
            validate_definition(db.session, "contact", {"rules": [
                {"field": "pos_spent", "op": "gt", "value": {"amount": 10000}},
                {"field": "pos_purchases", "op": "between", "value": {"count": 1, "days": 9}}]})
    assert [p.field for p in err.value.problems] == ["rules[0].value", "rules[1].op"]
    assert "days" in err.value.problems[0].message


# -- switched off, and a POS module of the deployment ----------------------------------------------------

class FakePos:
    """A POS module of the deployment: answers every pos_ hook and records how it was asked."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def pos_purchase_history(self, customer, limit):
        self.calls.append(("pos_purchase_history", customer, limit))
        return [{"at": dt.datetime(2026, 11, 11, 11, 11, tzinfo=dt.UTC), "store": "POS-9", "receipt": "X-11",
                 "total": Decimal("1111.00"), "currency": "CNY"}]

    @hookimpl
    def pos_purchase_totals(self, customer, since):
        self.calls.append(("pos_purchase_totals", customer, since))
        return {"count": 42, "spent": {"CNY": Decimal("99999.00")}, "count_since": 7,
                "spent_since": {"CNY": Decimal("12345.60")}}

    @hookimpl
    def pos_loyalty_status(self, customer):
        self.calls.append(("pos_loyalty_status", customer))
        return {"card": "VIP-0001", "tier": "钻石 Diamond", "points": 88888}


@pytest.fixture
def pos_module(app):
    fake = FakePos()
    pm = app.extensions["bigledger"].pm
    pm.register(fake, name="pos_module")
    yield fake
    pm.unregister(name="pos_module")


def test_a_pos_module_of_the_deployment_answers_instead_of_the_bridge(app, client, people, terminal, admin,
                                                                     pos_module):
    _post_history(client, terminal, [(3, "10.00")], phone="13800138000")  # the bridge's own data is not shown
    before = utcnow()
    result = view(client, admin, people["zhang"])
    panel = [p for p in result["panels"] if p["module"] == "pos_bridge"][0]
    assert panel["rows"] == [["Loyalty card", "VIP-0001"], ["Tier", "钻石 Diamond"], ["Loyalty points", "88,888"],
                             ["Purchases in the last 90 days", "7"], ["Spent in the last 90 days", "CNY 12,345.60"],
                             ["Purchases, all time", "42"], ["Spent, all time", "CNY 99,999.00"]]
    purchases = [e for e in result["timeline"]["entries"] if e["source"] == "pos_bridge"]
    assert [(e["title"], e["detail"], e["at"]) for e in purchases] == [
        ("Purchase at POS-9, receipt X-11", "CNY 1,111.00", "2026-11-11T11:11:00+00:00")]
    asked = PosCustomer(contact_ids=(people["zhang"],), name="张伟", phones=("+8613800138000",))
    names = [call[0] for call in pos_module.calls]
    assert sorted(names) == ["pos_loyalty_status", "pos_purchase_history", "pos_purchase_totals"]
    with app.app_context():  # what the module is told of the customer (phones, e-mails, cards) is read on demand
        assert all(call[1] == asked for call in pos_module.calls)
    history = next(c for c in pos_module.calls if c[0] == "pos_purchase_history")
    assert history[2] == 25  # one page of the timeline
    totals = next(c for c in pos_module.calls if c[0] == "pos_purchase_totals")
    assert dt.timedelta(days=89) < before - totals[2] < dt.timedelta(days=91)


def test_switched_off_the_crm_works_and_no_pos_hook_is_called(app, client, people, terminal, admin, pos_module):
    _post_history(client, terminal, [(3, "10.00")], card="8800-0007")
    pos_module.calls.clear()
    with app.test_request_context():
        disable_module("pos_bridge", by="test")
    result = view(client, admin, people["wang"])
    assert "pos_bridge" not in [p["module"] for p in result["panels"]] and result["panels"]
    assert [e for e in result["timeline"]["entries"] if e["source"] == "pos_bridge"] == []
    assert pos_module.calls == []
    assert client.post(SALES, json=sale("R-off"), headers=terminal).status_code == 404
    with app.test_request_context(headers={"Accept-Language": "en"}):
        with pytest.raises(CrmValidationError, match="pos_spent is not a field"):
            validate_definition(db.session, "contact", {"rules": [
                {"field": "pos_spent", "op": "gt", "value": {"amount": 1, "days": 9}}]})
    # the CRM itself still works
    created = client.post("/api/v1/crm/contact/", json={"full_name": "赵六"}, headers=admin)
    assert created.status_code == 201, created.get_json()
    assert len(stored(app)) == 1  # the data is kept


def test_the_demo_shows_purchases_and_loyalty(app, admin, client):
    with app.app_context():
        result = CliRunner().invoke(cli, ["demo"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        CliRunner().invoke(cli, ["demo"], catch_exceptions=False)  # twice: nothing is added twice
        zhang = db.session.scalar(select(Contact.id).where(Contact.external_id == "demo-ct-1"))
        assert db.session.scalar(select(func.count()).select_from(PosSale)) == 5
        assert db.session.scalar(select(func.count()).select_from(PosSale).where(PosSale.contact_id.is_(None))) == 0
    panel = [p for p in view(client, admin, zhang)["panels"] if p["module"] == "pos_bridge"][0]
    assert ["Tier", "金卡 Gold"] in panel["rows"] and ["Purchases, all time", "3"] in panel["rows"]


def test_a_merged_contacts_purchases_and_card_follow_the_survivor(app, client, people, terminal):
    from plugins.crm.merge import merge

    client.post(SALES, json=sale("R-9", customer={"card": "8800-0007"}), headers=terminal)
    with app.test_request_context():
        merge(db.session, "contact", people["zhang"], people["wang"])
        db.session.commit()
    with app.app_context():
        assert db.session.scalar(select(PosSale.contact_id)) == people["zhang"]
        assert db.session.scalar(select(LoyaltyCard.contact_id)) == people["zhang"]
    later = client.post(SALES, json=sale("R-10", customer={"card": "8800-0007"}), headers=terminal)
    assert later.get_json()["contact_id"] == people["zhang"]


def test_managers_see_the_store_sales_screen_and_reps_do_not(app, client, people, terminal):
    client.post(SALES, json=sale("R-77", customer={"phone": "13800138000"}), headers=terminal)
    add_user(app, "manager", "Sales Manager")
    add_user(app, "rep", "Sales Rep")
    login(client, "manager")
    page = client.get("/possaleview/list/?_l_=en")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Store sales" in html and "R-77" in html and "张伟" in html
    client.get("/logout/")
    login(client, "rep")
    assert client.get("/possaleview/list/").status_code == 403
    client.get("/logout/")
    login(client, "manager")
    with app.test_request_context():
        disable_module("pos_bridge", by="test")
    assert client.get("/possaleview/list/").status_code == 404
