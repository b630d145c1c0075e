"""Lead assignment: rules route by criterion to a team or a user, weighted round robin within a team,
capacity and availability, the lead's own or the default team, manual reassignment over the API and the
screens (always recorded: who and why), the rule and rep-setting screens, and — on PostgreSQL — 400 leads
created at once from 8 processes spread evenly."""
from __future__ import annotations

import datetime as dt
import multiprocessing
from collections import Counter

import pytest
from flask_appbuilder.security.sqla.models import User
from flask_babel import force_locale
from sqlalchemy import func, select

from bigledger_core.db import db
from bigledger_core.models import Team
from plugins.crm.leads.assignment import Rep, assign, describe, history, pick
from plugins.crm.leads.models import (
    Assignment,
    AssignmentRule,
    Lead,
    RepSetting,
    RoundRobin,
)
from plugins.crm.leads.services import create_lead
from plugins.crm.models import CustomField
from tests.conftest import add_user, api_token, build_app, csrf_token, login


def make_team(app, name: str, usernames: list[str], name_en: str | None = None) -> tuple[int, list[int]]:
    ids = [add_user(app, username, "Sales Rep") for username in usernames]
    with app.app_context():
        team = Team(name=name, name_en=name_en, members=[db.session.get(User, i) for i in ids])
        db.session.add(team)
        db.session.commit()
        return team.id, ids


def new_lead(**values) -> Lead:
    values.setdefault("name", "潜客")
    lead, created = create_lead(db.session, Lead(**values))
    assert created
    db.session.commit()
    return lead


def owners(lead_ids) -> Counter:
    return Counter(db.session.scalars(select(Lead.owner_id).where(Lead.id.in_(lead_ids))))


def english(app, reason: str) -> str:
    with app.test_request_context(), force_locale("en"):
        return describe(reason, "en")


def test_rules_route_by_criterion_to_a_team_or_a_named_user(app):
    tech, (a1, a2) = make_team(app, "科技组", ["tech1", "tech2"], "Tech team")
    big_team, (big,) = make_team(app, "大客户部", ["bigacct"])
    with app.app_context():
        db.session.add_all([
            AssignmentRule(position=1, name="科技行业", criterion="行业 = '科技'", team_id=tech),
            AssignmentRule(position=2, name="大公司", criterion="公司规模 > 1000", user_id=big),
            AssignmentRule(position=3, name="停用", criterion="城市 = '上海'", user_id=big, active=False)])
        db.session.commit()
        tech_leads = [new_lead(name=f"科技{n}", industry="科技", company_size=5000).id for n in range(4)]
        large = new_lead(name="大公司", industry="制造", company_size=5000)
        small = new_lead(name="小公司", industry="零售", company_size=10, city="上海")
        assert owners(tech_leads) == {a1: 2, a2: 2}  # rule 1 wins over rule 2: rules are tried in order
        assert (large.owner_id, large.team_id) == (big, big_team)  # a user's team goes with a rule naming only them
        assert (small.owner_id, small.team_id) == (None, None)  # no rule, no team, no default team
        assert db.session.scalar(select(func.count()).where(Assignment.lead_id == small.id)) == 0
        rows = db.session.scalars(select(Assignment).order_by(Assignment.id)).all()
        assert [r.lead_id for r in rows] == [*tech_leads, large.id] and all(r.by_id is None for r in rows)
        reasons = [english(app, r.reason) for r in rows]
    assert reasons[0] == "rule 1 (科技行业: 行业 = '科技'), round robin in Tech team"
    assert reasons[-1] == "rule 2 (大公司: 公司规模 > 1000)"


def test_a_rule_that_no_longer_parses_is_skipped_and_shown_on_the_rules_screen(app, client):
    add_user(app, "admin", "Admin")
    team, (rep,) = make_team(app, "华东销售部", ["east"])
    with app.app_context():
        db.session.add(CustomField(entity="lead", key="region", label="区域", label_en="Region", type="text",
                                   active=True))
        db.session.add_all([AssignmentRule(position=1, name="华东", criterion="区域 = '华东'", team_id=team),
                            AssignmentRule(position=2, name="科技", criterion="行业 = '科技'", user_id=rep)])
        db.session.commit()
        assert new_lead(custom={"region": "华东"}).team_id == team
        db.session.query(CustomField).delete()  # the custom field is gone: rule 1 no longer parses
        db.session.commit()
        lead = new_lead(industry="科技")
        assert lead.owner_id == rep
        assert "rule 2" in english(app, db.session.scalars(select(Assignment.reason)
                                                           .where(Assignment.lead_id == lead.id)).one())
    login(client, "admin")
    page = client.get("/assignmentruleview/list/?_l_=en").get_data(as_text=True)
    assert "bl-rule-problem" in page and "unknown name “区域”" in page


def test_round_robin_is_even_and_weighted_in_the_leads_team_and_the_default_team(make_app):
    app = make_app(BIGLEDGER_LEAD_DEFAULT_TEAM="Default sales")
    team, (a, b, c) = make_team(app, "华东销售部", ["a", "b", "c"])
    default, (d1, d2) = make_team(app, "默认销售部", ["d1", "d2"], "Default sales")
    with app.app_context():
        db.session.add(RepSetting(user_id=a, weight=2))
        db.session.commit()
        ids = [new_lead(name=f"表单{n}", source="form", team_id=team).id for n in range(41)]
        assert owners(ids[:40]) == {a: 20, b: 10, c: 10}
        order = db.session.scalars(select(Lead.owner_id).where(Lead.id.in_(ids)).order_by(Lead.id)).all()
        assert order[:8] == [a, b, c, a, a, b, c, a]  # interleaved, not a-a-b-c
        others = [new_lead(name=f"无团队{n}").id for n in range(5)]
        assert owners(others) == {d1: 3, d2: 2}
        assert set(db.session.scalars(select(Lead.team_id).where(Lead.id.in_(others)))) == {default}
        assert db.session.get(RoundRobin, team).last_user_id == order[-1]
        reason = db.session.scalars(select(Assignment.reason).where(Assignment.lead_id == others[0])).one()
    assert english(app, reason) == "round robin in Default sales (the default team)"


def test_pick_gives_each_rep_its_weights_share_of_every_cycle():
    reps = [Rep(1, 3), Rep(2, 1), Rep(3, 2)]
    cycle = [pick(reps, n).user_id for n in range(6)]
    assert cycle == [1, 2, 3, 1, 3, 1]
    assert Counter(pick(reps, n).user_id for n in range(600)) == {1: 300, 2: 100, 3: 200}


def test_capacity_and_availability_are_respected(app):
    team, (full, off, away, back) = make_team(app, "华南销售部", ["full", "off", "away", "back"])
    today = dt.date.today()
    with app.app_context():
        db.session.add_all([RepSetting(user_id=full, max_open_leads=2), RepSetting(user_id=off, available=False),
                            RepSetting(user_id=away, away_until=today),
                            RepSetting(user_id=back, away_until=today - dt.timedelta(days=1), max_open_leads=5)])
        db.session.commit()
        ids = [new_lead(name=f"潜客{n}", team_id=team).id for n in range(7)]
        assert owners(ids) == {full: 2, back: 5}
        # nobody is left: the lead joins the team unowned, and that is recorded too
        stuck = new_lead(name="没人接", team_id=team)
        assert (stuck.owner_id, stuck.team_id) == (None, team)
        row = db.session.scalars(select(Assignment).where(Assignment.lead_id == stuck.id)).one()
        assert english(app, row.reason) == "nobody in 华南销售部 (the lead's team) is available or under capacity"
        # a converted lead no longer counts against capacity
        db.session.get(Lead, ids[0]).status = "converted"
        db.session.commit()
        assert new_lead(name="又一个", team_id=team).owner_id == full
        # a rule naming a user who is away falls back to its team's round robin, and says so
        db.session.get(RepSetting, off).available = True
        db.session.add(AssignmentRule(position=1, name="VIP", criterion="公司规模 >= 500", user_id=away,
                                      team_id=team))
        db.session.commit()
        vip = new_lead(name="VIP", company_size=800)
        assert vip.owner_id == off
        reason = db.session.scalars(select(Assignment.reason).where(Assignment.lead_id == vip.id)).one()
    assert english(app, reason) == ("rule 1 (VIP: 公司规模 >= 500): Away Test is unavailable or at capacity, "
                                    "round robin in 华南销售部")


def test_manual_reassignment_over_the_api_is_recorded_with_who_and_why(app, client):
    admin = add_user(app, "admin", "Admin")
    team, (a, b) = make_team(app, "华北销售部", ["north1", "north2"])
    other, (c,) = make_team(app, "华西销售部", ["west"])
    with app.app_context():
        lead_id = new_lead(name="张伟", team_id=team).id
    headers = {"Authorization": f"Bearer {api_token(client, 'admin')}", "Accept-Language": "en"}
    moved = client.post(f"/api/v1/crm/lead/{lead_id}/assign", json={"user_id": b}, headers=headers)
    assert moved.status_code == 200, moved.get_json()
    assert (moved.get_json()["owner_id"], moved.get_json()["team_id"]) == (b, team)
    assert moved.get_json()["assignment"]["reason"] == "manual by Admin Test"
    refused = client.post(f"/api/v1/crm/lead/{lead_id}/assign", json={"user_id": c, "team_id": team},
                          headers=headers)
    assert refused.status_code == 400 and "is not a member of team 华北销售部" in refused.get_json()["message"]
    assert client.post(f"/api/v1/crm/lead/{lead_id}/assign", json={}, headers=headers).status_code == 400
    assert client.post(f"/api/v1/crm/lead/{lead_id}/assign", json={"user_id": "x"},
                       headers=headers).status_code == 400
    to_team = client.post(f"/api/v1/crm/lead/{lead_id}/assign", json={"team_id": other}, headers=headers)
    assert to_team.get_json()["owner_id"] == c
    assert client.post("/api/v1/crm/lead/999999/assign", json={"user_id": b}, headers=headers).status_code == 404

    listed = client.get(f"/api/v1/crm/lead/{lead_id}/assignments", headers=headers).get_json()
    assert (listed["owner_id"], listed["team_id"]) == (c, other)
    assert [(r["user_id"], r["by_id"], r["reason"]) for r in listed["result"]] == [
        (c, admin, "manual by Admin Test, round robin in 华西销售部"),
        (b, admin, "manual by Admin Test"),
        (a, None, "round robin in 华北销售部 (the lead's team)")]
    assert listed["result"][0]["reason_detail"]["k"] == "manual"

    # a rep sees the history of their own lead but may not reassign it
    rep_headers = {"Authorization": f"Bearer {api_token(client, 'west')}"}
    assert client.get(f"/api/v1/crm/lead/{lead_id}/assignments", headers=rep_headers).status_code == 200
    assert client.post(f"/api/v1/crm/lead/{lead_id}/assign", json={"user_id": c},
                       headers=rep_headers).status_code in (401, 403)


def test_the_assignment_screens(app, client):
    add_user(app, "admin", "Admin")
    team, (a, b) = make_team(app, "华东销售部", ["east1", "east2"])
    with app.app_context():
        lead_id = new_lead(name="李娜", team_id=team).id
    login(client, "admin")
    token = csrf_token(client, "/assignmentruleview/add")
    bad = client.post("/assignmentruleview/add?_l_=en", follow_redirects=True, data={
        "csrf_token": token, "position": "1", "name": "坏规则", "criterion": "公司规模 > ", "team": str(team)})
    assert "position 8: expected a value after" in bad.get_data(as_text=True)
    neither = client.post("/assignmentruleview/add?_l_=en", follow_redirects=True, data={
        "csrf_token": token, "position": "1", "name": "无去向", "criterion": "公司规模 > 10"})
    assert "Choose a team, a user or both for the rule." in neither.get_data(as_text=True)
    client.post("/assignmentruleview/add", follow_redirects=True, data={
        "csrf_token": token, "name": "科技", "criterion": "行业 = '科技'", "user": str(b), "active": "y"})
    weight = client.post("/repsettingview/add?_l_=en", follow_redirects=True, data={
        "csrf_token": token, "user": str(a), "weight": "0", "available": "y"})
    assert "Number must be between 1 and 100" in weight.get_data(as_text=True)
    client.post("/repsettingview/add", follow_redirects=True, data={
        "csrf_token": token, "user": str(a), "weight": "3", "max_open_leads": "40", "available": "y"})
    with app.app_context():
        rule = db.session.scalars(select(AssignmentRule)).one()
        assert (rule.name, rule.position, rule.user_id, rule.active) == ("科技", 1, b, True)
        assert (db.session.get(RepSetting, a).weight, db.session.get(RepSetting, a).max_open_leads) == (3, 40)

    page = client.get(f"/crm/assignment/lead/{lead_id}?_l_=en").get_data(as_text=True)
    assert "bl-assignment-history" in page and "round robin in 华东销售部 (the lead&#39;s team)" in page
    assert 'id="bl-reassign"' in page
    done = client.post(f"/crm/assignment/lead/{lead_id}/reassign?_l_=en", follow_redirects=True,
                       data={"csrf_token": token, "user_id": str(b), "team_id": ""})
    assert "Lead assigned: manual by Admin Test" in done.get_data(as_text=True)
    with app.app_context():
        lead = db.session.get(Lead, lead_id)
        assert lead.owner_id == b
        assert [row["by"] for row in history(db.session, lead_id)] == ["Admin Test", None]


def test_assign_leaves_an_owned_lead_alone_and_records_nothing_without_a_team(app):
    _team, (a,) = make_team(app, "华东销售部", ["east"])
    with app.app_context():
        lead = new_lead(name="已有负责人", owner_id=a)
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 0
        lead.owner_id = None
        assert assign(db.session, lead) is None


# -- concurrency ----------------------------------------------------------------------------------------

PROCESSES, LEADS = 8, 400


def _create_leads(app, worker: int, count: int, start) -> None:
    """One of the concurrent creators (a forked process: its own connections to the shared test database)."""
    with app.app_context():
        start.wait()
        for n in range(count):
            create_lead(db.session, Lead(name=f"并发 {worker}-{n}", source="api"))
            db.session.commit()
        db.session.remove()
        db.engine.dispose()


def test_400_leads_created_at_once_from_8_processes_are_spread_evenly(backend, app, database_url, tmp_path):
    if backend != "postgresql":
        pytest.skip("SQLite serializes writers: concurrent assignment needs PostgreSQL to be meaningful")
    team, reps = make_team(app, "并发组", [f"rep{n}" for n in range(7)])
    workers_app = build_app(database_url, tmp_path / "workers", BIGLEDGER_EVENT_FIRST_ATTEMPT="off",
                            BIGLEDGER_LEAD_DEFAULT_TEAM="并发组")
    for each in (app, workers_app):
        with each.app_context():
            db.session.remove()
            db.engine.dispose()  # the children open their own connections; none may be shared
    context = multiprocessing.get_context("fork")  # children start with the app built and modules imported
    start = context.Barrier(PROCESSES)
    workers = [context.Process(target=_create_leads, args=(workers_app, n, LEADS // PROCESSES, start))
               for n in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    with app.app_context():
        counts = dict(db.session.execute(select(Lead.owner_id, func.count()).group_by(Lead.owner_id)).all())
        assert sum(counts.values()) == LEADS and set(counts) == set(reps)
        assert max(counts.values()) - min(counts.values()) <= 1, counts
        per_lead = select(Assignment.lead_id, func.count().label("n")).group_by(Assignment.lead_id).subquery()
        assert db.session.scalar(select(func.count()).select_from(per_lead).where(per_lead.c.n == 1)) == LEADS
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == LEADS
        assert db.session.get(RoundRobin, team).position == LEADS % len(reps)
        print(f"per-rep counts: {sorted(counts.values())}")
