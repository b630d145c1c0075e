"""The pipeline board: column totals in one statement, pages of cards with the overdue marker, record rules,
filters, moves through the pipeline commands (refusals explained), quick create, the screen and the API."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event, select

from bigledger_core.db import db, utcnow
from bigledger_core.models import Team
from plugins.crm.models import Activity, Company, Contact
from plugins.crm.pipeline import config
from plugins.crm.pipeline.board import cards, columns, period_dates
from plugins.crm.pipeline.models import Deal, Stage
from plugins.crm.pipeline.services import (
    create_deal,
    load_pipeline,
    lose_deal,
    win_deal,
)
from tests.conftest import add_user, api_token, login

SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")
STAGES = ["寻找客户", "资质认定", "提案", "谈判", "成交"]


@pytest.fixture
def board(app):
    """The seed pipeline; rep and mate in team East, other in team West; a company each; an admin."""
    ids = {name: add_user(app, name, role) for name, role in
           (("admin", "Admin"), ("rep", "Sales Rep"), ("mate", "Sales Rep"), ("other", "Sales Rep"),
            ("marketer", "Marketing"))}
    with app.app_context():
        users = {name: db.session.get(app.appbuilder.sm.user_model, pk) for name, pk in ids.items()}
        east = Team(name="East", members=[users["rep"], users["mate"]])
        west = Team(name="West", members=[users["other"]])
        db.session.add_all([east, west])
        pipeline = load_pipeline(db.session, config.parse(SEED))
        companies = {name: Company(name=f"{name} 公司", owner_id=ids[name]) for name in ("rep", "mate", "other")}
        db.session.add_all(companies.values())
        db.session.commit()
        return {"pipeline": pipeline.id, "stages": [s.id for s in pipeline.stages], "users": ids,
                "teams": {"East": east.id, "West": west.id},
                "companies": {name: c.id for name, c in companies.items()}}


def _deal(board, owner="rep", stage=0, amount="100", currency="CNY", close=None, name="ERP 升级", team=None,
          commit=True):
    deal = Deal(name=name, company_id=board["companies"][owner], owner_id=board["users"][owner],
                team_id=board["teams"][team] if team else None, stage_id=board["stages"][stage],
                amount=Decimal(amount), currency=currency, expected_close=close)
    create_deal(db.session, deal, user_id=board["users"][owner])
    if commit:
        db.session.commit()
    return deal


def _user(app, name):
    return app.appbuilder.sm.find_user(username=name)


class _Statements:
    """Counts the SQL statements run inside the block."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        event.listen(db.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc):
        event.remove(db.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args):
        self.count += 1


def test_columns_give_count_total_and_weighted_total_per_stage_in_one_statement(app, board):
    with app.app_context():
        _deal(board, stage=0, amount="1000")
        _deal(board, stage=0, amount="500.50")
        _deal(board, stage=2, amount="2000")
        _deal(board, stage=2, amount="300", currency="USD")
        won = _deal(board, stage=1, amount="9999")
        win_deal(db.session, won, reason="签约")
        lost = _deal(board, stage=1, amount="7777")
        lose_deal(db.session, lost, reason="预算取消")
        db.session.commit()
        db.session.expire_all()
        with _Statements() as seen:
            rows = columns(db.session, board["pipeline"], None)
        assert seen.count == 1
        assert [r["name"] for r in rows] == STAGES
        assert [r["count"] for r in rows] == [2, 0, 2, 0, 0]
        first, _, third, _, last = rows
        assert first["total"] == Decimal("1500.50") and first["weighted"] == Decimal("150.05")
        assert first["probability"] == Decimal("0.1") and first["currency"] == "CNY"
        assert not first["mixed_currencies"]
        assert third["total"] == Decimal("2300.00") and third["weighted"] == Decimal("1150.00")
        assert third["mixed_currencies"] and third["currency"] is None
        assert last["total"] == Decimal("0.00")
        # the won deal is in the last column when won deals are asked for; the lost one never shows
        rows = columns(db.session, board["pipeline"], None, status="open,won")
        assert [r["count"] for r in rows] == [2, 0, 2, 0, 1] and rows[-1]["total"] == Decimal("9999.00")
        assert [r["count"] for r in columns(db.session, board["pipeline"], None, status="lost")] == [0] * 5


def test_cards_come_page_by_page_soonest_close_first_with_the_overdue_marker_in_one_statement(app, board):
    with app.app_context():
        today = dt.date(2026, 3, 1)
        for n in range(120):
            close = None if n % 10 == 0 else today + dt.timedelta(days=n % 7)
            _deal(board, close=close, name=f"商机 {n:03d}", commit=False)
        first_id = db.session.scalar(select(Deal.id).where(Deal.name == "商机 001"))
        db.session.add(Activity(kind="task", subject="回电", deal_id=first_id, company_id=board["companies"]["rep"],
                                due_at=utcnow() - dt.timedelta(hours=1), done=False))
        db.session.commit()
        stage = board["stages"][0]
        with _Statements() as seen:
            page1 = cards(db.session, stage, None)
        assert seen.count == 1
        page2 = cards(db.session, stage, None, offset=50)
        page3 = cards(db.session, stage, None, offset=100, limit=50)
        assert (len(page1), len(page2), len(page3)) == (50, 50, 20)
        everything = page1 + page2 + page3
        assert len({c["id"] for c in everything}) == 120
        keys = [(c["expected_close"] is None, c["expected_close"] or dt.date.max, c["id"]) for c in everything]
        assert keys == sorted(keys)
        assert all(c["expected_close"] is None for c in page3[-12:])
        card = next(c for c in everything if c["id"] == first_id)
        assert card["overdue"] and card["company"] == "rep 公司" and card["owner"] == "Rep Test"
        assert card["amount"] == Decimal("100.00") and card["currency"] == "CNY"
        # the stage's own tasks are due in three days: not overdue
        assert sum(c["overdue"] for c in everything) == 1
        db.session.execute(Activity.__table__.update().where(Activity.deal_id == first_id).values(done=True))
        assert not next(c for c in cards(db.session, stage, None, limit=200) if c["id"] == first_id)["overdue"]


def test_a_sales_rep_sees_their_own_and_their_teams_deals_only(app, board):
    with app.app_context():
        _deal(board, owner="rep", amount="10")
        _deal(board, owner="mate", amount="20", team="East")
        _deal(board, owner="mate", amount="40")  # mate's own, no team
        _deal(board, owner="other", amount="80", team="West")
        stage = board["stages"][0]
        for name, expected in (("rep", 30), ("mate", 60), ("other", 80), ("admin", 150)):
            user = _user(app, name)
            with app.test_request_context():
                assert columns(db.session, board["pipeline"], user)[0]["total"] == Decimal(expected), name
                assert sum(c["amount"] for c in cards(db.session, stage, user)) == Decimal(expected), name
        assert columns(db.session, board["pipeline"], None)[0]["count"] == 4


def test_filters_by_owner_team_and_close_period(app, board):
    with app.app_context():
        _deal(board, owner="rep", close=dt.date(2026, 4, 3))
        _deal(board, owner="mate", team="East", close=dt.date(2026, 5, 20))
        _deal(board, owner="other", team="West", close=dt.date(2026, 7, 1))
        _deal(board, owner="other")
        pipeline, stage = board["pipeline"], board["stages"][0]

        def count(**filters):
            total = columns(db.session, pipeline, None, **filters)[0]["count"]
            assert len(cards(db.session, stage, None, **filters)) == total
            return total

        assert count() == 4
        assert count(owner_id=board["users"]["other"]) == 2
        assert count(team_id=board["teams"]["East"]) == 1
        assert count(close_from=dt.date(2026, 4, 1), close_to=dt.date(2026, 6, 30)) == 2
        assert count(close_from=dt.date(2026, 5, 20)) == 2
        assert count(close_to=dt.date(2026, 4, 3), owner_id=board["users"]["rep"]) == 1
    assert period_dates("month", dt.date(2026, 2, 14)) == (dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    assert period_dates("quarter", dt.date(2026, 11, 30)) == (dt.date(2026, 10, 1), dt.date(2026, 12, 31))
    assert period_dates("custom", dt.date(2026, 11, 30)) == (None, None)


def _csrf(client, path):
    html = client.get(path).get_data(as_text=True)
    return re.search(r'id="bl-csrf" value="([^"]+)"', html).group(1)


def test_the_board_screen_and_its_json_follow_the_filters_in_the_query_string(app, client, board):
    with app.app_context():
        _deal(board, owner="rep", amount="1200", close=dt.date.today())
        _deal(board, owner="rep", amount="800", close=dt.date.today() + dt.timedelta(days=400))
    login(client, "rep")
    client.get("/lang/en")
    response = client.get("/crm/board/?period=month")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/crm/board/{board['pipeline']}?period=month")
    html = client.get(f"/crm/board/{board['pipeline']}?period=month", headers={"Accept-Language": "en"}) \
        .get_data(as_text=True)
    assert "Pipeline board" in html and all(name in html for name in STAGES)
    assert '<option value="month" selected>' in html
    assert 'href="/crm/board/"' in html  # the menu item
    assert "/static/crm_assets/crm/board.js" in html and "/static/crm_assets/crm/board.css" in html
    assert client.get("/static/crm_assets/crm/board.js").status_code == 200
    data = client.get(f"/crm/board/{board['pipeline']}/columns?period=month").get_json()
    assert [c["count"] for c in data["columns"]] == [1, 0, 0, 0, 0] and data["columns"][0]["total"] == "1200.00"
    assert client.get(f"/crm/board/{board['pipeline']}/columns").get_json()["columns"][0]["total"] == "2000.00"
    page = client.get(f"/crm/board/stage/{board['stages'][0]}/cards?limit=1").get_json()
    assert len(page["cards"]) == 1 and page["more"] is True and page["cards"][0]["amount"] == "1200.00"
    page = client.get(f"/crm/board/stage/{board['stages'][0]}/cards?limit=1&offset=1").get_json()
    assert len(page["cards"]) == 1 and page["more"] is False
    assert client.get(f"/crm/board/{board['pipeline']}/columns?from=next-week").status_code == 400

    zh = client.get(f"/crm/board/{board['pipeline']}?_l_=zh").get_data(as_text=True)
    assert "销售看板" in zh


def test_moving_a_card_saves_through_the_pipeline_commands_and_refusals_come_back_explained(app, client, board):
    with app.app_context():
        deal = _deal(board, owner="rep")
        hidden = _deal(board, owner="other")
        deal_id, hidden_id = deal.id, hidden.id
    stages = board["stages"]
    login(client, "rep")
    client.get("/lang/en")
    token = _csrf(client, f"/crm/board/{board['pipeline']}")
    headers = {"X-CSRFToken": token, "Accept-Language": "en"}

    assert client.post("/crm/board/move", json={"deal_id": deal_id, "stage_id": stages[1]}).status_code == 400  # CSRF
    moved = client.post("/crm/board/move", json={"deal_id": deal_id, "stage_id": stages[1]}, headers=headers)
    assert moved.status_code == 200, moved.get_data(as_text=True)
    assert moved.get_json()["card"]["stage_id"] == stages[1]
    with app.app_context():
        assert db.session.get(Deal, deal_id).stage.name == "资质认定"
        stage = db.session.get(Stage, stages[1])
        stage.activities_required = True
        db.session.commit()

    refused = client.post("/crm/board/move", json={"deal_id": deal_id, "stage_id": stages[2]}, headers=headers)
    assert refused.status_code == 409
    assert refused.get_json()["reasons"] == ["“资质认定” needs these activities done first: 需求分析、预算确认"]
    zh = client.post("/crm/board/move?_l_=zh", json={"deal_id": deal_id, "stage_id": stages[2]}, headers=headers)
    assert zh.status_code == 409 and "需求分析、预算确认" in zh.get_json()["reasons"][0]
    assert zh.get_json()["reasons"] != refused.get_json()["reasons"]  # in the user's language

    no_reason = client.post("/crm/board/move", json={"deal_id": deal_id, "stage_id": stages[4]}, headers=headers)
    assert no_reason.status_code == 409 and no_reason.get_json()["reasons"] == ["Say why the deal was won."]
    with app.app_context():
        db.session.execute(Activity.__table__.update().where(Activity.deal_id == deal_id).values(done=True))
        db.session.commit()
    won = client.post("/crm/board/move", json={"deal_id": deal_id, "stage_id": stages[4], "reason": "价格合适"},
                      headers=headers)
    assert won.status_code == 200 and won.get_json()["card"]["status"] == "won"
    with app.app_context():
        deal = db.session.get(Deal, deal_id)
        assert (deal.status, deal.close_reason, deal.stage.name) == ("won", "价格合适", "成交")

    assert client.post("/crm/board/move", json={"deal_id": hidden_id, "stage_id": stages[1]},
                       headers=headers).status_code == 404
    stale = client.post("/crm/board/move", json={"deal_id": deal_id, "stage_id": stages[1], "version": 1},
                        headers=headers)
    assert stale.status_code == 409 and "reload" in stale.get_json()["message"]
    assert client.post("/crm/board/move", json={"stage_id": stages[1]}, headers=headers).status_code == 400


def test_the_board_needs_the_board_permission(app, client, board):
    login(client, "marketer")
    assert client.get(f"/crm/board/{board['pipeline']}").status_code == 403
    assert client.get(f"/crm/board/{board['pipeline']}/columns").status_code == 403
    anonymous = app.test_client()
    assert anonymous.get(f"/crm/board/{board['pipeline']}/columns").status_code == 401


def test_quick_create_puts_a_deal_in_the_first_stage_owned_by_the_user(app, client, board):
    with app.app_context():
        contact = Contact(full_name="李娜", owner_id=board["users"]["rep"])
        db.session.add(contact)
        db.session.commit()
        contact_id = contact.id
    login(client, "rep")
    client.get("/lang/en")
    headers = {"X-CSRFToken": _csrf(client, f"/crm/board/{board['pipeline']}"), "Accept-Language": "en"}
    found = client.get("/crm/board/customers?q=rep").get_json()["result"]
    assert {"kind": "company", "id": board["companies"]["rep"], "name": "rep 公司"} in found
    assert all(hit["id"] != board["companies"]["other"] or hit["kind"] != "company" for hit in found)

    created = client.post(f"/crm/board/{board['pipeline']}/deals", headers=headers, json={
        "name": "年度维保", "company_id": board["companies"]["rep"], "amount": "12,000.5",
        "expected_close": "2026-06-30"})
    assert created.status_code == 201, created.get_data(as_text=True)
    card = created.get_json()["card"]
    assert card["stage_id"] == board["stages"][0] and card["amount"] == "12000.50" and card["company"] == "rep 公司"
    by_contact = client.post(f"/crm/board/{board['pipeline']}/deals", headers=headers,
                             json={"name": "培训", "contact_id": contact_id, "currency": "usd"})
    assert by_contact.status_code == 201 and by_contact.get_json()["card"]["company"] == "李娜"
    with app.app_context():
        deal = db.session.get(Deal, card["id"])
        assert deal.owner_id == board["users"]["rep"] and deal.team_id == board["teams"]["East"]
        assert deal.expected_close == dt.date(2026, 6, 30) and deal.probability == Decimal("0.1")
        assert db.session.scalar(select(Deal.currency).where(Deal.name == "培训")) == "USD"
        assert {a.subject for a in db.session.scalars(select(Activity).where(Activity.deal_id == deal.id))} == \
            {"初次联系", "资质认定电话"}

    bad = client.post(f"/crm/board/{board['pipeline']}/deals", headers=headers,
                      json={"name": "", "amount": "many", "company_id": None})
    assert bad.status_code == 400
    hidden = client.post(f"/crm/board/{board['pipeline']}/deals", headers=headers,
                         json={"name": "抢单", "company_id": board["companies"]["other"]})
    assert hidden.status_code == 404
    problems = client.post(f"/crm/board/{board['pipeline']}/deals", headers=headers,
                           json={"name": "", "currency": "元"}).get_json()["reasons"]
    assert problems == ["Name: give the deal a name.", "Choose the company or contact of the deal.",
                        "Currency: give a three-letter ISO code such as CNY."]


def test_the_rest_api_with_a_jwt(app, client, board):
    with app.app_context():
        deal = _deal(board, owner="rep", amount="500")
        _deal(board, owner="other", amount="700")
        deal_id = deal.id
    token = api_token(client, "rep")
    auth = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    data = client.get(f"/api/v1/crm/board/{board['pipeline']}/columns", headers=auth).get_json()
    assert data["columns"][0]["total"] == "500.00" and data["columns"][0]["count"] == 1
    page = client.get(f"/api/v1/crm/board/stage/{board['stages'][0]}/cards", headers=auth).get_json()
    assert [c["id"] for c in page["cards"]] == [deal_id]
    moved = client.post("/api/v1/crm/board/move", headers=auth, json={"deal_id": deal_id, "stage_id": board["stages"][1]})
    assert moved.status_code == 200 and moved.get_json()["card"]["stage_id"] == board["stages"][1]
    refused = client.post("/api/v1/crm/board/move", headers=auth,
                          json={"deal_id": deal_id, "stage_id": board["stages"][4]})
    assert refused.status_code == 409 and refused.get_json()["reasons"] == ["Say why the deal was won."]
    created = client.post(f"/api/v1/crm/board/{board['pipeline']}/deals", headers=auth,
                          json={"name": "API 商机", "company_id": board["companies"]["rep"], "amount": 10})
    assert created.status_code == 201
    assert client.get(f"/api/v1/crm/board/{board['pipeline']}/columns").status_code == 401
