"""Deals through the REST API, the screens and the command line: the same commands and rules behind each
(stage moves with their activities, wins and losses with reasons, record rules, line items), and pipelines
loaded from the product page's YAML on a screen, over the API and with `bigledger crm pipeline load`."""
from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from bigledger_core.cli import cli
from bigledger_core.db import db
from plugins.crm.models import Activity, Company
from plugins.crm.pipeline.models import Competitor, Deal, Pipeline, Stage
from tests.conftest import add_user, api_token, csrf_token, login

SEED_FILE = Path(__file__).parent.parent / "data" / "pipeline_seed.yaml"
SEED = SEED_FILE.read_text(encoding="utf-8")


def auth(client, username="admin", language="en"):
    return {"Authorization": f"Bearer {api_token(client, username)}", "Accept-Language": language}


def _setup(app, client):
    add_user(app, "admin", "Admin")
    add_user(app, "rep", "Sales Rep")
    add_user(app, "rep2", "Sales Rep")
    h = auth(client)
    response = client.post("/api/v1/crm/pipeline/load", json={"yaml": SEED}, headers=h)
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        company = Company(name="华信科技有限公司")
        db.session.add(company)
        db.session.commit()
        return h, company.id, response.get_json()["result"]


def test_pipeline_over_the_api_loads_the_seed_refuses_bad_files_and_exports_the_same_yaml(app, client):
    h, _company, pipeline = _setup(app, client)
    assert [s["name"] for s in pipeline["stages"]] == ["寻找客户", "资质认定", "提案", "谈判", "成交"]
    assert pipeline["is_default"] is True
    exported = client.get(f"/api/v1/crm/pipeline/{pipeline['id']}/export", headers=h)
    assert exported.get_data(as_text=True) == SEED
    bad = client.post("/api/v1/crm/pipeline/load", headers={**h, "Accept-Language": "zh"},
                      json={"name": "续约", "yaml": SEED.replace("概率: 50%", "概率: 150%")})
    assert bad.status_code == 400
    assert "第 3 个阶段（提案）" in bad.get_json()["message"] and "150%" in bad.get_json()["message"]
    with app.app_context():
        assert db.session.scalar(select(Pipeline).where(Pipeline.name == "续约")) is None  # nothing half-written
    mixed = client.post("/api/v1/crm/pipeline/load?name=Renewals", data=SEED.replace("销售管道", "pipeline")
                        .replace("阶段", "stages"), headers={**h, "Content-Type": "application/x-yaml"})
    assert mixed.status_code == 200 and len(mixed.get_json()["result"]["stages"]) == 5
    assert mixed.get_json()["result"]["is_default"] is False
    unknown = client.post("/api/v1/crm/pipeline/load", data="pipeline:\n  stages:\n    - name: Won\n"
                          "      probability: 1\n      colour: red\n",
                          headers={**h, "Content-Type": "application/x-yaml"})
    assert unknown.status_code == 400 and "stage 1 (Won): unknown key “colour”" in unknown.get_json()["message"]


def test_deals_over_the_api_move_win_lose_with_reasons_and_record_rules(app, client):
    _admin, company, pipeline = _setup(app, client)
    rep = auth(client, "rep")
    created = client.post("/api/v1/crm/deal/", json={"name": "ERP 升级", "company_id": company, "amount": "80000"},
                          headers=rep)
    assert created.status_code == 201, created.get_data(as_text=True)
    deal_id = created.get_json()["id"]
    shown = client.get(f"/api/v1/crm/deal/{deal_id}", headers=rep).get_json()["result"]
    assert shown["stage_id"] == pipeline["stages"][0]["id"] and Decimal(shown["probability"]) == Decimal("0.1")
    assert client.get(f"/api/v1/crm/deal/{deal_id}", headers=auth(client, "rep2")).status_code == 404
    assert client.get("/api/v1/crm/deal/", headers=auth(client, "rep2")).get_json()["count"] == 0
    assert client.post(f"/api/v1/crm/deal/{deal_id}/move", json={"stage": "提案"},
                       headers=auth(client, "rep2")).status_code == 404

    moved = client.post(f"/api/v1/crm/deal/{deal_id}/move", json={"stage": "提案"}, headers=rep)
    assert moved.status_code == 200 and moved.get_json()["result"]["stage"] == "提案"
    assert moved.get_json()["result"]["weighted_amount"] == "40000.00"
    refused = client.post(f"/api/v1/crm/deal/{deal_id}/move", json={"stage": "成交"},
                          headers={**rep, "Accept-Language": "zh"})
    assert refused.status_code == 409 and refused.get_json()["reasons"] == ["请说明赢单的原因。"]
    unknown = client.post(f"/api/v1/crm/deal/{deal_id}/move", json={"stage": "不存在"}, headers=rep)
    assert unknown.status_code == 409 and "不存在" in unknown.get_json()["message"]
    won = client.post(f"/api/v1/crm/deal/{deal_id}/win", json={"reason": "方案最优"}, headers=rep)
    assert won.status_code == 200 and won.get_json()["result"]["status"] == "won"
    with app.app_context():
        tasks = db.session.scalars(select(Activity.subject).where(Activity.deal_id == deal_id)).all()
        assert {"初次联系", "发送提案", "合同签署"} <= set(tasks)

    other = client.post("/api/v1/crm/deal/", json={"name": "仓储系统", "company_id": company}, headers=rep)
    other_id = other.get_json()["id"]
    with app.app_context():
        db.session.add(Competitor(name="用友"))
        db.session.commit()
        competitor = db.session.scalar(select(Competitor.id))
    no_reason = client.post(f"/api/v1/crm/deal/{other_id}/lose", json={}, headers=rep)
    assert no_reason.status_code == 409
    lost = client.post(f"/api/v1/crm/deal/{other_id}/lose", json={"reason": "价格", "lost_to_id": competitor},
                       headers=rep)
    assert lost.status_code == 200 and lost.get_json()["result"]["lost_to_id"] == competitor
    reopened = client.post(f"/api/v1/crm/deal/{other_id}/reopen", json={}, headers=rep)
    assert reopened.get_json()["result"]["status"] == "open"


def test_line_items_and_probability_overrides_over_the_api(app, client):
    h, company, _pipeline = _setup(app, client)
    deal_id = client.post("/api/v1/crm/deal/", json={"name": "订阅", "company_id": company}, headers=h).get_json()["id"]
    for line in ({"product": "实施服务", "quantity": 10, "unit_price": 1200, "discount": 0.1},
                 {"product": "云订阅", "quantity": 20, "unit_price": 99, "billing_period": "month",
                  "term_months": 12}):
        response = client.post("/api/v1/crm/deal_line/", json={"deal_id": deal_id, **line}, headers=h)
        assert response.status_code == 201, response.get_data(as_text=True)
    result = client.get(f"/api/v1/crm/deal/{deal_id}", headers=h).get_json()["result"]
    assert Decimal(result["amount"]) == 10800 + 1980 * 12 and Decimal(result["mrr"]) == 1980
    version = result["version"]
    no_reason = client.put(f"/api/v1/crm/deal/{deal_id}", json={"probability": 0.3, "version": version}, headers=h)
    assert no_reason.status_code == 400 and "probability differs" in no_reason.get_json()["message"]
    ok = client.put(f"/api/v1/crm/deal/{deal_id}", json={"probability": 0.3, "probability_reason": "老客户",
                                                          "version": version}, headers=h)
    assert ok.status_code == 200, ok.get_data(as_text=True)


def test_a_manager_loads_a_pipeline_on_the_screen_and_a_rep_moves_a_deal_on_its_page(app, client):
    add_user(app, "admin", "Admin")
    add_user(app, "rep", "Sales Rep")
    login(client, "admin")
    token = csrf_token(client, "/pipelineview/load/")
    bad = client.post("/pipelineview/load/", data={"csrf_token": token, "yaml": SEED.replace("概率: 100%", "概率: 90%")})
    assert "最后一个阶段" in bad.get_data(as_text=True)
    loaded = client.post("/pipelineview/load/", data={"csrf_token": token, "yaml": SEED}, follow_redirects=True)
    assert "已载入销售管道" in loaded.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(Stage).count() == 5
        db.session.add(Company(name="华信科技有限公司"))
        db.session.commit()
    client.get("/logout/")
    login(client, "rep")
    token = csrf_token(client, "/dealview/add")
    with app.app_context():
        company = db.session.scalar(select(Company.id))
        pipeline = db.session.scalar(select(Pipeline.id))
    client.post("/dealview/add", data={"csrf_token": token, "name": "ERP 升级", "company": str(company),
                                       "pipeline": str(pipeline), "currency": "CNY", "amount": "50000"},
                follow_redirects=True)
    with app.app_context():
        deal = db.session.scalar(select(Deal))
        assert deal.stage.name == "寻找客户" and deal.owner.username == "rep"
        target = db.session.scalar(select(Stage.id).where(Stage.name == "资质认定"))
    page = client.get(f"/dealview/show/{deal.id}").get_data(as_text=True)
    assert "初次联系" in page and 'name="move"' in page
    moved = client.post(f"/crm/deal/{deal.id}/move", data={"csrf_token": token, "stage_id": target},
                        follow_redirects=True).get_data(as_text=True)
    assert "资质认定" in moved and "需求分析" in moved
    refused = client.post(f"/crm/deal/{deal.id}/win", data={"csrf_token": token, "reason": ""},
                          follow_redirects=True).get_data(as_text=True)
    assert "请说明赢单的原因" in refused
    assert client.post(f"/crm/deal/{deal.id}/win", data={"reason": "x"}).status_code == 400  # no CSRF token
    exported = client.get("/dealview/export/csv").get_data(as_text=True)
    assert "ERP 升级" in exported and "资质认定" in exported and "华信科技有限公司" in exported


def run(app, *args):
    with app.app_context():
        return CliRunner().invoke(cli, list(args), env={"LC_ALL": "en_US.UTF-8"}, catch_exceptions=False)


def test_pipeline_and_deal_commands(app, tmp_path):
    loaded = run(app, "crm", "pipeline", "load", str(SEED_FILE))
    assert loaded.exit_code == 0 and "5" in loaded.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.replace("名称: 提案", "名称: 资质认定"), encoding="utf-8")
    refused = run(app, "crm", "pipeline", "load", str(bad), "--name", "Other")
    assert refused.exit_code == 1 and "stage 3 (资质认定)" in refused.output
    exported = tmp_path / "out.yaml"
    assert run(app, "crm", "pipeline", "export", "-o", str(exported)).exit_code == 0
    assert exported.read_text(encoding="utf-8") == SEED
    assert "寻找客户 10%" in run(app, "crm", "pipeline", "list").output
    with app.app_context():
        from plugins.crm.pipeline.services import create_deal

        company = Company(name="华信")
        db.session.add(company)
        db.session.flush()
        deal = create_deal(db.session, Deal(name="ERP", company_id=company.id))
        db.session.commit()
        deal_id = deal.id
    assert run(app, "crm", "deal", "move", str(deal_id), "提案").exit_code == 0
    no_reason = run(app, "crm", "deal", "move", str(deal_id), "成交")
    assert no_reason.exit_code == 1 and "Say why the deal was won" in no_reason.output
    assert run(app, "crm", "deal", "win", str(deal_id), "--reason", "价格").exit_code == 0
    with app.app_context():
        assert db.session.get(Deal, deal_id).status == "won"


def test_the_360_view_shows_open_and_closed_deals_and_rolls_up_open_value_through_the_hierarchy(app, client):
    from plugins.crm.pipeline.services import create_deal, win_deal

    add_user(app, "admin", "Admin")
    add_user(app, "rep", "Sales Rep")
    run(app, "crm", "pipeline", "load", str(SEED_FILE))
    with app.app_context():
        rep = app.appbuilder.sm.find_user(username="rep").id
        group = Company(name="华润集团", owner_id=rep)
        sub = Company(name="华润万家", parent=group, owner_id=rep)
        shop = Company(name="华润万家苏州店", parent=sub, owner_id=rep)
        db.session.add_all([group, sub, shop])
        db.session.flush()
        for company, amount, owner in ((group, "100000", rep), (sub, "20000", rep), (shop, "3000", rep),
                                       (shop, "5000", None)):
            create_deal(db.session, Deal(name=f"商机 {company.name} {amount}", company_id=company.id,
                                         amount=amount, owner_id=owner))
        usd = create_deal(db.session, Deal(name="Export order", company_id=sub.id, amount="700", currency="USD",
                                           owner_id=rep))
        won = create_deal(db.session, Deal(name="已签约", company_id=shop.id, amount="999", owner_id=rep))
        win_deal(db.session, won, reason="签约")
        db.session.commit()
        ids = {"group": group.id, "sub": sub.id, "shop": shop.id, "usd": usd.id}
    view = client.get(f"/api/v1/crm/customer/company/{ids['group']}/360", headers=auth(client)).get_json()["result"]
    assert view["hierarchy"]["open_value_total"] == {"CNY": "128000.00", "USD": "700.00"}
    children = {c["name"]: c for c in view["hierarchy"]["children"]}
    assert children["华润万家"]["open_value"] == {"CNY": "20000.00", "USD": "700.00"}
    assert children["华润万家"]["open_value_rolled_up"] == {"CNY": "28000.00", "USD": "700.00"}
    assert view["deals"]["counts"] == {"open": 5, "won": 1, "lost": 0}
    assert [d["name"] for d in view["deals"]["closed"]] == ["已签约"]
    assert [d["name"] for d in view["deals"]["open"]] == [  # no close dates: the newest first
        "Export order", "商机 华润万家苏州店 5000", "商机 华润万家苏州店 3000", "商机 华润万家 20000", "商机 华润集团 100000"]
    # a rep sees only their own deals, in the deal list and in the roll-up
    mine = client.get(f"/api/v1/crm/customer/company/{ids['group']}/360",
                      headers=auth(client, "rep")).get_json()["result"]
    assert mine["hierarchy"]["open_value_total"] == {"CNY": "123000.00", "USD": "700.00"}
    assert mine["deals"]["counts"]["open"] == 4
    with app.app_context():  # and their team's: the deal nobody owns is the rep's team's
        from bigledger_core.models import Team

        team = Team(name="华东销售", members=[app.appbuilder.sm.find_user(username="rep")])
        db.session.add(team)
        db.session.flush()
        db.session.execute(Deal.__table__.update().where(Deal.owner_id.is_(None)).values(team_id=team.id))
        db.session.commit()
    ours = client.get(f"/api/v1/crm/customer/company/{ids['group']}/360",
                      headers=auth(client, "rep")).get_json()["result"]
    assert ours["deals"]["counts"]["open"] == 5 and ours["hierarchy"]["open_value_total"]["CNY"] == "128000.00"
    login(client, "admin")
    page = client.get(f"/crm/customer/company/{ids['sub']}?_l_=en").get_data(as_text=True)
    assert "Export order" in page and "Open deal value with subsidiaries" in page and "已签约" in page


def test_a_sales_rep_sees_the_crm_menus_of_their_work_but_not_the_settings(app, client):
    add_user(app, "rep", "Sales Rep")
    login(client, "rep")
    home = client.get("/?_l_=en").get_data(as_text=True)
    for label in ("Companies", "Contacts", "Activities", "Deals", "Pipeline board", "Forecast", "Segments"):
        assert re.search(rf"&nbsp;\s*{label}\s*</a>", home), label
    for label in ("Sales pipelines", "Custom fields", "Contact roles"):
        assert label not in home
