"""Companies and contacts through the REST API and screens: search (pinyin, phone, e-mail), hierarchy,
custom fields, duplicates, record rules, optimistic locking and the 360° view."""
from __future__ import annotations

import datetime as dt

import pytest

from bigledger_core.db import db
from plugins.crm.models import (
    Activity,
    Company,
    Contact,
    ContactCompany,
    ContactRole,
    CustomField,
    Email,
    Phone,
)
from tests.conftest import add_user, api_token, login


def _user_id(app, username):
    with app.app_context():
        return app.appbuilder.sm.find_user(username=username).id


@pytest.fixture
def world(app):
    """Two companies in a tree, contacts with phones and e-mails, owned by two reps."""
    add_user(app, "admin", "Admin")
    add_user(app, "rep", "Sales Rep")
    add_user(app, "rep2", "Sales Rep")
    rep, rep2 = _user_id(app, "rep"), _user_id(app, "rep2")
    with app.app_context():
        s = db.session
        group = Company(name="华润集团", name_en="China Resources", owner_id=rep)
        sub = Company(name="华润万家", name_en="CR Vanguard", parent=group, owner_id=rep)
        other = Company(name="Acme Sdn Bhd", owner_id=rep2)
        zhang = Contact(full_name="张伟", title="采购经理", owner_id=rep)
        lee = Contact(family_name="Lee", given_name="Mei Ling", owner_id=rep2)
        s.add_all([group, sub, other, zhang, lee])
        s.flush()
        decision = s.query(ContactRole).filter_by(code="decision_maker").one()
        s.add_all([ContactCompany(contact=zhang, company=sub, role=decision, is_primary=True),
                   ContactCompany(contact=lee, company=other),
                   Phone(contact=zhang, kind="mobile", raw="138 0013 8000", is_primary=True),
                   Email(contact=zhang, address="Zhang.Wei@CRVanguard.example.com", is_primary=True),
                   Email(contact=lee, address="meiling@acme.example.com")])
        s.commit()
        return {"group": group.id, "sub": sub.id, "other": other.id, "zhang": zhang.id, "lee": lee.id}


def auth(client, username="admin", language="en"):
    return {"Authorization": f"Bearer {api_token(client, username)}", "Accept-Language": language}


def found(client, q, headers):
    response = client.get("/api/v1/crm/search", query_string={"q": q}, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [(r["kind"], r["name"]) for r in response.get_json()["result"]]


def test_names_are_completed_and_searchable_by_pinyin_phone_email_and_company(app, client, world):
    with app.app_context():
        lee = db.session.get(Contact, world["lee"])
        assert lee.full_name == "Mei Ling Lee"
        zhang = db.session.get(Contact, world["zhang"])
        assert (zhang.family_name, zhang.given_name) == ("张", "伟")
        assert db.session.query(Phone).one().e164 == "+8613800138000"
        assert {e.address for e in db.session.query(Email)} == {"zhang.wei@crvanguard.example.com",
                                                                "meiling@acme.example.com"}
    h = auth(client)
    for q in ["张伟", "zhangwei", "zw", "ZhangWei", "138 0013 8000", "+86 13800138000", "+86-138-0013-8000",
              "zhang.wei@crvanguard", "华润万家"]:
        assert ("contact", "张伟") in found(client, q, h), q
    assert ("company", "华润集团") in found(client, "huarun", h)
    assert ("company", "华润集团") in found(client, "ＨＵＡＲＵＮ", h)  # full-width input
    assert found(client, "nobody-like-this", h) == []
    assert client.get("/api/v1/crm/search", headers=h).status_code == 400


def test_a_rep_finds_and_opens_only_what_they_may_see(app, client, world):
    h = auth(client, "rep2")
    assert found(client, "zhangwei", h) == []
    assert ("contact", "Mei Ling Lee") in found(client, "lee", h)
    assert client.get(f"/api/v1/crm/customer/contact/{world['zhang']}/360", headers=h).status_code == 404
    assert client.get(f"/api/v1/crm/customer/contact/{world['lee']}/360", headers=h).status_code == 200
    listed = client.get("/api/v1/crm/contact/", headers=h).get_json()
    assert [c["full_name"] for c in listed["result"]] == ["Mei Ling Lee"]


def test_a_company_cannot_become_its_own_ancestor(app, client, world):
    h = auth(client)
    response = client.put(f"/api/v1/crm/company/{world['group']}", json={"parent_id": world["sub"]}, headers=h)
    assert response.status_code == 400
    assert "cannot be its own parent" in response.get_json()["message"]
    response = client.put(f"/api/v1/crm/company/{world['group']}", json={"parent_id": world["group"]}, headers=h)
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(Company, world["group"]).parent_id is None
    ok = client.put(f"/api/v1/crm/company/{world['other']}", json={"parent_id": world["sub"]}, headers=h)
    assert ok.status_code == 200
    tree = client.get(f"/api/v1/crm/customer/company/{world['group']}/360", headers=h).get_json()["result"]
    children = [(c["name"], c["depth"]) for c in tree["hierarchy"]["children"]]
    assert children == [("华润万家", 1), ("Acme Sdn Bhd", 2)]
    assert tree["hierarchy"]["contacts_total"] == 2  # 张伟 at 华润万家, Lee at Acme, rolled up


def test_custom_fields_are_validated_in_the_api_and_shown_in_the_360(app, client, world):
    with app.app_context():
        db.session.add_all([
            CustomField(entity="contact", key="wechat", label="微信号", label_en="WeChat ID", type="text",
                        required=True, pattern=r"[A-Za-z][-_A-Za-z0-9]{5,19}"),
            CustomField(entity="contact", key="tier", label="等级", label_en="Tier", type="select",
                        options=[{"value": "a", "label": "甲"}, {"value": "b", "label": "乙"}]),
            CustomField(entity="contact", key="since", label="合作开始", label_en="Customer since", type="date"),
        ])
        db.session.commit()
    h = auth(client)
    missing = client.post("/api/v1/crm/contact/", json={"full_name": "王芳"}, headers=h)
    assert missing.status_code == 400 and "WeChat ID: is required" in missing.get_json()["message"]
    bad = client.post("/api/v1/crm/contact/", json={"full_name": "王芳", "custom": {
        "wechat": "1x", "tier": "z", "since": "2024-13-01", "colour": "red"}}, headers=h)
    message = bad.get_json()["message"]
    for part in ["WeChat ID: 1x does not match the required format", "Tier: z is not one of the choices",
                 "Customer since: 2024-13-01 is not a date", "colour: unknown custom field"]:
        assert part in message, message
    chinese = client.post("/api/v1/crm/contact/", json={"full_name": "王芳"}, headers=auth(client, language="zh"))
    assert "微信号: 为必填项" in chinese.get_json()["message"]
    good = client.post("/api/v1/crm/contact/", json={"full_name": "王芳", "custom": {
        "wechat": "wangfang_88", "tier": "a", "since": "2024/03/01"}}, headers=h)
    assert good.status_code == 201, good.get_data(as_text=True)
    new_id = good.get_json()["id"]
    view = client.get(f"/api/v1/crm/customer/contact/{new_id}/360", headers=h).get_json()["result"]
    assert {f["key"]: f["value"] for f in view["custom"]} == {"wechat": "wangfang_88", "tier": "a",
                                                               "since": "2024-03-01"}


def test_likely_duplicates_by_email_phone_and_name_at_the_company(app, client, world):
    h = auth(client)
    response = client.get("/api/v1/crm/duplicates/contact", query_string={
        "email": "ZHANG.WEI@crvanguard.example.com", "phone": "+86 138-0013-8000"}, headers=h)
    [dup] = response.get_json()["result"]
    assert dup["name"] == "张伟" and dup["reasons"] == ["email", "phone"]
    same_name = client.get("/api/v1/crm/duplicates/contact", query_string={
        "name": "张伟", "company_id": world["sub"]}, headers=h).get_json()["result"]
    assert [d["reasons"] for d in same_name] == [["name"]]
    itself = client.get("/api/v1/crm/duplicates/contact", query_string={
        "email": "zhang.wei@crvanguard.example.com", "exclude_id": world["zhang"]}, headers=h)
    assert itself.get_json()["result"] == []


def test_a_stale_save_is_refused_not_silently_overwritten(app, client, world):
    h = auth(client)
    loaded = client.get(f"/api/v1/crm/contact/{world['zhang']}", headers=h).get_json()["result"]
    first = client.put(f"/api/v1/crm/contact/{world['zhang']}", json={"title": "采购总监",
                                                                      "version": loaded["version"]}, headers=h)
    assert first.status_code == 200
    stale = client.put(f"/api/v1/crm/contact/{world['zhang']}", json={"title": "销售",
                                                                      "version": loaded["version"]}, headers=h)
    assert stale.status_code == 400 and "changed by someone else" in stale.get_json()["message"]
    with app.app_context():
        assert db.session.get(Contact, world["zhang"]).title == "采购总监"


def test_the_360_view_gathers_people_details_timeline_and_module_panels(app, client, world):
    with app.app_context():
        base = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        db.session.add_all([Activity(kind="call", subject=f"电话 {n}", contact_id=world["zhang"],
                                     occurred_at=base + dt.timedelta(hours=n), duration_minutes=5)
                            for n in range(30)])
        db.session.add(Activity(kind="meeting", subject="拜访华润万家", company_id=world["sub"],
                                occurred_at=base + dt.timedelta(days=2)))
        db.session.commit()
    h = auth(client)
    view = client.get(f"/api/v1/crm/customer/company/{world['sub']}/360", headers=h).get_json()["result"]
    assert view["profile"]["name"] == "华润万家"
    assert view["hierarchy"]["ancestors"] == [{"id": world["group"], "name": "华润集团"}]
    assert view["people"] == [{"id": world["zhang"], "name": "张伟", "title": "采购经理", "role": "决策者",
                               "role_en": "Decision maker", "primary": True}]
    timeline = view["timeline"]
    assert timeline["total"] == 32  # 30 calls of its contact, its meeting, the sample module's invoice
    assert [e["title"] for e in timeline["entries"][:2]] == ["拜访华润万家", "电话 29"]
    assert len(timeline["entries"]) == 25
    assert view["activity_counts"] == {"call": 30, "meeting": 1}
    assert [p for p in view["panels"] if p["module"] == "sample"] == [
        {"module": "sample", "title": {"zh": "样例面板", "en": "Sample panel"}, "rows": [["客户 / customer", "华润万家"]]}]
    contact = client.get(f"/api/v1/crm/customer/contact/{world['zhang']}/360", headers=h).get_json()["result"]
    assert contact["phones"][0]["e164"] == "+8613800138000" and contact["companies"][0]["role"] == "决策者"


def test_a_company_360_takes_in_its_whole_tree_and_counts_each_activity_once(app, client, world):
    """Activities on the company, on a subsidiary two levels down and on its people each count once, also one
    that is on both a person and the company; another company's do not count. Ancestors read root first."""
    with app.app_context():
        s = db.session
        deep = Company(name="华润万家华东", parent_id=world["sub"])
        s.add(deep)
        s.flush()
        at = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
        s.add_all([Activity(kind="call", subject="both", contact_id=world["zhang"], company_id=world["sub"],
                            occurred_at=at),
                   Activity(kind="meeting", subject="deep", company_id=deep.id, occurred_at=at + dt.timedelta(hours=1)),
                   Activity(kind="note", subject="person", contact_id=world["zhang"],
                            occurred_at=at + dt.timedelta(hours=2)),
                   Activity(kind="note", subject="elsewhere", company_id=world["other"], occurred_at=at)])
        s.commit()
        deep_id = deep.id
    h = auth(client)
    top = client.get(f"/api/v1/crm/customer/company/{world['group']}/360", headers=h).get_json()["result"]
    assert top["hierarchy"]["ancestors"] == []
    assert [(c["name"], c["depth"]) for c in top["hierarchy"]["children"]] == [("华润万家", 1), ("华润万家华东", 2)]
    assert top["activity_counts"] == {"meeting": 1, "call": 1}  # the group's people are the sub's: not its own
    sub = client.get(f"/api/v1/crm/customer/company/{world['sub']}/360", headers=h).get_json()["result"]
    assert sub["activity_counts"] == {"call": 1, "meeting": 1, "note": 1}
    assert [e["title"] for e in sub["timeline"]["entries"] if e["source"] == "crm"] == ["person", "deep", "both"]
    assert [e["user"] for e in sub["timeline"]["entries"] if e["source"] == "crm"] == [None] * 3
    deep_view = client.get(f"/api/v1/crm/customer/company/{deep_id}/360", headers=h).get_json()["result"]
    assert deep_view["hierarchy"]["ancestors"] == [{"id": world["group"], "name": "华润集团"},
                                                   {"id": world["sub"], "name": "华润万家"}]
    only_calls = client.get(f"/api/v1/crm/customer/company/{world['sub']}/360", query_string={"kind": "call"},
                            headers=h).get_json()["result"]["timeline"]
    assert only_calls["total"] == 1 and [e["title"] for e in only_calls["entries"]] == ["both"]


def test_activity_counts_follow_every_change_to_activities_and_customers(app, client, world):
    """The 360° view's counts by kind stay exact when activities are added, change kind, move to another
    person, are deleted, when two people are merged and when a company goes with its activities."""
    from sqlalchemy import func, select

    from plugins.crm.models import ActivityTally
    from plugins.crm.tally import differences

    h = auth(client)

    def counts(kind, key):
        response = client.get(f"/api/v1/crm/customer/{kind}/{world[key]}/360", headers=h)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["result"]["activity_counts"]

    def add(**fields):
        response = client.post("/api/v1/crm/activity/", json={"subject": "跟进 / follow-up", **fields}, headers=h)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()["id"]

    calls = [add(kind="call", contact_id=world["zhang"]) for _ in range(3)]
    add(kind="meeting", company_id=world["sub"])
    add(kind="note", company_id=world["other"], contact_id=world["lee"])
    assert counts("company", "sub") == {"call": 3, "meeting": 1}
    assert counts("contact", "zhang") == {"call": 3}

    assert client.put(f"/api/v1/crm/activity/{calls[0]}", json={"kind": "email"}, headers=h).status_code == 200
    assert client.put(f"/api/v1/crm/activity/{calls[1]}", json={"contact_id": world["lee"]},
                      headers=h).status_code == 200
    assert client.put(f"/api/v1/crm/activity/{calls[2]}", json={"subject": "只改标题"}, headers=h).status_code == 200
    assert counts("company", "sub") == {"call": 1, "email": 1, "meeting": 1}
    assert counts("company", "other") == {"call": 1, "note": 1}
    assert counts("contact", "lee") == {"call": 1, "note": 1}

    assert client.delete(f"/api/v1/crm/activity/{calls[0]}", headers=h).status_code == 200
    assert counts("company", "sub") == {"call": 1, "meeting": 1}

    merged = client.post("/api/v1/crm/merge/contact", json={"survivor_id": world["zhang"], "loser_id": world["lee"]},
                         headers=h)
    assert merged.status_code == 200, merged.get_data(as_text=True)
    assert counts("contact", "zhang") == {"call": 2, "note": 1}

    with app.app_context():
        db.session.delete(db.session.get(Company, world["other"]))  # its note goes with it
        db.session.commit()
        kept = dict(db.session.execute(select(ActivityTally.kind, func.sum(ActivityTally.n))
                                       .group_by(ActivityTally.kind)).all())
        there = dict(db.session.execute(select(Activity.kind, func.count()).group_by(Activity.kind)).all())
        assert kept == there == {"call": 2, "meeting": 1}
        assert db.session.scalar(select(func.count()).where(ActivityTally.n <= 0)) == 0  # nothing left at zero
        assert differences(db.session) == []  # every count, by company and by person
    assert counts("contact", "zhang") == {"call": 2}
    assert counts("company", "sub") == {"call": 2, "meeting": 1}


def test_wrong_activity_counts_are_found_and_rebuilt_by_a_command(app, client, world):
    """Activities written with the triggers off leave the counts behind: `bigledger crm recount-activities
    --check` lists what is wrong and exits 1; without --check it rebuilds them from the activities."""
    from click.testing import CliRunner
    from sqlalchemy import delete, insert, update

    from bigledger_core.cli import cli
    from plugins.crm.models import ActivityTally
    from plugins.crm.tally import differences

    h = auth(client)
    for kind, owner in (("call", {"contact_id": world["zhang"]}), ("call", {"contact_id": world["zhang"]}),
                        ("meeting", {"company_id": world["sub"]})):
        response = client.post("/api/v1/crm/activity/", json={"subject": "跟进", "kind": kind, **owner}, headers=h)
        assert response.status_code == 201, response.get_data(as_text=True)

    def counts():
        return client.get(f"/api/v1/crm/customer/company/{world['sub']}/360", headers=h).get_json()["result"][
            "activity_counts"]

    def run(*args):
        with app.app_context():
            return CliRunner().invoke(cli, ["crm", "recount-activities", *args], env={"LC_ALL": "en_US.UTF-8"},
                                      catch_exceptions=False)

    assert counts() == {"call": 2, "meeting": 1}
    assert run("--check").stdout.strip() == "Activity counts are right."
    with app.app_context():  # what a restore with triggers off can leave: a count wrong, one lost, one extra
        tally = ActivityTally.__table__
        db.session.execute(update(tally).where(tally.c.kind == "call").values(n=7))
        db.session.execute(delete(tally).where(tally.c.kind == "meeting"))
        db.session.execute(insert(tally).values(company_id=world["sub"], contact_id=0, kind="email", n=4))
        db.session.commit()
    assert counts() == {"call": 7, "email": 4}

    check = run("--check")
    assert check.exit_code == 1
    lines = check.stdout.splitlines()
    assert f"company {world['sub']}, contact 0, email: 4 counted, 0 found" in lines
    assert f"company 0, contact {world['zhang']}, call: 7 counted, 2 found" in lines
    assert f"company {world['sub']}, contact 0, meeting: 0 counted, 1 found" in lines
    assert counts() == {"call": 7, "email": 4}  # a check changes nothing

    fixed = run()
    assert fixed.exit_code == 0 and fixed.stdout.strip() == "3 activity counts were wrong and have been rebuilt."
    assert counts() == {"call": 2, "meeting": 1}
    assert run("--check").exit_code == 0
    with app.app_context():
        assert differences(db.session) == []


def test_the_360_lists_come_in_order_and_its_statements_do_not_grow_with_the_customer(app, client, world):
    """Phones, e-mails and addresses primary first, tags, people: each read once for the whole list, so a
    customer with many of everything costs the same number of statements as one with one of each."""
    from sqlalchemy import event

    from plugins.crm.models import Address, Tag

    h = auth(client)
    url = f"/api/v1/crm/customer/company/{world['sub']}/360"

    def statements():
        seen = []
        with app.app_context():
            engine = db.engine

        def count(*_args):
            seen.append(1)

        event.listen(engine, "before_cursor_execute", count)
        try:
            view = client.get(url, headers=h).get_json()["result"]
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(seen), view

    statements()  # the worker's first request also fills its caches (permissions, built statements)
    few, _ = statements()
    with app.app_context():
        s = db.session
        sub = s.get(Company, world["sub"])
        sub.tags = [Tag(name="重点客户", color="#d9534f"), Tag(name="年框", color="#5cb85c")]
        s.add_all([Address(company=sub, kind="shipping", city="苏州", street="工业园区星湖街1号"),
                   Address(company=sub, kind="office", city="深圳", street="深南大道2号", is_primary=True),
                   Phone(company=sub, kind="office", raw="0755-8888 0000"),
                   Phone(company=sub, kind="fax", raw="0755-8888 0001", is_primary=True),
                   Email(company=sub, address="info@crv.example.com"),
                   Email(company=sub, address="sales@crv.example.com", is_primary=True)])
        people = [Contact(full_name=f"店长{n:02d}") for n in range(20)]
        s.add_all(people)
        s.flush()
        s.add_all([ContactCompany(contact=person, company=sub) for person in people])
        at = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
        s.add_all([Activity(kind="task", subject=f"回访 {n}", contact_id=people[n].id, occurred_at=at)
                   for n in range(20)])
        s.commit()
    many, view = statements()
    assert many == few
    assert [a["street"] for a in view["addresses"]] == ["深南大道2号", "工业园区星湖街1号"]
    assert [(p["raw"], p["primary"]) for p in view["phones"]] == [("0755-8888 0001", True), ("0755-8888 0000", False)]
    assert [e["address"] for e in view["emails"]] == ["sales@crv.example.com", "info@crv.example.com"]
    assert [(t["name"], t["color"]) for t in view["tags"]] == [("重点客户", "#d9534f"), ("年框", "#5cb85c")]
    assert view["people_pages"]["total"] == 21 and view["activity_counts"] == {"task": 20}


def test_the_360_lists_the_leads_a_customer_came_from_and_those_that_share_its_address(app, client, world):
    """Leads converted into the company or a subsidiary, and leads with the contact's e-mail or phone, newest
    first; a sales rep sees only the leads their record rules allow."""
    from plugins.crm.leads.models import Lead

    rep, rep2 = _user_id(app, "rep"), _user_id(app, "rep2")
    at = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with app.app_context():
        db.session.add_all([
            Lead(name="华润集团采购部", company_id=world["group"], status="converted", owner_id=rep, created_at=at),
            Lead(name="华润万家门店", company_id=world["sub"], status="converted", owner_id=rep2,
                 created_at=at + dt.timedelta(days=1)),
            Lead(name="张伟 (展会)", email="zhang.wei@crvanguard.example.com", owner_id=rep,
                 created_at=at + dt.timedelta(days=2)),
            Lead(name="张伟 (电话)", phone_e164="+8613800138000", owner_id=rep2, created_at=at + dt.timedelta(days=3)),
            Lead(name="别人", email="someone@else.example.com", owner_id=rep, created_at=at)])
        db.session.commit()

    def leads(kind, record, user="admin"):
        view = client.get(f"/api/v1/crm/customer/{kind}/{record}/360", headers=auth(client, user)).get_json()
        return [lead["name"] for lead in view["result"]["leads"]]

    assert leads("company", world["group"]) == ["华润万家门店", "华润集团采购部"]
    assert leads("contact", world["zhang"]) == ["张伟 (电话)", "张伟 (展会)"]
    assert leads("company", world["group"], "rep") == ["华润集团采购部"]
    assert leads("contact", world["zhang"], "rep") == ["张伟 (展会)"]


def test_a_company_with_many_people_shows_them_a_page_at_a_time(app, client, world):
    with app.app_context():
        s = db.session
        people = [Contact(full_name=f"员工{n:02d}") for n in range(60)]
        s.add_all(people)
        s.flush()
        s.add_all([ContactCompany(contact=person, company_id=world["other"]) for person in people])
        s.commit()
    h = auth(client)
    url = f"/api/v1/crm/customer/company/{world['other']}/360"
    first = client.get(url, headers=h).get_json()["result"]
    assert len(first["people"]) == 50 and first["people_pages"] == {"page": 1, "per_page": 50, "total": 61}
    assert [p["name"] for p in first["people"][:2]] == ["Mei Ling Lee", "员工00"]  # by name
    second = client.get(url, query_string={"people_page": 2}, headers=h).get_json()["result"]["people"]
    assert len(second) == 11 and not {p["id"] for p in second} & {p["id"] for p in first["people"]}
    login(client, "admin")
    page = client.get(f"/crm/customer/company/{world['other']}?_l_=en").get_data(as_text=True)
    assert 'id="bl-people-pager"' in page and "1–50 of 61 people" in page
    page = client.get(f"/crm/customer/company/{world['other']}?people_page=2&_l_=zh").get_data(as_text=True)
    assert "员工59" in page and "员工00" not in page


def test_the_360_page_in_chinese_and_english(app, client, world):
    login(client, "admin")
    page = client.get(f"/crm/customer/company/{world['sub']}").get_data(as_text=True)
    assert "华润万家" in page and "华润集团" in page and "决策者" in page and "样例面板" in page
    english = client.get(f"/crm/customer/company/{world['sub']}?_l_=en").get_data(as_text=True)
    assert "Decision maker" in english and "Sample panel" in english
    assert client.get("/crm/customer/company/99999").status_code == 404
    assert client.get("/crm/customer/planet/1").status_code == 404


def test_company_and_contact_screens_list_and_add(app, client, world):
    login(client, "admin")
    listing = client.get("/companyview/list/").get_data(as_text=True)
    assert "华润集团" in listing and "Acme Sdn Bhd" in listing
    listing = client.get("/contactview/list/").get_data(as_text=True)
    assert "张伟" in listing and "Mei Ling Lee" in listing


def test_merging_two_contacts_moves_everything_and_keeps_the_loser_for_the_record(app, client, world):
    from plugins.crm.models import AuditEntry

    with app.app_context():
        s = db.session
        twin = Contact(full_name="张伟", title="采购总监", custom={"note": "from fair"})
        s.add(twin)
        s.flush()
        s.add_all([Phone(contact=twin, raw="+86 138-0013-8000"), Email(contact=twin, address="zw@163.example.com"),
                   Activity(kind="call", subject="展会后回访", contact_id=twin.id),
                   ContactCompany(contact_id=twin.id, company_id=world["other"])])
        s.commit()
        twin_id = twin.id
    h = auth(client)
    dups = client.get("/api/v1/crm/duplicates/contact", query_string={"phone": "13800138000"}, headers=h)
    assert {d["id"] for d in dups.get_json()["result"]} == {world["zhang"], twin_id}
    response = client.post("/api/v1/crm/merge/contact", json={
        "survivor_id": world["zhang"], "loser_id": twin_id, "take": {"title": "loser"}}, headers=h)
    assert response.status_code == 200, response.get_data(as_text=True)
    view = client.get(f"/api/v1/crm/customer/contact/{world['zhang']}/360", headers=h).get_json()["result"]
    assert view["profile"]["title"] == "采购总监"
    assert [p["e164"] for p in view["phones"]] == ["+8613800138000"]  # the same number once
    assert {e["address"] for e in view["emails"]} == {"zhang.wei@crvanguard.example.com", "zw@163.example.com"}
    assert {c["name"] for c in view["companies"]} == {"华润万家", "Acme Sdn Bhd"}
    assert "展会后回访" in [e["title"] for e in view["timeline"]["entries"]]
    assert [r["name"] for r in client.get("/api/v1/crm/search", query_string={"q": "zhangwei"},
                                          headers=h).get_json()["result"]] == ["张伟"]  # the loser is hidden
    with app.app_context():
        loser = db.session.get(Contact, twin_id)
        assert loser.merged_into_id == world["zhang"]
        audit = db.session.query(AuditEntry).filter_by(entity="crm_contact", record_id=twin_id, action="merge").one()
        assert audit.changes["values"]["title"] == "采购总监" and audit.changes["merged_into"] == world["zhang"]
    again = client.post("/api/v1/crm/merge/contact", json={"survivor_id": world["zhang"], "loser_id": twin_id},
                        headers=h)
    assert again.status_code == 400 and "merged already" in again.get_json()["message"]


def test_merging_companies_moves_subsidiaries_and_people(app, client, world):
    h = auth(client)
    response = client.post("/api/v1/crm/merge/company", json={"survivor_id": world["other"],
                                                              "loser_id": world["group"]}, headers=h)
    assert response.status_code == 200
    with app.app_context():
        assert db.session.get(Company, world["sub"]).parent_id == world["other"]
        assert db.session.get(Company, world["group"]).merged_into_id == world["other"]
    assert client.post("/api/v1/crm/merge/company", json={"survivor_id": 1}, headers=h).status_code == 400


def test_reps_cannot_merge(app, client, world):
    h = auth(client, "rep")
    response = client.post("/api/v1/crm/merge/contact", json={"survivor_id": world["zhang"],
                                                              "loser_id": world["lee"]}, headers=h)
    assert response.status_code in (401, 403)


def test_every_way_of_writing_a_contact_emits_its_event(app, client, world):
    from bigledger_core.models import OutboxEvent
    from tests.sample_plugin import plugin as sample

    received = []
    original = getattr(sample, "crm_contact_updated", None)
    assert original is not None
    sample.CRM_EVENTS.clear()
    h = auth(client)
    created = client.post("/api/v1/crm/contact/", json={"full_name": "赵敏"}, headers=h).get_json()["id"]
    client.put(f"/api/v1/crm/contact/{created}", json={"title": "经理"}, headers=h)
    client.post("/api/v1/crm/merge/contact", json={"survivor_id": world["zhang"], "loser_id": created}, headers=h)
    received = [(e.name, e.payload.get("id") or e.payload.get("merged_id")) for e in sample.CRM_EVENTS]
    assert received == [("crm_contact_created", created), ("crm_contact_updated", created),
                        ("crm_contact_merged", created)]
    assert sample.CRM_EVENTS[1].payload["changed"] == ["title"]
    with app.app_context():
        # the two contacts of the fixture, then this one created, updated and merged
        assert db.session.query(OutboxEvent).filter(OutboxEvent.name.like("crm_contact_%")).count() == 5


def test_the_timeline_pages_and_filters_by_type(app, client, world):
    with app.app_context():
        base = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
        db.session.add_all([Activity(kind="call" if n % 2 else "email", subject=f"第{n}次联系", contact_id=world["zhang"],
                                     occurred_at=base + dt.timedelta(hours=n)) for n in range(60)])
        db.session.commit()
    h = auth(client)
    url = f"/api/v1/crm/customer/contact/{world['zhang']}/360"
    second = client.get(url, query_string={"page": 2}, headers=h).get_json()["result"]["timeline"]
    assert second["page"] == 2 and second["total"] == 61  # 60 activities and the sample module's entry
    assert [e["title"] for e in second["entries"][:2]] == ["第34次联系", "第33次联系"]
    calls = client.get(url, query_string={"kind": "call"}, headers=h).get_json()["result"]["timeline"]
    assert calls["total"] == 30 and {e["kind"] for e in calls["entries"]} == {"call"}
    login(client, "admin")
    page = client.get(f"/crm/customer/contact/{world['zhang']}?page=2&kind=email").get_data(as_text=True)
    assert "第8次联系" in page and "第9次联系" not in page and 'id="bl-timeline-pager"' in page


def test_one_primary_phone_email_address_and_company_per_record(app, client, world):
    h = auth(client)
    second = client.post("/api/v1/crm/phone/", json={"contact_id": world["zhang"], "kind": "work",
                                                     "raw": "021-6288 1234", "is_primary": True}, headers=h)
    assert second.status_code == 201, second.get_data(as_text=True)
    view = client.get(f"/api/v1/crm/customer/contact/{world['zhang']}/360", headers=h).get_json()["result"]
    assert [(p["raw"], p["primary"]) for p in view["phones"]] == [("021-6288 1234", True), ("138 0013 8000", False)]
    assert view["phones"][0]["e164"] == "+862162881234"
    link = client.post("/api/v1/crm/contact_company/", json={"contact_id": world["zhang"],
                                                             "company_id": world["group"], "is_primary": True},
                       headers=h)
    assert link.status_code == 201
    view = client.get(f"/api/v1/crm/customer/contact/{world['zhang']}/360", headers=h).get_json()["result"]
    assert [(c["name"], c["primary"]) for c in view["companies"]] == [("华润集团", True), ("华润万家", False)]


def test_bad_phones_and_emails_are_refused_in_the_api(app, client, world):
    h = auth(client)
    bad = client.post("/api/v1/crm/phone/", json={"contact_id": world["zhang"], "raw": "call me"}, headers=h)
    assert bad.status_code == 400 and "call me is not a valid phone number" in bad.get_json()["message"]
    bad = client.post("/api/v1/crm/email/", json={"contact_id": world["zhang"], "address": "zw@"}, headers=h)
    assert bad.status_code == 400 and "zw@ is not a valid e-mail address" in bad.get_json()["message"]
    orphan = client.post("/api/v1/crm/phone/", json={"raw": "13800138000"}, headers=h)
    assert orphan.status_code == 400 and "contact or a company" in orphan.get_json()["message"]
    with app.app_context():
        assert db.session.query(Phone).count() == 1


def test_changes_are_in_the_audit_trail_with_who_and_when(app, client, world):
    h = auth(client)
    loaded = client.get(f"/api/v1/crm/contact/{world['zhang']}", headers=h).get_json()["result"]
    client.put(f"/api/v1/crm/contact/{world['zhang']}", json={"title": "副总裁", "version": loaded["version"]},
               headers=h)
    view = client.get(f"/api/v1/crm/customer/contact/{world['zhang']}/360", headers=h).get_json()["result"]
    [entry] = view["history"]
    assert entry["action"] == "update" and entry["user"] == "admin"
    assert entry["changes"] == {"title": ["采购经理", "副总裁"]}
    login(client, "admin")
    page = client.get(f"/crm/customer/contact/{world['zhang']}").get_data(as_text=True)
    assert "采购经理 → 副总裁" in page
