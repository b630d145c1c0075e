"""The project bridge: a won deal that a project rule matches (by pipeline or by product) becomes one delivery
project (with a project module, and standalone), even when the event comes twice, the deal is won again or the
module fails first; its status and milestones show on the deal's page, in the 360° view and the customer's
timeline; with the bridge switched off the CRM works and nothing is asked.

This test module is also a plugin: loaded as `erp_projects` (see `erp`), it plays the BigLedger project module an
integrator would install, answering the `project_*` service hooks and recording every call.
"""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from bigledger_core import hookimpl
from bigledger_core.db import db, utcnow
from bigledger_core.events import deliver_due
from bigledger_core.models import EventDelivery
from tests.conftest import SAMPLE_PLUGIN, add_user, api_token, csrf_token, login

PROJECT_MODULE = __name__
EN = {"Accept-Language": "en"}
SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")
RENEWALS = """pipeline:
  name: 续约 Renewals
  stages:
    - {name: 续约提醒 Renewal due, probability: 60%}
    - {name: 已续约 Renewed, probability: 100%}
"""
MILESTONES = [{"name": "启动会 / Kick-off", "days": 0}, {"name": "上线 / Go-live", "days": 30},
              {"name": "验收 / Acceptance", "days": 45}]

# -- the project module, as an integrator would write it ----------------------------------------------------

MODULE = {"answer": True, "fail": 0, "calls": [], "projects": {}, "status": None, "customer": None}


@hookimpl
def bigledger_manifest():
    return {"name": "erp_projects", "version": "1.0", "label": {"zh": "ERP 项目", "en": "ERP projects"},
            "requires": []}


@hookimpl
def project_create(request):
    MODULE["calls"].append(("project_create", request))
    if MODULE["fail"]:
        MODULE["fail"] -= 1
        raise ConnectionError("project module is down for maintenance")
    if not MODULE["answer"]:
        return None
    projects = MODULE["projects"]
    if request["idempotency_key"] not in projects:
        projects[request["idempotency_key"]] = {"id": f"ERP-P-{len(projects) + 1}",
                                                "number": f"PJ-2026-{len(projects) + 1:03d}", "status": "planned"}
    return projects[request["idempotency_key"]]


@hookimpl
def project_status(deal_ids):
    MODULE["calls"].append(("project_status", deal_ids))
    return MODULE["status"] if MODULE["answer"] else None


@hookimpl
def project_customer_projects(customer, limit):
    MODULE["calls"].append(("project_customer_projects", customer, limit))
    return MODULE["customer"] if MODULE["answer"] else None


# -- fixtures and helpers -----------------------------------------------------------------------------------

@pytest.fixture
def erp(make_app):
    """An app with the project module installed (answering unless a test says otherwise)."""
    MODULE.update(answer=True, fail=0, calls=[], projects={}, status=None, customer=None)
    return make_app.reused(BIGLEDGER_EXTRA_PLUGINS=[SAMPLE_PLUGIN, PROJECT_MODULE])


def _world(app) -> dict:
    """Two pipelines, a sales rep, an admin, a project manager and a company of the rep."""
    from plugins.crm.models import Company
    from plugins.crm.pipeline import config
    from plugins.crm.pipeline.services import load_pipeline

    add_user(app, "rep", "Sales Rep")
    add_user(app, "boss", "Admin")
    add_user(app, "pm", "Project Manager")
    with app.app_context():
        rep = app.appbuilder.sm.find_user(username="rep")
        sales = load_pipeline(db.session, config.parse(SEED))
        renewals = load_pipeline(db.session, config.parse(RENEWALS))
        company = Company(name="华信科技有限公司", owner_id=rep.id)
        db.session.add(company)
        db.session.commit()
        return {"rep": rep.id, "company": company.id, "sales": sales.id, "renewals": renewals.id}


def _rule(app, name, *, position=0, pipeline=None, product=None, active=True, milestones=MILESTONES) -> int:
    from plugins.project_bridge.models import ProjectRule
    from plugins.project_bridge.services import check_rule

    with app.app_context():
        rule = check_rule(ProjectRule(name=name, position=position, pipeline_id=pipeline, product_code=product,
                                      active=active, milestones=list(milestones)))
        db.session.add(rule)
        db.session.commit()
        return rule.id


def _win(app, world, *, pipeline=None, codes=("ERP-STD",), name="ERP 升级 / ERP upgrade") -> int:
    from plugins.crm.pipeline.models import Deal, DealLine
    from plugins.crm.pipeline.services import create_deal, win_deal

    with app.app_context():
        deal = create_deal(db.session, Deal(name=name, company_id=world["company"], owner_id=world["rep"],
                                            pipeline_id=pipeline or world["sales"], currency="CNY",
                                            amount=Decimal(50000)), user_id=world["rep"])
        for position, code in enumerate(codes):
            deal.lines.append(DealLine(product=f"产品 {code}", product_code=code, quantity=Decimal(1),
                                       unit_price=Decimal(25000), position=position))
        db.session.commit()
        win_deal(db.session, deal, reason="签约 / signed", user_id=world["rep"])
        db.session.commit()  # the won event is delivered after this commit
        return deal.id


def _deliveries(app) -> list[EventDelivery]:
    with app.app_context():
        rows = db.session.scalars(select(EventDelivery).where(EventDelivery.subscriber == "project_bridge")).all()
        db.session.expunge_all()
        return rows


def _deliver_again(app) -> None:
    """Deliver the bridge's events once more, as after a crash between handling and recording them."""
    with app.app_context():
        db.session.execute(update(EventDelivery).where(EventDelivery.subscriber == "project_bridge")
                           .values(status="pending", next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()
    deliver_due(app)


def _projects(app) -> list[tuple]:
    """(deal id, rule name, milestone names) of every project."""
    from plugins.project_bridge.models import Project

    with app.app_context():
        return [(p.deal_id, p.rule.name if p.rule else None, [m.name for m in p.milestones])
                for p in db.session.scalars(select(Project).order_by(Project.id))]


def _count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def _auth(client, username="boss"):
    """API headers: a token, and English answers (the messages asserted here are the English ones)."""
    return {"Authorization": f"Bearer {api_token(client, username)}", **EN}


def _panel(panels) -> dict[str, str]:
    found = [p for p in panels if p["module"] == "project_bridge"]
    assert len(found) == 1
    return dict(found[0]["rows"])


def _timeline(client, world, h) -> list[tuple[str, str]]:
    view = client.get(f"/api/v1/crm/customer/company/{world['company']}/360", headers=h).get_json()["result"]
    return [(e["kind"], e["title"]) for e in view["timeline"]["entries"] if e["source"] == "project_bridge"]


# -- with a project module ----------------------------------------------------------------------------------

def test_a_won_deal_matching_a_rule_asks_the_project_module_once_with_its_milestones(erp):
    from plugins.project_bridge.models import Milestone, Project

    world = _world(erp)
    rule_id = _rule(erp, "实施 / Implementation", pipeline=world["sales"])
    deal_id = _win(erp, world)
    [(_, request)] = [c for c in MODULE["calls"] if c[0] == "project_create"]
    won_on = utcnow().date()
    assert request["idempotency_key"] == f"crm-deal-{deal_id}" and request["name"] == "ERP 升级 / ERP upgrade"
    assert request["customer"] == {"company_id": world["company"], "contact_id": None, "name": "华信科技有限公司"}
    assert request["start"] == won_on and request["due"] == won_on + dt.timedelta(days=45)
    assert request["template"] == {"rule_id": rule_id, "name": "实施 / Implementation"}
    assert [(m["name"], m["due"] - won_on, m["position"]) for m in request["milestones"]] == [
        ("启动会 / Kick-off", dt.timedelta(0), 0), ("上线 / Go-live", dt.timedelta(days=30), 1),
        ("验收 / Acceptance", dt.timedelta(days=45), 2)]
    assert request["source"] == {"kind": "deal", "id": deal_id, "name": "ERP 升级 / ERP upgrade",
                                 "pipeline_id": world["sales"], "owner_id": world["rep"]}
    assert (request["currency"], request["amount"]) == ("CNY", Decimal("25000.00"))  # the amount of its line items
    with erp.app_context():
        project = db.session.scalar(select(Project))
        assert (project.deal_id, project.external_id, project.number, project.status) == \
            (deal_id, "ERP-P-1", "PJ-2026-001", "planned")
    assert _count(erp, Milestone) == 0  # the module keeps the milestones

    _deliver_again(erp)
    assert len([c for c in MODULE["calls"] if c[0] == "project_create"]) == 1
    assert len(MODULE["projects"]) == 1 and _count(erp, Project) == 1


def test_when_the_project_module_fails_the_event_is_retried_later_and_the_project_made_once(erp):
    from plugins.crm.pipeline.models import Deal
    from plugins.project_bridge.models import Project

    erp.config.update(BIGLEDGER_EVENT_RETRY_SECONDS=60)
    MODULE["fail"] = 1
    world = _world(erp)
    _rule(erp, "实施 / Implementation", product="ERP-STD")
    deal_id = _win(erp, world)  # the user's win succeeds although the module is down
    with erp.app_context():
        assert db.session.get(Deal, deal_id).status == "won"
    [delivery] = _deliveries(erp)
    assert delivery.status == "failed" and "project module is down for maintenance" in delivery.last_error
    assert MODULE["projects"] == {} and _count(erp, Project) == 0
    assert deliver_due(erp)["delivered"] == 0  # not before its back-off

    with erp.app_context():
        db.session.execute(update(EventDelivery).where(EventDelivery.id == delivery.id)
                           .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()
    assert deliver_due(erp)["delivered"] == 1
    keys = [c[1]["idempotency_key"] for c in MODULE["calls"] if c[0] == "project_create"]
    assert keys == [f"crm-deal-{deal_id}"] * 2
    assert len(MODULE["projects"]) == 1 and _count(erp, Project) == 1
    assert _deliveries(erp)[0].status == "delivered"
    _deliver_again(erp)
    assert len(MODULE["projects"]) == 1 and _count(erp, Project) == 1


def test_the_deal_page_and_the_360_view_show_what_the_project_module_says(erp):
    client = erp.test_client()
    world = _world(erp)
    _rule(erp, "实施 / Implementation")
    deal_id = _win(erp, world)
    reached = utcnow() - dt.timedelta(days=1)
    project = {"id": "ERP-P-1", "number": "PJ-2026-001", "name": "ERP 升级", "status": "on_hold",
               "start": dt.date(2026, 3, 1), "due": dt.date(2026, 4, 15), "url": "https://erp.example/p/1",
               "deal_id": deal_id, "created_at": utcnow() - dt.timedelta(days=2),
               "milestones": [{"name": "启动会 / Kick-off", "due": dt.date(2026, 3, 1), "done_at": reached,
                               "position": 0},
                              {"name": "上线 / Go-live", "due": dt.date(2026, 3, 31), "done_at": None, "position": 1}]}
    MODULE.update(status={deal_id: project}, customer={"open": 1, "projects": [project]}, calls=[])
    h = _auth(client)
    extras = client.get(f"/api/v1/crm/deal/{deal_id}/extras", headers=h).get_json()
    rows = _panel(extras["panels"])
    assert rows["Project"] == "PJ-2026-001 · ERP 升级" and rows["Status"] == "on hold"
    assert rows["Milestones"] == "1 of 2 milestones reached"
    assert rows["Next milestone"] == "上线 / Go-live, due 2026-03-31" and rows["Due"] == "2026-04-15"
    assert [p["url"] for p in extras["panels"] if p["module"] == "project_bridge"] == ["https://erp.example/p/1"]
    assert ("project_status", [deal_id]) in MODULE["calls"]

    view = client.get(f"/api/v1/crm/customer/company/{world['company']}/360", headers=h).get_json()["result"]
    assert _panel(view["panels"]) == {"Open projects": "1", "PJ-2026-001 · ERP 升级":
                                      "on hold · 1 of 2 milestones reached · next: 上线 / Go-live, due 2026-03-31"}
    asked = [c for c in MODULE["calls"] if c[0] == "project_customer_projects"]
    assert {c[1]["kind"] for c in asked} == {"company"} and {c[1]["id"] for c in asked} == {world["company"]}
    assert asked[0][1]["name"] == "华信科技有限公司" and asked[0][1]["company_ids"] == [world["company"]]
    assert [c[2] for c in asked] == [25]  # the timeline's page, which the panel's newest few come from
    assert _timeline(client, world, h) == [("milestone", "Milestone reached: 启动会 / Kick-off"),
                                           ("project", "Project PJ-2026-001 · ERP 升级 created")]


# -- standalone: rules ----------------------------------------------------------------------------------------

def test_standalone_the_first_matching_rule_by_position_makes_the_project_and_no_rule_makes_none(app):
    world = _world(app)
    _rule(app, "旧规则 / Retired", position=0, product="ERP-STD", active=False)
    _rule(app, "硬件安装 / Hardware install", position=1, product="pos-kit",
          milestones=[{"name": "安装 / Install", "days": 5}])
    _rule(app, "实施 / Implementation", position=2, pipeline=world["sales"])
    by_product = _win(app, world, pipeline=world["renewals"], codes=("CLOUD", "POS-KIT"), name="收银机 / Tills")
    by_pipeline = _win(app, world, codes=("POS-KIT-X",), name="ERP 升级")
    nothing = _win(app, world, pipeline=world["renewals"], codes=("CLOUD",), name="续约 / Renewal")
    assert _projects(app) == [
        (by_product, "硬件安装 / Hardware install", ["安装 / Install"]),
        (by_pipeline, "实施 / Implementation", ["启动会 / Kick-off", "上线 / Go-live", "验收 / Acceptance"])]
    assert nothing not in [p[0] for p in _projects(app)]
    with app.app_context():
        from plugins.project_bridge.models import Project

        project = db.session.scalar(select(Project).where(Project.deal_id == by_pipeline))
        assert project.number == f"PRJ-{project.id:06d}" and project.status == "planned"
        assert project.company_id == world["company"] and project.due_on == utcnow().date() + dt.timedelta(days=45)


def test_no_rule_no_project(app):
    world = _world(app)
    _win(app, world)
    assert _projects(app) == []
    assert [d.status for d in _deliveries(app)] == ["delivered"]


def test_a_deal_delivered_twice_or_won_again_after_reopening_gets_one_project(app):
    from plugins.crm.pipeline.models import Deal
    from plugins.crm.pipeline.services import reopen_deal, win_deal
    from plugins.project_bridge.models import Milestone, Project

    world = _world(app)
    _rule(app, "实施 / Implementation")
    deal_id = _win(app, world)
    _deliver_again(app)
    with app.app_context():
        deal = db.session.get(Deal, deal_id)
        reopen_deal(db.session, deal)
        db.session.commit()
        win_deal(db.session, deal, reason="再次签约 / signed again")
        db.session.commit()
    assert _count(app, Project) == 1 and _count(app, Milestone) == 3


# -- standalone: following a project --------------------------------------------------------------------------

def test_the_deal_page_extras_and_360_view_show_the_projects_status_and_milestones(app, client):
    world = _world(app)
    _rule(app, "实施 / Implementation")
    deal_id = _win(app, world)
    due = (utcnow().date() + dt.timedelta(days=45)).isoformat()
    login(client, "rep")
    client.get("/lang/en")
    page = client.get(f"/dealview/show/{deal_id}", headers=EN).get_data(as_text=True)
    panel = re.search(r'<div class="panel panel-default bl-panel" data-module="project_bridge">(.*?)</table>', page,
                      flags=re.DOTALL)
    assert panel is not None
    text = re.sub(r"<[^>]+>", " ", panel.group(1))
    assert "Delivery project" in text and "PRJ-" in text and "planned" in text
    assert "0 of 3 milestones reached" in text and "启动会 / Kick-off, due" in text

    h = _auth(client, "rep")
    panels = client.get(f"/api/v1/crm/deal/{deal_id}/extras", headers=h).get_json()["panels"]
    rows = _panel(panels)
    assert rows["Status"] == "planned" and rows["Milestones"] == "0 of 3 milestones reached"
    assert rows["Due"] == due
    number = rows["Project"].split(" · ")[0]
    [link] = [p["url"] for p in panels if p["module"] == "project_bridge"]
    assert number in client.get(link, headers=EN).get_data(as_text=True)  # the panel opens the project
    view = client.get(f"/api/v1/crm/customer/company/{world['company']}/360", headers=h).get_json()["result"]
    [link] = [p["url"] for p in view["panels"] if p["module"] == "project_bridge"]
    assert number in client.get(link, headers=EN).get_data(as_text=True)  # and the customer's projects
    assert _panel(view["panels"]) == {
        "Open projects": "1",
        f"{number} · ERP 升级 / ERP upgrade":
            f"planned · 0 of 3 milestones reached · next: 启动会 / Kick-off, due {utcnow().date().isoformat()}"}
    assert _timeline(client, world, h) == [("project", f"Project {number} · ERP 升级 / ERP upgrade created")]
    listing = client.get("/project/projects/list/", headers=EN).get_data(as_text=True)
    assert number in listing and "0/3" in listing and due in listing
    assert f'<a href="/crm/customer/company/{world["company"]}">华信科技有限公司</a>' in listing  # the CRM's name


def test_reaching_milestones_and_changing_the_status_shows_in_the_timeline_and_on_the_deal(app, client):
    from plugins.project_bridge.models import Milestone, Project

    world = _world(app)
    _rule(app, "实施 / Implementation")
    deal_id = _win(app, world)
    with app.app_context():
        project_id = db.session.scalar(select(Project.id))
        kick_off, go_live, _ = db.session.scalars(select(Milestone.id).order_by(Milestone.position)).all()
    h = _auth(client, "pm")
    done = client.post(f"/api/v1/project/milestone/{kick_off}/done", headers=h,
                       json={"done_at": "2026-03-02T08:30:00+08:00"})
    assert done.status_code == 200 and done.get_json()["project_status"] == "active"
    assert done.get_json()["done_at"].startswith("2026-03-02T00:30:00")

    login(client, "pm")
    client.get("/lang/en")
    show = client.get(f"/project/projects/show/{project_id}", headers=EN)
    assert show.status_code == 200 and "上线 / Go-live" in show.get_data(as_text=True)
    page = client.post("/project/milestones/action_post", headers=EN, follow_redirects=True, data={
        "action": "reach", "rowid": [str(go_live)],
        "csrf_token": csrf_token(client, f"/project/projects/show/{project_id}")})
    assert "Milestone “上线 / Go-live” reached." in page.get_data(as_text=True)

    entries = _timeline(client, world, h)
    assert entries[0] == ("milestone", "Milestone reached: 上线 / Go-live")
    assert sorted(entries[1:]) == sorted([("milestone", "Milestone reached: 启动会 / Kick-off"),
                                          ("project", f"Project PRJ-{project_id:06d} · ERP 升级 / ERP upgrade created")])
    rows = _panel(client.get(f"/api/v1/crm/deal/{deal_id}/extras", headers=h).get_json()["panels"])
    assert rows["Status"] == "active" and rows["Milestones"] == "2 of 3 milestones reached"
    assert rows["Next milestone"].startswith("验收 / Acceptance, due")

    page = client.post("/project/projects/action_post", headers=EN, follow_redirects=True, data={
        "action": "hold", "rowid": [str(project_id)], "csrf_token": csrf_token(client, "/project/projects/list/")})
    assert f"Project PRJ-{project_id:06d} is now on hold." in page.get_data(as_text=True)
    listing = client.get("/project/projects/list/", headers=EN).get_data(as_text=True)
    assert "on hold" in listing and "2/3" in listing
    cancelled = client.post(f"/api/v1/project/project/{project_id}/status", headers=h, json={"status": "cancelled"})
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    refused = client.post(f"/api/v1/project/milestone/{go_live}/done", headers=h, json={"done": False})
    assert refused.status_code == 400
    assert refused.get_json()["message"] == \
        f"Project PRJ-{project_id:06d} is cancelled: reopen it before changing its milestones."


def test_rules_are_kept_on_their_screen_and_api_and_bad_input_names_the_field(app, client):
    world = _world(app)
    h = _auth(client, "pm")
    added = client.post("/api/v1/project/rule/", headers=h, json={
        "name": " 实施 / Implementation ", "position": 5, "pipeline_id": world["sales"], "product_code": "ERP-STD",
        "milestones": [{"名称": "启动会 / Kick-off", "天数": 0}, {"name": "上线 / Go-live", "days": "30"}]})
    assert added.status_code == 201, added.get_json()
    rule = client.get(f"/api/v1/project/rule/{added.get_json()['id']}", headers=h).get_json()["result"]
    assert (rule["name"], rule["active"], rule["milestones"]) == (
        "实施 / Implementation", True, [{"name": "启动会 / Kick-off", "days": 0}, {"name": "上线 / Go-live", "days": 30}])

    def refused(body, method="post", url="/api/v1/project/rule/"):
        answer = getattr(client, method)(url, headers=h, json=body)
        assert answer.status_code == 400, answer.get_json()
        return answer.get_json()["message"]

    base = {"name": "规则", "milestones": MILESTONES}
    assert refused({**base, "milestones": [{"name": "启动会", "days": 0}, {"name": "上线", "days": -3}]}) == \
        "milestones[1].days: give the days after the project's start as a whole number from 0 to 3650, not “-3”."
    assert refused({**base, "milestones": []}).startswith("milestones: give at least one milestone")
    assert refused({**base, "milestones": [{"days": 3}]}) == \
        "milestones[0].name: give the milestone a name of at most 200 characters."
    assert refused({**base, "pipeline_id": 9999}) == \
        "pipeline_id: there is no pipeline 9999; leave it empty for every pipeline."
    assert refused({**base, "name": "  "}) == "name: give the rule a name of at most 200 characters."
    assert refused({"milestones": [{"name": "x", "days": 1.5}]}, "put", f"/api/v1/project/rule/{rule['id']}") \
        .startswith("milestones[0].days:")

    _rule(app, "实施 / Implementation", pipeline=world["sales"])
    _win(app, world)
    with app.app_context():
        from plugins.project_bridge.models import Milestone, Project

        project_id = db.session.scalar(select(Project.id))
        milestone_id = db.session.scalar(select(Milestone.id))
    assert refused({"status": "finished"}, url=f"/api/v1/project/project/{project_id}/status") == \
        "status: choose one of planned, active, on_hold, done, cancelled, not “finished”."
    assert refused({"done_at": "next tuesday"}, url=f"/api/v1/project/milestone/{milestone_id}/done") == \
        "done_at: give a date and time such as 2026-03-02T08:30:00+08:00, not “next tuesday”."

    login(client, "pm")
    client.get("/lang/en")
    form = {"name": "安装 / Install", "position": "3", "active": "y", "pipeline_id": str(world["renewals"]),
            "product_code": "", "milestones_text": "安装 / Install | 5\n培训 / Training",
            "csrf_token": csrf_token(client, "/project/rules/add")}
    page = client.post("/project/rules/add", data=form, headers=EN, follow_redirects=True).get_data(as_text=True)
    assert "milestones, line 2: write “name | days”" in page
    form["milestones_text"] = "安装 / Install | 5\n培训 / Training | 12"
    client.post("/project/rules/add", data=form, headers=EN, follow_redirects=True)
    listing = client.get("/project/rules/list/", headers=EN).get_data(as_text=True)
    assert "培训 / Training | 12" in listing and "续约 Renewals" in listing


def test_roles_sales_reps_follow_projects_project_managers_change_them(app, client):
    world = _world(app)
    _rule(app, "实施 / Implementation")
    _win(app, world)
    with app.app_context():
        from plugins.project_bridge.models import Project

        project_id = db.session.scalar(select(Project.id))
    rep = _auth(client, "rep")
    assert client.get("/api/v1/project/project/", headers=rep).get_json()["count"] == 1
    assert client.post(f"/api/v1/project/project/{project_id}/status", headers=rep,
                       json={"status": "done"}).status_code == 403
    assert client.get("/api/v1/project/rule/", headers=rep).status_code == 403
    pm = _auth(client, "pm")
    assert client.post(f"/api/v1/project/project/{project_id}/status", headers=pm,
                       json={"status": "done"}).status_code == 200
    login(client, "rep")
    assert client.get("/project/projects/list/").status_code == 200
    assert client.get("/project/rules/add").status_code != 200


def test_a_merged_companys_projects_follow_it_to_the_survivor(app, client):
    from plugins.crm.merge import merge
    from plugins.crm.models import Company

    world = _world(app)
    _rule(app, "实施 / Implementation")
    with app.app_context():
        other = Company(name="华信科技（上海）", owner_id=world["rep"])
        db.session.add(other)
        db.session.commit()
        other_id = other.id
    _win(app, {**world, "company": other_id})
    with app.app_context():
        merge(db.session, "company", world["company"], other_id)
        db.session.commit()
    view = client.get(f"/api/v1/crm/customer/company/{world['company']}/360", headers=_auth(client)).get_json()
    assert _panel(view["result"]["panels"])["Open projects"] == "1"


# -- switched off --------------------------------------------------------------------------------------------

def test_with_the_bridge_switched_off_the_crm_works_and_nothing_is_asked_or_shown(erp):
    client = erp.test_client()
    from bigledger_core.modules import disable_module
    from plugins.crm.pipeline.models import Deal
    from plugins.project_bridge.models import Project

    world = _world(erp)
    _rule(erp, "实施 / Implementation")
    with erp.test_request_context():
        disable_module("project_bridge", by="test")
    deal_id = _win(erp, world)
    with erp.app_context():
        assert db.session.get(Deal, deal_id).status == "won"
    assert _count(erp, Project) == 0 and _deliveries(erp) == []
    h = _auth(client)
    extras = client.get(f"/api/v1/crm/deal/{deal_id}/extras", headers=h)
    assert extras.status_code == 200 and extras.get_json()["panels"] == []
    view = client.get(f"/api/v1/crm/customer/company/{world['company']}/360", headers=h).get_json()["result"]
    assert [p for p in view["panels"] if p["module"] == "project_bridge"] == []
    assert client.get("/api/v1/project/project/", headers=h).status_code == 404
    login(client, "boss")
    page = client.get(f"/dealview/show/{deal_id}")
    assert page.status_code == 200 and 'data-module="project_bridge"' not in page.get_data(as_text=True)
    assert MODULE["calls"] == []


# -- demo -------------------------------------------------------------------------------------------------------

def test_the_demo_shows_a_project_under_way_on_the_won_deal_and_in_the_360_view(app, client):
    from bigledger_core.demo import load_demo
    from plugins.crm.models import Company
    from plugins.crm.pipeline.models import Deal
    from plugins.project_bridge.models import Project, ProjectRule

    with app.app_context():
        load_demo()
        load_demo()
        assert _count(app, ProjectRule) == 2 and _count(app, Project) == 1
        deal_id = db.session.scalar(select(Deal.id).where(Deal.name == "华夏零售 BI 报表 / BI reports"))
        huaxia = db.session.scalar(select(Company.id).where(Company.external_id == "demo-co-1"))
    add_user(app, "boss", "Admin")
    h = _auth(client)
    rows = _panel(client.get(f"/api/v1/crm/deal/{deal_id}/extras", headers=h).get_json()["panels"])
    assert rows["Status"] == "active" and rows["Milestones"] == "1 of 4 milestones reached"
    assert rows["Next milestone"].startswith("需求确认 / Requirements signed off, due")
    view = client.get(f"/api/v1/crm/customer/company/{huaxia}/360", headers=h).get_json()["result"]
    assert _panel(view["panels"])["Open projects"] == "1"
    assert ("milestone", "Milestone reached: 项目启动会 / Kick-off meeting") in \
        [(e["kind"], e["title"]) for e in view["timeline"]["entries"] if e["source"] == "project_bridge"]
