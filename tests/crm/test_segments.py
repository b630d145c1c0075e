"""Segments: every rule type evaluated in SQL, match all/any, Chinese keys, validation naming the rule,
record rules, merged records, live counts, and the screens and API."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import event, select, text

from bigledger_core.db import db, utcnow
from plugins.crm.models import (
    Activity,
    Address,
    Company,
    Contact,
    ContactCompany,
    CustomField,
    Email,
    Segment,
    Tag,
)
from plugins.crm.segments import (
    member_count,
    member_counts,
    members,
    segment_clause,
    validate_definition,
)
from plugins.crm.services import CrmValidationError
from tests.conftest import add_user, api_token, csrf_token, login

UTC = dt.UTC


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def world(app):
    """Contacts and companies with tags, addresses, e-mails, activities and custom fields, owned by
    two reps and a marketer; a merged duplicate of each kind."""
    ids = {name: add_user(app, name, role) for name, role in [
        ("admin", "Admin"), ("rep", "Sales Rep"), ("rep2", "Sales Rep"), ("mkt", "Marketing"),
        ("mkt2", "Marketing")]}
    now = utcnow()
    with app.app_context():
        s = db.session
        s.add_all([
            CustomField(entity="contact", key="wechat", label="微信号", label_en="WeChat ID", type="text"),
            CustomField(entity="contact", key="budget", label="预算", label_en="Budget", type="number"),
            CustomField(entity="contact", key="since", label="合作开始", label_en="Customer since", type="date"),
            CustomField(entity="contact", key="tier", label="等级", label_en="Tier", type="select",
                        options=[{"value": v, "label": v} for v in ("a", "b", "c")]),
            CustomField(entity="contact", key="interests", label="兴趣", label_en="Interests", type="multiselect",
                        options=[{"value": v, "label": v} for v in ("erp", "crm", "hr")]),
            CustomField(entity="contact", key="vip", label="贵宾", label_en="VIP", type="boolean"),
            CustomField(entity="company", key="score", label="评分", label_en="Score", type="number"),
        ])
        vip, fair, key_account = Tag(name="VIP"), Tag(name="展会"), Tag(name="重点客户")
        cold = Tag(name="Cold")
        group = Company(name="华润集团", industry="零售", region="华南", status="partner", owner_id=ids["rep"],
                        created_at=_at("2023-05-01T00:00:00"))
        sub = Company(name="华润万家", industry="零售", region="华南", status="customer", employees=5000,
                      parent=group, owner_id=ids["rep"], custom={"score": 90}, tags=[key_account],
                      created_at=_at("2024-02-01T00:00:00"))
        acme = Company(name="Acme Sdn Bhd", industry="Manufacturing", region="东南亚", status="prospect",
                       employees=50, owner_id=ids["rep2"], custom={"score": 40},
                       created_at=_at("2025-07-01T00:00:00"))
        zhang = Contact(full_name="张伟", title="采购经理", owner_id=ids["rep"], tags=[vip, fair],
                        created_at=_at("2025-06-01T10:00:00"),
                        custom={"wechat": "zhangwei88", "budget": 120000, "since": "2024-03-01", "tier": "a",
                                "interests": ["erp", "crm"], "vip": True})
        lee = Contact(family_name="Lee", given_name="Mei Ling", name_en="Mei Ling Lee", title="Purchasing Director",
                      owner_id=ids["rep2"], tags=[vip], created_at=_at("2025-06-02T23:30:00"),
                      custom={"budget": 5000, "since": "2025-01-15", "tier": "b", "interests": ["hr"],
                              "vip": False})
        wang = Contact(full_name="王芳", owner_id=ids["mkt"], created_at=_at("2024-01-10T08:00:00"))
        s.add_all([group, sub, acme, zhang, lee, wang, cold])
        s.flush()
        twin = Contact(full_name="张伟", title="采购经理", owner_id=ids["rep"], tags=[vip], merged_into_id=zhang.id,
                       custom={"vip": True, "tier": "a"}, created_at=_at("2025-06-01T10:00:00"))
        dup = Company(name="Acme Duplicate", status="prospect", employees=50, owner_id=ids["rep2"],
                      merged_into_id=acme.id, tags=[key_account], created_at=_at("2025-07-01T00:00:00"))
        s.add_all([twin, dup])
        s.flush()
        s.add_all([
            ContactCompany(contact=zhang, company=sub), ContactCompany(contact=lee, company=acme),
            ContactCompany(contact=twin, company=sub),
            Email(contact=zhang, address="Zhang.Wei@CRVanguard.example.com"),
            Email(contact=lee, address="meiling@acme.example.com"),
            Email(contact=wang, address="wangfang@163.example.com"),
            Email(contact=twin, address="zw@crvanguard.example.com"),
            Address(contact=zhang, city="深圳", province="广东"),
            Address(contact=lee, city="Kuala Lumpur", province="Wilayah Persekutuan"),
            Address(contact=wang, street="某路1号"),
            Address(company=sub, city="深圳", province="广东"),
            Address(company=group, city="北京", province="北京"),
            Address(company=acme, city="Kuala Lumpur"),
            Address(company=dup, city="Kuala Lumpur"),
            Activity(kind="call", subject="回访", contact_id=zhang.id, occurred_at=now - dt.timedelta(days=5)),
            Activity(kind="call", subject="Follow-up", contact_id=lee.id, occurred_at=now - dt.timedelta(days=200)),
            Activity(kind="call", subject="回访", contact_id=twin.id, occurred_at=now - dt.timedelta(days=1)),
            Activity(kind="meeting", subject="拜访", company_id=sub.id, occurred_at=now - dt.timedelta(days=10)),
            Activity(kind="meeting", subject="Visit", company_id=acme.id, occurred_at=now - dt.timedelta(days=400)),
        ])
        s.commit()
        ids.update(group=group.id, sub=sub.id, acme=acme.id, dup=dup.id, zhang=zhang.id, lee=lee.id, wang=wang.id,
                   twin=twin.id, cold=cold.id)
    return ids


def _user(app, username: str):
    return app.appbuilder.sm.find_user(username=username)


def _names(records) -> set[str]:
    return {r.full_name if isinstance(r, Contact) else r.name for r in records}


def evaluate(app, entity: str, definition: dict, username: str = "admin") -> set[str]:
    """Names of the segment's members as `username` sees them; checks that the count agrees."""
    with app.app_context():
        user = _user(app, username)
        segment = Segment(name="probe", entity=entity, definition=definition)
        found = members(db.session, segment, user, per_page=500)
        assert member_count(db.session, segment, user) == len(found)
        return _names(found)


def rule(field: str, op: str, value=None) -> dict:
    body = {"field": field, "op": op}
    if value is not None:
        body["value"] = value
    return {"match": "all", "rules": [body]}


def check_all(app, entity: str, cases) -> None:
    failures = []
    for definition, expected in cases:
        got = evaluate(app, entity, definition)
        if got != set(expected):
            failures.append(f"{definition['rules']}: expected {sorted(expected)}, got {sorted(got)}")
    assert not failures, "\n".join(failures)


LEE, ZHANG, WANG = "Mei Ling Lee", "张伟", "王芳"
CR, CRV, ACME = "华润集团", "华润万家", "Acme Sdn Bhd"


def test_standard_contact_fields(app, world):
    check_all(app, "contact", [
        (rule("full_name", "eq", "张伟"), {ZHANG}),
        (rule("full_name", "contains", "LING"), {LEE}),
        (rule("full_name", "starts_with", "mei"), {LEE}),
        (rule("full_name", "contains", "%"), set()),
        (rule("title", "ne", "采购经理"), {LEE, WANG}),
        (rule("title", "empty"), {WANG}),
        (rule("title", "not_empty"), {ZHANG, LEE}),
        (rule("title", "in", ["采购经理", "Purchasing Director"]), {ZHANG, LEE}),
        (rule("title", "in", "采购经理，Purchasing Director"), {ZHANG, LEE}),
        (rule("name_en", "contains", "lee"), {LEE}),
        (rule("owner_id", "eq", world["rep"]), {ZHANG}),
        (rule("owner_id", "in", [world["rep2"], world["mkt"]]), {LEE, WANG}),
        (rule("owner_id", "ne", world["rep"]), {LEE, WANG}),
        (rule("team_id", "empty"), {ZHANG, LEE, WANG}),
        (rule("team_id", "not_empty"), set()),
        (rule("created_at", "eq", "2025-06-02"), {LEE}),
        (rule("created_at", "ne", "2025-06-02"), {ZHANG, WANG}),
        (rule("created_at", "gte", "2025-06-01"), {ZHANG, LEE}),
        (rule("created_at", "gt", "2025-06-01"), {LEE}),
        (rule("created_at", "lt", "2025-06-01"), {WANG}),
        (rule("created_at", "lte", "2025/6/1"), {ZHANG, WANG}),
        (rule("created_at", "gte", "2025-06-02T23:00:00"), {LEE}),
        (rule("created_at", "lt", "2025-06-01T18:30:00+08:00"), {ZHANG, WANG}),  # 10:30 UTC; 张伟 at 10:00
        (rule("created_at", "lt", "2025-06-01T17:30:00+08:00"), {WANG}),
        (rule("created_at", "gt", "2025-06-01T17:30:00+08:00"), {ZHANG, LEE}),
        (rule("company", "eq", "华润万家"), {ZHANG}),
        (rule("company", "contains", "acme"), {LEE}),
        (rule("company", "starts_with", "华润"), {ZHANG}),
        (rule("company", "in", ["华润万家", "Acme Sdn Bhd"]), {ZHANG, LEE}),
        (rule("company", "ne", "华润万家"), {LEE, WANG}),
        (rule("company", "empty"), {WANG}),
        (rule("company", "not_empty"), {ZHANG, LEE}),
        (rule("city", "eq", "深圳"), {ZHANG}),
        (rule("city", "empty"), {WANG}),
        (rule("city", "not_empty"), {ZHANG, LEE}),
        (rule("province", "in", ["广东", "北京"]), {ZHANG}),
        (rule("province", "ne", "广东"), {LEE, WANG}),
        (rule("email_domain", "eq", "crvanguard.example.com"), {ZHANG}),
        (rule("email_domain", "eq", "@ACME.example.com"), {LEE}),
        (rule("email_domain", "eq", "example.com"), set()),
        (rule("email_domain", "contains", "example"), {ZHANG, LEE, WANG}),
        (rule("email_domain", "in", ["163.example.com", "acme.example.com"]), {LEE, WANG}),
        (rule("email_domain", "ne", "163.example.com"), {ZHANG, LEE}),
        (rule("email_domain", "empty"), set()),
        (rule("email_domain", "not_empty"), {ZHANG, LEE, WANG}),
    ])


def test_standard_company_fields(app, world):
    check_all(app, "company", [
        (rule("name", "eq", "华润万家"), {CRV}),
        (rule("name", "starts_with", "华润"), {CR, CRV}),
        (rule("name", "contains", "sdn"), {ACME}),
        (rule("industry", "eq", "零售"), {CR, CRV}),
        (rule("industry", "contains", "manu"), {ACME}),
        (rule("region", "ne", "华南"), {ACME}),
        (rule("region", "in", ["东南亚"]), {ACME}),
        (rule("status", "eq", "customer"), {CRV}),
        (rule("status", "ne", "prospect"), {CR, CRV}),
        (rule("status", "in", ["customer", "partner"]), {CR, CRV}),
        (rule("employees", "gt", 100), {CRV}),
        (rule("employees", "gte", 50), {CRV, ACME}),
        (rule("employees", "lt", "5,000"), {ACME}),
        (rule("employees", "lte", 50), {ACME}),
        (rule("employees", "eq", 5000), {CRV}),
        (rule("employees", "ne", 50), {CR, CRV}),
        (rule("employees", "in", [50, 5000]), {CRV, ACME}),
        (rule("employees", "empty"), {CR}),
        (rule("employees", "not_empty"), {CRV, ACME}),
        (rule("owner_id", "eq", world["rep2"]), {ACME}),
        (rule("parent_id", "eq", world["group"]), {CRV}),
        (rule("parent_id", "empty"), {CR, ACME}),
        (rule("parent_id", "not_empty"), {CRV}),
        (rule("created_at", "gte", "2024-02-01"), {CRV, ACME}),
        (rule("created_at", "lt", "2024-01-01"), {CR}),
        (rule("city", "eq", "Kuala Lumpur"), {ACME}),
        (rule("city", "in", ["北京", "深圳"]), {CR, CRV}),
        (rule("province", "eq", "广东"), {CRV}),
        (rule("province", "empty"), {ACME}),
    ])


def test_tags_and_last_activity(app, world):
    check_all(app, "contact", [
        (rule("tag", "has", "VIP"), {ZHANG, LEE}),
        (rule("tag", "has_not", "VIP"), {WANG}),
        (rule("tag", "has", "展会"), {ZHANG}),
        (rule("tag", "has", "Cold"), set()),
        (rule("last_activity", "within_days", 30), {ZHANG}),
        (rule("last_activity", "within_days", "365"), {ZHANG, LEE}),
        (rule("last_activity", "not_within_days", 30), {LEE, WANG}),
        (rule("last_activity", "not_within_days", 365), {WANG}),
    ])
    check_all(app, "company", [
        (rule("tag", "has", "重点客户"), {CRV}),
        (rule("tag", "has_not", "重点客户"), {CR, ACME}),
        (rule("last_activity", "within_days", 30), {CRV}),
        (rule("last_activity", "within_days", 500), {CRV, ACME}),
        (rule("last_activity", "not_within_days", 30), {CR, ACME}),
    ])


def test_custom_fields_of_each_type(app, world):
    check_all(app, "contact", [
        (rule("custom:wechat", "eq", "zhangwei88"), {ZHANG}),
        (rule("custom:wechat", "ne", "zhangwei88"), {LEE, WANG}),
        (rule("custom:wechat", "contains", "WEI"), {ZHANG}),
        (rule("custom:wechat", "empty"), {LEE, WANG}),
        (rule("custom:wechat", "not_empty"), {ZHANG}),
        (rule("custom:budget", "gt", 10000), {ZHANG}),
        (rule("custom:budget", "gte", 5000), {ZHANG, LEE}),
        (rule("custom:budget", "lt", "10000"), {LEE}),
        (rule("custom:budget", "lte", 120000), {ZHANG, LEE}),
        (rule("custom:budget", "eq", 5000), {LEE}),
        (rule("custom:budget", "ne", 5000), {ZHANG, WANG}),
        (rule("custom:since", "before", "2025-01-01"), {ZHANG}),
        (rule("custom:since", "after", "2024-12-31"), {LEE}),
        (rule("custom:since", "on", "2025/01/15"), {LEE}),
        (rule("custom:tier", "eq", "a"), {ZHANG}),
        (rule("custom:tier", "ne", "a"), {LEE, WANG}),
        (rule("custom:tier", "in", ["a", "b"]), {ZHANG, LEE}),
        (rule("custom:interests", "contains", "erp"), {ZHANG}),
        (rule("custom:interests", "contains", "hr"), {LEE}),
        (rule("custom:interests", "contains", ["erp", "crm"]), {ZHANG}),
        (rule("custom:interests", "contains", ["erp", "hr"]), set()),
        (rule("custom:vip", "is_true"), {ZHANG}),
        (rule("custom:vip", "is_false"), {LEE, WANG}),
    ])
    check_all(app, "company", [
        (rule("custom:score", "gt", 50), {CRV}),
        (rule("custom:score", "lte", 40), {ACME}),
    ])


def test_a_custom_value_of_another_type_is_skipped_not_an_error(app, world):
    """A field whose type changed keeps old values; number and boolean rules pass over them."""
    with app.app_context():
        db.session.add(Contact(full_name="赵强", owner_id=world["rep"], custom={"budget": "lots", "vip": "yes"}))
        db.session.commit()
    assert evaluate(app, "contact", rule("custom:budget", "gt", 0)) == {ZHANG, LEE}
    assert evaluate(app, "contact", rule("custom:budget", "ne", 5000)) == {ZHANG, WANG, "赵强"}
    assert evaluate(app, "contact", rule("custom:vip", "is_true")) == {ZHANG}


def test_match_all_and_any(app, world):
    both = [{"field": "tag", "op": "has", "value": "VIP"},
            {"field": "last_activity", "op": "within_days", "value": 30}]
    assert evaluate(app, "contact", {"match": "all", "rules": both}) == {ZHANG}
    assert evaluate(app, "contact", {"match": "any", "rules": both}) == {ZHANG, LEE}
    assert evaluate(app, "contact", {"rules": both}) == {ZHANG}  # all unless told otherwise
    either = [{"field": "custom:tier", "op": "eq", "value": "b"}, {"field": "company", "op": "empty"}]
    assert evaluate(app, "contact", {"match": "any", "rules": either}) == {LEE, WANG}
    assert evaluate(app, "contact", {"match": "all", "rules": either}) == set()


def test_chinese_keys_are_synonyms(app, world):
    written = {"匹配": "任一", "条件": [{"字段": "tag", "运算": "has", "值": "展会"},
                                       {"字段": "custom:tier", "运算": "eq", "值": "b"}]}
    assert evaluate(app, "contact", written) == {ZHANG, LEE}
    assert evaluate(app, "contact", {**written, "匹配": "全部"}) == set()
    with app.app_context():
        assert validate_definition(db.session, "contact", written) == {"match": "any", "rules": [
            {"field": "tag", "op": "has", "value": "展会"}, {"field": "custom:tier", "op": "eq", "value": "b"}]}
        mixed = {"match": "全部", "rules": [{"字段": "title", "op": "empty", "值": None}]}
        assert validate_definition(db.session, "contact", mixed) == {
            "match": "all", "rules": [{"field": "title", "op": "empty"}]}


def _problems(app, entity: str, definition, language: str = "en") -> dict[str, str]:
    with app.test_request_context(headers={"Accept-Language": language}):
        with pytest.raises(CrmValidationError) as info:
            validate_definition(db.session, entity, definition)
        return {p.field: p.message for p in info.value.problems}


def test_invalid_definitions_name_each_bad_rule(app, world):
    problems = _problems(app, "contact", {"match": "all", "rules": [
        {"field": "title", "op": "eq", "value": "经理"},                  # fine
        {"field": "salary", "op": "eq", "value": 1},                     # unknown field
        {"field": "full_name", "op": "gt", "value": "a"},                # bad op for the type
        {"field": "custom:budget", "op": "contains", "value": "1"},      # bad op for the custom type
        {"field": "custom:budget", "op": "gt", "value": "many"},         # bad value
        {"field": "custom:colour", "op": "eq", "value": "red"},          # unknown custom field
        {"field": "custom:tier", "op": "eq", "value": "z"},              # not a choice
        {"field": "custom:since", "op": "before", "value": "2025-13-01"},
        {"field": "tag", "op": "has", "value": "Gold"},                  # no such tag
        {"field": "last_activity", "op": "within_days", "value": 0},
        {"field": "created_at", "op": "eq", "value": "yesterday"},
        {"field": "owner_id", "op": "eq", "value": "abc"},
        {"field": "title", "op": "in", "value": []},
        {"field": "title", "op": "eq", "vale": "x"},                     # a misspelt key
        {"field": "employees", "op": "gt", "value": 5},                  # a company field
        "title = 经理",
        {"field": "tag", "value": "VIP"},
        {"field": "custom:wechat", "op": "eq"},
    ]})
    assert problems == {
        "rules[1].field": "salary is not a field of this record type",
        "rules[2].op": "gt is not an operator of full_name (use eq, ne, contains, starts_with, in, empty, "
                       "not_empty)",
        "rules[3].op": "contains is not an operator of custom:budget (use eq, ne, gt, gte, lt, lte)",
        "rules[4].value": "many is not a number",
        "rules[5].field": "custom:colour: unknown custom field",
        "rules[6].value": "z is not one of the choices (a, b, c)",
        "rules[7].value": "2025-13-01 is not a date (YYYY-MM-DD)",
        "rules[8].value": "there is no tag named Gold",
        "rules[9].value": "give a whole number of days from 1 to 36500",
        "rules[10].value": "yesterday is not a date (YYYY-MM-DD) or a date and time",
        "rules[11].value": "abc is not an id",
        "rules[12].value": "give a list of values",
        "rules[13].vale": "unknown key (use field, op and value)",
        "rules[14].field": "employees is not a field of this record type",
        "rules[15]": 'must be an object such as {"field": "title", "op": "eq", "value": "经理"}',
        "rules[16].op": "None is not an operator of tag (use has, has_not)",
        "rules[17].value": "give some text",
    }
    company = _problems(app, "company", {"匹配": "某些", "条件": [
        {"字段": "status", "运算": "eq", "值": "lost"}, {"字段": "employees", "运算": "contains", "值": 5},
        {"字段": "custom:score", "运算": "gt", "值": True}]})
    assert company == {"match": "must be all or any (全部 or 任一)",
                       "rules[0].value": "lost is not one of the choices (prospect, customer, partner, inactive)",
                       "rules[1].op": "contains is not an operator of employees (use eq, ne, gt, gte, lt, lte, in, "
                                      "empty, not_empty)",
                       "rules[2].value": "True is not a number"}
    assert _problems(app, "contact", {"rules": [{"field": "tag", "op": "has", "value": "Gold"}]}, "zh") == {
        "rules[0].value": "没有名为 Gold 的标签"}
    assert _problems(app, "contact", {"match": "all", "rules": []}) == {
        "rules": "give a list of at least one rule"}
    assert _problems(app, "contact", ["title"]) == {
        "definition": 'must be an object such as {"match": "all", "rules": [...]}'}
    assert _problems(app, "lead", {"rules": [{"field": "title", "op": "empty"}]}) == {
        "entity": "must be contact or company"}


def test_a_deleted_tag_or_custom_field_after_saving(app, world):
    """A tag deleted later matches nothing; a deleted custom field makes the segment report its problem."""
    with app.app_context():
        s = db.session
        cold = Segment(name="冷客户", entity="contact",
                       definition=validate_definition(s, "contact", rule("tag", "has", "Cold")))
        not_cold = Segment(name="非冷客户", entity="contact", definition=rule("tag", "has_not", "Cold"))
        rich = Segment(name="大预算", entity="contact", definition=rule("custom:budget", "gt", 1000))
        s.add_all([cold, not_cold, rich])
        s.flush()
        s.delete(s.get(Tag, world["cold"]))
        s.query(CustomField).filter_by(key="budget").delete()
        s.commit()
        admin = _user(app, "admin")
        assert member_count(s, cold, admin) == 0
        assert member_count(s, not_cold, admin) == 3
        with pytest.raises(CrmValidationError) as info:
            member_count(s, rich, admin)
        assert [p.field for p in info.value.problems] == ["rules[0].field"]
        assert member_counts(s, [cold, not_cold, rich], admin) == {cold.id: 0, not_cold.id: 3, rich.id: None}


def test_record_rules_and_merged_records(app, world):
    vip = rule("tag", "has", "VIP")
    assert evaluate(app, "contact", vip, "admin") == {ZHANG, LEE}
    assert evaluate(app, "contact", vip, "rep") == {ZHANG}
    assert evaluate(app, "contact", vip, "rep2") == {LEE}
    assert evaluate(app, "contact", vip, "mkt") == set()
    everyone = rule("email_domain", "not_empty")
    assert evaluate(app, "contact", everyone, "mkt") == {WANG}
    assert evaluate(app, "company", rule("city", "eq", "Kuala Lumpur"), "rep2") == {ACME}
    assert evaluate(app, "company", rule("city", "eq", "Kuala Lumpur"), "rep") == set()
    with app.app_context():
        admin = _user(app, "admin")
        # the merged twin is a VIP named 张伟 with a recent call: it is never a member
        for definition in (vip, rule("full_name", "eq", "张伟"), rule("last_activity", "within_days", 3),
                           rule("custom:vip", "is_true"), rule("email_domain", "eq", "crvanguard.example.com")):
            found = members(db.session, Segment(entity="contact", definition=definition), admin, per_page=500)
            assert world["twin"] not in {r.id for r in found}
        dup = members(db.session, Segment(entity="company", definition=rule("tag", "has", "重点客户")), admin)
        assert [c.id for c in dup] == [world["sub"]]


def test_count_matches_the_members_listed_page_by_page_without_n_plus_one(app, world):
    with app.app_context():
        s = db.session
        admin = _user(app, "admin")
        segment = Segment(name="有邮箱", entity="contact", definition=rule("email_domain", "contains", "example"))
        pages = [members(s, segment, admin, page=n, per_page=1) for n in (1, 2, 3, 4)]
        assert [len(p) for p in pages] == [1, 1, 1, 0]
        listed = [r.full_name for page in pages for r in page]
        assert listed == sorted(listed) and len(set(listed)) == 3 == member_count(s, segment, admin)

        statements: list[str] = []

        def record(_conn, _cursor, statement, *_args):
            if "crm_contact" in statement or "crm_company" in statement:
                statements.append(statement)

        segments = [Segment(id=n, name=f"s{n}", entity=e, definition=d) for n, (e, d) in enumerate([
            ("contact", {"match": "any", "rules": [rule("tag", "has", "VIP")["rules"][0],
                                                    rule("custom:interests", "contains", "erp")["rules"][0],
                                                    rule("company", "contains", "华润")["rules"][0]]}),
            ("contact", rule("last_activity", "not_within_days", 30)),
            ("company", rule("city", "eq", "深圳")),
        ], start=1)]
        rep = _user(app, "rep")
        s.execute(text("SELECT 1"))  # the connection is open before counting
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", record)
        try:
            counts = member_counts(s, segments, admin)
            assert len(statements) == 1
            statements.clear()
            assert member_count(s, segments[0], rep) == 1
            assert len(statements) == 1
            statements.clear()
            found = members(s, segments[1], admin)
            _ = [(r.full_name, r.title, r.custom) for r in found]
            assert len(statements) == 1
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert counts == {1: 2, 2: 2, 3: 1}
        assert _names(found) == {LEE, WANG}


def test_the_clause_composes_with_other_queries(app, world):
    with app.app_context():
        clause = segment_clause(db.session, "company", rule("status", "in", ["customer", "partner"]))
        names = db.session.scalars(select(Company.name).where(clause, Company.merged_into_id.is_(None))
                                   .order_by(Company.name)).all()
        assert names == sorted([CR, CRV])


# -- screens and API -----------------------------------------------------------------------------------

@pytest.fixture
def segment_app(app):
    """The app, whose CRM module registers the segment screens and API."""
    return app


def auth(client, username: str = "admin") -> dict:
    return {"Authorization": f"Bearer {api_token(client, username)}", "Accept-Language": "en"}


def test_segments_through_the_api(segment_app, client, world):
    h = auth(client, "mkt")
    bad = client.post("/api/v1/crm/segment/", json={"name": "坏的", "entity": "contact", "definition": {
        "rules": [{"field": "title", "op": "gt", "value": 1}, {"field": "wechat", "op": "eq", "value": "x"}]}},
        headers=h)
    assert bad.status_code == 400
    message = bad.get_json()["message"]
    assert "rules[0].op: gt is not an operator of title" in message
    assert "rules[1].field: wechat is not a field of this record type" in message
    created = client.post("/api/v1/crm/segment/", json={"name": "有邮箱的联系人", "entity": "contact", "definition": {
        "匹配": "全部", "条件": [{"字段": "email_domain", "运算": "contains", "值": "example"}]}}, headers=h)
    assert created.status_code == 201, created.get_data(as_text=True)
    pk = created.get_json()["id"]
    shown = client.get(f"/api/v1/crm/segment/{pk}", headers=h).get_json()["result"]
    assert shown["definition"] == {"match": "all", "rules": [
        {"field": "email_domain", "op": "contains", "value": "example"}]}
    assert shown["owner_id"] == world["mkt"]

    mine = client.get(f"/api/v1/crm/segment_members/{pk}", headers=h).get_json()
    assert mine == {"count": 1, "page": 1, "per_page": 50, "result": [{"id": world["wang"], "name": WANG}]}
    admin = auth(client, "admin")
    everything = client.get(f"/api/v1/crm/segment_members/{pk}", headers=admin).get_json()
    assert everything["count"] == 3 == len(everything["result"])
    second = client.get(f"/api/v1/crm/segment_members/{pk}", query_string={"page": 2, "per_page": 2},
                        headers=admin).get_json()
    assert (second["count"], second["page"], second["per_page"], len(second["result"])) == (3, 2, 2, 1)

    # another marketer neither sees the segment nor its members; reps have no segments at all
    other = auth(client, "mkt2")
    assert client.get(f"/api/v1/crm/segment_members/{pk}", headers=other).status_code == 404
    assert client.get(f"/api/v1/crm/segment/{pk}", headers=other).status_code == 404
    # a sales rep may use segments, but not see a marketer's one
    assert client.get(f"/api/v1/crm/segment_members/{pk}", headers=auth(client, "rep")).status_code == 404
    assert client.get("/api/v1/crm/segment_members/99999", headers=admin).status_code == 404

    moved = client.put(f"/api/v1/crm/segment/{pk}", json={"entity": "company"}, headers=h)
    assert moved.status_code == 400
    assert "rules[0].field: email_domain is not a field of this record type" in moved.get_json()["message"]
    renamed = client.put(f"/api/v1/crm/segment/{pk}", json={"name": "邮箱", "definition": {
        "rules": [{"field": "custom:vip", "op": "is_false"}]}}, headers=h)
    assert renamed.status_code == 200, renamed.get_data(as_text=True)
    assert client.get(f"/api/v1/crm/segment_members/{pk}", headers=admin).get_json()["count"] == 2


def test_a_broken_segment_reports_its_problem(segment_app, client, world):
    with segment_app.app_context():
        segment = Segment(name="大预算", entity="contact", definition=rule("custom:budget", "gt", 1000))
        db.session.add(segment)
        db.session.commit()
        pk = segment.id
        db.session.query(CustomField).filter_by(key="budget").delete()
        db.session.commit()
    response = client.get(f"/api/v1/crm/segment_members/{pk}", headers=auth(client))
    assert response.status_code == 400
    assert "rules[0].field: custom:budget: unknown custom field" in response.get_json()["message"]
    login(client, "admin")
    listing = client.get("/segmentview/list/?_l_=en")
    assert listing.status_code == 200 and "大预算" in listing.get_data(as_text=True)
    page = client.get(f"/crm/segment/{pk}/members?_l_=en").get_data(as_text=True)
    assert 'id="bl-segment-error"' in page and "unknown custom field" in page
    assert "/members/export/" not in page  # no export of a segment that cannot be evaluated
    export = client.get(f"/crm/segment/{pk}/members/export/csv")
    assert export.status_code == 302 and export.headers["Location"].endswith(f"/crm/segment/{pk}/members")


def test_segment_screens(segment_app, client, world):
    login(client, "admin")
    token = csrf_token(client, "/segmentview/add")
    added = client.post("/segmentview/add", data={
        "csrf_token": token, "name": "贵宾", "entity": "contact",
        "definition": '{"匹配": "任一", "条件": [{"字段": "tag", "运算": "has", "值": "VIP"}]}'},
        follow_redirects=True)
    assert added.status_code == 200
    with segment_app.app_context():
        segment = db.session.query(Segment).filter_by(name="贵宾").one()
        assert segment.definition == {"match": "any", "rules": [{"field": "tag", "op": "has", "value": "VIP"}]}
        assert segment.owner_id == world["admin"]
        pk = segment.id

    not_json = client.post("/segmentview/add?_l_=en", data={
        "csrf_token": token, "name": "坏", "entity": "contact", "definition": '{"rules": ['})
    assert "This is not valid JSON (line 1, column" in not_json.get_data(as_text=True)
    bad_rule = client.post("/segmentview/add?_l_=en", data={
        "csrf_token": token, "name": "坏", "entity": "company",
        "definition": '{"rules": [{"field": "full_name", "op": "eq", "value": "x"}]}'}, follow_redirects=True)
    assert "rules[0].field: full_name is not a field of this record type" in bad_rule.get_data(as_text=True)
    with segment_app.app_context():
        assert db.session.query(Segment).filter_by(name="坏").count() == 0

    listing = client.get("/segmentview/list/").get_data(as_text=True)
    match = re.search(rf'<a href="/crm/segment/{pk}/members" class="bl-segment-count">(\d+)</a>', listing)
    assert match and match.group(1) == "2", listing[-3000:]

    edit = client.get(f"/segmentview/edit/{pk}").get_data(as_text=True)
    assert "&#34;match&#34;: &#34;any&#34;" in edit or "&quot;match&quot;: &quot;any&quot;" in edit

    page = client.get(f"/crm/segment/{pk}/members").get_data(as_text=True)
    assert 'id="bl-segment-members"' in page and ZHANG in page and LEE in page
    assert re.search(r'class="bl-count">2<', page)
    assert client.get("/crm/segment/99999/members").status_code == 404
    with segment_app.app_context():
        shenzhen = Segment(name="深圳公司", entity="company", definition=rule("city", "eq", "深圳"))
        db.session.add(shenzhen)
        db.session.commit()
        shenzhen = shenzhen.id
    page = client.get(f"/crm/segment/{shenzhen}/members").get_data(as_text=True)
    assert f'href="/crm/customer/company/{world["sub"]}">华润万家</a>' in page and "零售" in page
    assert re.search(r'class="bl-count">1<', page)

    client.get("/logout/")
    login(client, "mkt")
    assert client.get(f"/crm/segment/{pk}/members").status_code == 404  # the admin's segment
    token = csrf_token(client, "/segmentview/add")
    client.post("/segmentview/add", data={"csrf_token": token, "name": "我的贵宾", "entity": "contact",
                                          "definition": '{"rules": [{"field": "email_domain", "op": "not_empty"}]}'})
    with segment_app.app_context():
        mine = db.session.query(Segment).filter_by(name="我的贵宾").one().id
    page = client.get(f"/crm/segment/{mine}/members").get_data(as_text=True)
    assert WANG in page and ZHANG not in page and re.search(r'class="bl-count">1<', page)
    listing = client.get("/segmentview/list/").get_data(as_text=True)
    assert "我的贵宾" in listing and f"/crm/segment/{pk}/members" not in listing


def test_a_segment_exports_its_members_as_csv_and_excel_in_the_import_format(segment_app, client, world, tmp_path):
    """A segment's members page exports every member the user may see (not just the page shown), as CSV or
    Excel with the contacts' details, in a file the importer reads back."""
    import csv
    import io

    from openpyxl import load_workbook

    from plugins.crm.importer import import_records

    with segment_app.app_context():
        vip = Segment(name="贵宾", entity="contact", definition=rule("tag", "has", "VIP"), owner_id=world["admin"])
        everyone = Segment(name="有邮箱", entity="contact", definition=rule("email_domain", "not_empty"),
                           owner_id=world["mkt"])
        db.session.add_all([vip, everyone])
        db.session.commit()
        vip, everyone = vip.id, everyone.id
    login(client, "admin")
    page = client.get(f"/crm/segment/{vip}/members?per_page=1").get_data(as_text=True)
    assert f'href="/crm/segment/{vip}/members/export/csv"' in page  # the buttons, on a page showing one member

    response = client.get(f"/crm/segment/{vip}/members/export/csv?_l_=en")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert f"segment-{vip}-" in response.headers["Content-Disposition"]
    assert response.data.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM, for Excel
    rows = list(csv.DictReader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert [row["Full name"] for row in rows] == sorted([LEE, ZHANG])  # the members page's order
    assert all(row["Tags"] and "VIP" in row["Tags"] for row in rows)

    workbook = client.get(f"/crm/segment/{vip}/members/export/xlsx?_l_=en")
    assert workbook.status_code == 200
    sheet = list(load_workbook(io.BytesIO(workbook.data), read_only=True).active.iter_rows(values_only=True))
    name = sheet[0].index("Full name")
    assert [line[name] for line in sheet[1:]] == sorted([LEE, ZHANG])

    exported = tmp_path / "vip.csv"
    exported.write_bytes(response.data)
    with segment_app.app_context():  # the file imports back onto the same people
        again = import_records(db.session, "contact", exported, dry_run=True)
        assert (again.created, again.updated, again.rejected) == (0, 2, 0), again.errors

    assert client.get(f"/crm/segment/{vip}/members/export/pdf").status_code == 404
    client.get("/logout/")
    login(client, "mkt")
    assert client.get(f"/crm/segment/{vip}/members/export/csv").status_code == 404  # the admin's segment
    mine = client.get(f"/crm/segment/{everyone}/members/export/csv?_l_=en")
    names = [row["Full name"] for row in csv.DictReader(io.StringIO(mine.data.decode("utf-8-sig")))]
    assert names == [WANG]  # only the people the marketer may see


def test_the_segment_form_and_api_list_every_field_rules_may_use_with_those_modules_add(segment_app, client, world):
    login(client, "mkt")
    for language, spent, source, vip in (("en", "Spent in stores in the last N days", "POS bridge", "VIP"),
                                         ("zh", "最近 N 天门店消费金额", "销售终端桥接", "贵宾")):
        client.get(f"/lang/{language}")
        form = client.get("/segmentview/add").get_data(as_text=True)
        contacts = form[form.index("data-entity='contact'"):form.index("data-entity='company'")]
        row = contacts[contacts.index("data-field='pos_spent'"):]
        row = row[:row.index("</tr>")]
        assert spent in row and source in row and "gt" in row
        vip_row = contacts[contacts.index("data-field='custom:vip'"):]
        assert vip in vip_row[:vip_row.index("</tr>")]
        companies = form[form.index("data-entity='company'"):]
        assert "data-field='custom:score'" in companies and "data-field='pos_spent'" not in companies
    h = auth(client, "mkt")
    fields = client.get("/api/v1/crm/segment/fields", query_string={"entity": "contact"}, headers=h).get_json()
    by_name = {f["field"]: f for f in fields["result"]}
    assert by_name["pos_spent"]["source"] == "pos_bridge" and "gt" in by_name["pos_spent"]["ops"]
    assert by_name["custom:wechat"]["label"] == {"zh": "微信号", "en": "WeChat ID"}
    assert by_name["last_activity"]["ops"] == ["within_days", "not_within_days"]
    bad = client.get("/api/v1/crm/segment/fields", query_string={"entity": "deal"}, headers=h)
    assert bad.status_code == 400 and "entity" in bad.get_json()["message"]
