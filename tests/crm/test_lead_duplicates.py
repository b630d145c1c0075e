"""Duplicate leads: the check on capture and on edit (exact keys, names in any script, company) against
leads and contacts, the batch command, and the review (not a duplicate, remembered; merge)."""
from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import event, func, insert, select

from bigledger_core.cli import cli
from bigledger_core.db import db
from plugins.crm.leads import duplicates
from plugins.crm.leads.models import DuplicateCandidate, Lead, LeadFact
from plugins.crm.leads.services import create_lead, record_fact
from plugins.crm.models import (
    AuditEntry,
    Company,
    Contact,
    ContactCompany,
    Email,
    Phone,
)
from plugins.crm.normalize import search_text
from tests.conftest import add_user, api_token, csrf_token


def auth(client, username="admin", language="en"):
    return {"Authorization": f"Bearer {api_token(client, username)}", "Accept-Language": language}


def run(app, *args):
    with app.app_context():
        return CliRunner().invoke(cli, list(args), env={"LC_ALL": "en_US.UTF-8"}, catch_exceptions=False)


def contact(name, *, email=None, phone=None, company=None) -> Contact:
    person = Contact(full_name=name)
    db.session.add(person)
    db.session.flush()
    if email:
        db.session.add(Email(contact_id=person.id, address=email, is_primary=True))
    if phone:
        db.session.add(Phone(contact_id=person.id, raw=phone, is_primary=True))
    if company:
        db.session.add(ContactCompany(contact_id=person.id, company_id=company.id, is_primary=True))
    db.session.flush()
    return person


def lead(**values) -> Lead:
    created, _ = create_lead(db.session, Lead(**values))
    return created


def open_pairs() -> set[tuple]:
    return {(c.kind_a, c.id_a, c.kind_b, c.id_b)
            for c in db.session.scalars(select(DuplicateCandidate).where(DuplicateCandidate.status == "open"))}


def test_capture_names_a_contact_with_the_same_email_and_a_lead_with_the_same_phone(app, client):
    add_user(app, "admin", "Admin")
    with app.app_context():
        li_na = contact("李娜", email="lina@example.com")
        wang = lead(name="Wang Qiang", phone="138 0013 8000", company_name="Acme")
        db.session.commit()
        li_na_id, wang_id = li_na.id, wang.id
    h = auth(client)
    first = client.post("/api/v1/lead/", json={"name": "Li Na", "email": "LiNa@Example.COM"}, headers=h)
    assert first.status_code == 201, first.get_data(as_text=True)
    found = first.get_json()["duplicates"]
    assert [(d["kind"], d["id"], d["name"]) for d in found] == [("contact", li_na_id, "李娜")]
    assert "email" in found[0]["reasons"] and 0.5 <= found[0]["score"] <= 1

    second = client.post("/api/v1/lead/", json={"name": "王强", "phone": "+86 138-0013-8000"}, headers=h)
    found = second.get_json()["duplicates"]
    assert [(d["kind"], d["id"]) for d in found] == [("lead", wang_id)] and "phone" in found[0]["reasons"]
    with app.app_context():
        first_id, second_id = first.get_json()["id"], second.get_json()["id"]
        assert open_pairs() == {("contact", li_na_id, "lead", first_id), ("lead", wang_id, "lead", second_id)}

    alone = client.post("/api/v1/lead/", json={"name": "Arif Rahman", "email": "arif@example.org"}, headers=h)
    assert alone.status_code == 201 and alone.get_json()["duplicates"] == []


def test_zhang_wei_and_zhang_wei_in_pinyin_at_one_company_are_found_and_a_namesake_is_not(app):
    with app.app_context():
        company = Company(name="华润万家")
        db.session.add(company)
        db.session.flush()
        person = contact("张伟", company=company)
        earlier = lead(name="张伟", company_name="华润万家", city="深圳")
        namesake = lead(name="张伟", email="zhangwei@other.example", phone="139 2222 3333",
                        company_name="北方重工")
        db.session.commit()
        latin = lead(name="Zhang Wei", company_name="华润万家", email="wei.zhang@crv.example")
        found = {(d["kind"], d["id"]): d for d in latin.duplicates}
        assert ("lead", earlier.id) in found and ("contact", person.id) in found
        assert {"name", "company"} <= set(found[("lead", earlier.id)]["reasons"])
        assert ("lead", namesake.id) not in found
        stranger = lead(name="张伟", email="zw@third.example", phone="137 0000 1111", company_name="南方航空")
        assert stranger.duplicates == []


def test_western_order_and_swapped_names_are_looked_up():
    assert duplicates.name_forms("张小明")[:3] == ["zhang xiao ming", "zhang xiaoming", "xiaoming zhang"]
    forms = duplicates.name_forms("Mei Ling Lee")
    assert {"mei ling lee", "lee mei ling", "meilinglee", "leemeiling"} <= set(forms)
    assert duplicates.name_forms("Li") == []  # too short to look up by name


def test_not_a_duplicate_is_remembered_by_the_batch_and_by_later_checks(app, client):
    add_user(app, "admin", "Admin")
    with app.app_context():
        one = lead(name="Chen Jie", email="chen.jie@example.com")
        two = lead(name="Chen Jie", email="chen.jie@example.com", company_name="Other")
        db.session.commit()
        pair = db.session.scalar(select(DuplicateCandidate))
        pair_id, one_id, two_id = pair.id, one.id, two.id
        assert (pair.kind_a, pair.id_a, pair.kind_b, pair.id_b) == ("lead", one_id, "lead", two_id)
    h = auth(client)
    listed = client.get("/api/v1/crm/duplicates/", headers=h).get_json()
    assert listed["total"] == 1 and listed["pairs"][0]["a"]["name"] == "Chen Jie"
    assert listed["pairs"][0]["b"]["emails"] == ["chen.jie@example.com"]
    response = client.post(f"/api/v1/crm/duplicates/{pair_id}/dismiss", headers=h)
    assert response.status_code == 200 and response.get_json()["status"] == "not_duplicate"
    again = client.post(f"/api/v1/crm/duplicates/{pair_id}/dismiss", headers=h)
    assert again.status_code == 400

    batch = run(app, "crm", "dedupe", "leads")
    assert batch.exit_code == 0, batch.output
    assert f"lead:{one_id}" in batch.output and "1 already decided" in batch.output
    with app.app_context():
        rows = db.session.scalars(select(DuplicateCandidate)).all()
        assert [(r.id, r.status) for r in rows] == [(pair_id, "not_duplicate")]
        edited = db.session.get(Lead, two_id)
        edited.company_name = "Yet another"
        db.session.commit()  # the edit is checked again: the decided pair stays decided
        assert open_pairs() == set()
        third = lead(name="Chen Jie", email="chen.jie@example.com")
        assert {d["id"] for d in third.duplicates} == {one_id, two_id}
        assert {d["other"]["id"] for d in duplicates.open_for(db.session, "lead", third.id)} == {one_id, two_id}
        db.session.commit()
    assert client.get("/api/v1/crm/duplicates/?status=open", headers=h).get_json()["total"] == 2
    assert client.get("/api/v1/crm/duplicates/?status=bogus", headers=h).status_code == 400


def test_an_edit_is_checked_again(app, client):
    add_user(app, "admin", "Admin")
    with app.app_context():
        person = contact("Ahmad Faizal", email="faizal@example.my")
        other = lead(name="Siti Aminah", email="siti@example.my")
        db.session.commit()
        person_id, lead_id = person.id, other.id
        assert open_pairs() == set()
    h = auth(client)
    version = client.get(f"/api/v1/lead/{lead_id}", headers=h).get_json()["result"]["version"]
    response = client.put(f"/api/v1/lead/{lead_id}", json={"name": "Ahmad Faizal", "email": "Faizal@Example.MY",
                                                            "version": version}, headers=h)
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        assert open_pairs() == {("contact", person_id, "lead", lead_id)}
        edited = db.session.get(Lead, lead_id)
        edited.name, edited.email = "Siti Aminah", "siti@example.my"
        db.session.commit()
        assert open_pairs() == set()  # no longer alike: the open pair goes


def test_merging_a_lead_into_a_lead_moves_facts_and_keeps_the_loser_in_the_audit(app, client):
    add_user(app, "admin", "Admin")
    with app.app_context():
        keep = lead(name="刘洋", phone="13911112222", source="form")
        lose = lead(name="Liu Yang", phone="+86 139 1111 2222", email="liuyang@example.cn", company_name="星河科技",
                    source="event", email_opens=2)
        record_fact(db.session, keep, "访问了定价页")
        record_fact(db.session, lose, "访问了定价页", count=2)
        record_fact(db.session, lose, "downloaded_whitepaper")
        db.session.commit()
        keep_id, lose_id = keep.id, lose.id
        pair_id = db.session.scalar(select(DuplicateCandidate.id))
    h = auth(client)
    response = client.post(f"/api/v1/crm/duplicates/{pair_id}/merge", json={"keep": "a"}, headers=h)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["survivor"] == {"kind": "lead", "id": keep_id}
    with app.app_context():
        survivor, loser = db.session.get(Lead, keep_id), db.session.get(Lead, lose_id)
        facts = {f.fact: f.count for f in db.session.scalars(select(LeadFact).where(LeadFact.lead_id == keep_id))}
        assert facts == {"visited_pricing_page": 3, "downloaded_whitepaper": 1}
        assert db.session.scalar(select(LeadFact.id).where(LeadFact.lead_id == lose_id)) is None
        assert (survivor.email, survivor.company_name, survivor.email_opens) == \
            ("liuyang@example.cn", "星河科技", 2)
        assert survivor.source == "form" and survivor.status != "disqualified"
        assert loser.status == "disqualified" and str(keep_id) in loser.disqualify_reason
        assert loser.conversion == {"merged_into": keep_id}
        audit = db.session.scalar(select(AuditEntry).where(AuditEntry.entity == "crm_lead",
                                                           AuditEntry.record_id == lose_id))
        assert audit.action == "merge" and audit.changes["merged_into"] == keep_id
        assert audit.changes["values"]["email"] == "liuyang@example.cn"
        assert audit.changes["values"]["name"] == "Liu Yang"
        assert {f["fact"]: f["count"] for f in audit.changes["facts"]} == {"visited_pricing_page": 2,
                                                                           "downloaded_whitepaper": 1}
        assert db.session.get(DuplicateCandidate, pair_id).status == "merged"
    twice = client.post(f"/api/v1/crm/duplicates/{pair_id}/merge", headers=h)
    assert twice.status_code == 400


def test_merging_a_lead_into_a_contact_links_and_converts_it(app, client):
    add_user(app, "admin", "Admin")
    with app.app_context():
        company = Company(name="Acme")
        db.session.add(company)
        db.session.flush()
        person = contact("Tan Mei Ling", email="meiling@acme.example", company=company)
        captured = lead(name="Mei Ling Tan", email="MeiLing@acme.example", phone="+60 12-345 6789")
        db.session.commit()
        person_id, lead_id, company_id = person.id, captured.id, company.id
        pair_id = db.session.scalar(select(DuplicateCandidate.id))
    response = client.post(f"/api/v1/crm/duplicates/{pair_id}/merge", json={"keep": "b"}, headers=auth(client))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["survivor"] == {"kind": "contact", "id": person_id}
    with app.app_context():
        converted = db.session.get(Lead, lead_id)
        assert (converted.status, converted.contact_id, converted.company_id) == ("converted", person_id, company_id)
        assert converted.conversion == {"linked_contact": person_id} and converted.converted_at is not None
        phones = db.session.scalars(select(Phone.e164).where(Phone.contact_id == person_id)).all()
        assert phones == ["+60123456789"]
        assert db.session.scalars(select(Email.address).where(Email.contact_id == person_id)).all() == \
            ["meiling@acme.example"]


def test_contacts_pairs_from_the_batch_are_merged_with_the_contact_merge(app, admin_client):
    with app.app_context():
        one = contact("黄磊", phone="13800138000")
        two = contact("Huang Lei", phone="+86 138 0013 8000")
        db.session.commit()
        one_id, two_id = one.id, two.id
    batch = run(app, "crm", "dedupe", "contacts")
    assert batch.exit_code == 0 and "1 new pairs" in batch.output
    page = admin_client.get("/crm/duplicates/?_l_=en").get_data(as_text=True)
    assert "黄磊" in page and "Huang Lei" in page
    assert "same phone" in page
    with app.app_context():
        pair_id = db.session.scalar(select(DuplicateCandidate.id))
    token = csrf_token(admin_client, "/crm/duplicates/")
    response = admin_client.post(f"/crm/duplicates/{pair_id}/merge", data={"csrf_token": token, "keep": "b"},
                                 follow_redirects=True)
    shown = response.get_data(as_text=True)
    assert response.status_code == 200 and ("was merged into" in shown or "已合并到" in shown)
    with app.app_context():
        assert db.session.get(Contact, one_id).merged_into_id == two_id
        assert db.session.get(DuplicateCandidate, pair_id).status == "merged"
    merged = admin_client.get("/crm/duplicates/?status=merged").get_data(as_text=True)
    assert "黄磊" in merged


def test_the_review_screen_dismisses_and_is_in_the_menu(app, admin_client):
    with app.app_context():
        lead(name="Ng Wai Kit", email="waikit@example.com")
        lead(name="Ng Wai Kit", email="waikit@example.com")
        db.session.commit()
        pair_id = db.session.scalar(select(DuplicateCandidate.id))
    page = admin_client.get("/crm/duplicates/?_l_=zh").get_data(as_text=True)
    assert "Ng Wai Kit" in page
    assert "重复记录" in page
    token = csrf_token(admin_client, "/crm/duplicates/")
    admin_client.post(f"/crm/duplicates/{pair_id}/dismiss", data={"csrf_token": token}, follow_redirects=True)
    with app.app_context():
        assert db.session.get(DuplicateCandidate, pair_id).status == "not_duplicate"
    assert 'id="bl-duplicate-none"' in admin_client.get("/crm/duplicates/").get_data(as_text=True)


def test_dedupe_leads_writes_pairs_of_leads_and_of_leads_with_contacts(app, tmp_path):
    with app.app_context():
        person = contact("Kumar Raj", email="raj@example.in")
        a = lead(name="Raj Kumar", email="raj@example.in")
        b = lead(name="Priya Nair", phone="+91 98765 43210")
        c = lead(name="Priya  Nair", phone="098765 43210", company_name="Infosys")
        contact("Kumar Raj", email="kraj@example.in")  # a contact pair is not the leads' business
        db.session.execute(DuplicateCandidate.__table__.delete())  # as if no capture had looked
        db.session.commit()
        ids = {"person": person.id, "a": a.id, "b": b.id, "c": c.id}
    output = tmp_path / "pairs.csv"
    result = run(app, "crm", "dedupe", "leads", "-o", str(output))
    assert result.exit_code == 0, result.output
    rows = output.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "id_a,id_b,score,reasons"
    written = {frozenset(row.split(",")[:2]) for row in rows[1:]}
    assert frozenset({f"contact:{ids['person']}", f"lead:{ids['a']}"}) in written
    assert frozenset({f"lead:{ids['b']}", f"lead:{ids['c']}"}) in written
    assert all(any(x.startswith("lead:") for x in pair) for pair in written)
    with app.app_context():
        assert {("contact", ids["person"], "lead", ids["a"]), ("lead", ids["b"], "lead", ids["c"])} <= open_pairs()


def test_one_check_issues_the_same_few_statements_whatever_the_number_of_leads(app):
    def statements(filler: int) -> int:
        db.session.execute(insert(Lead), [
            {"name": f"Filler {n}", "search_text": search_text(f"Filler {n}", f"Firm {n % 97}"),
             "company_name": f"Firm {n % 97}", "email": f"filler{n}@example.com", "status": "new",
             "source": "import", "conversion": {}, "custom": {}} for n in range(filler)])
        db.session.commit()
        probe = db.session.scalar(select(Lead).where(Lead.name == "赵敏"))
        count = 0

        def counted(*_args):
            nonlocal count
            count += 1

        engine = db.session.get_bind()
        event.listen(engine, "before_cursor_execute", counted)
        try:
            found = duplicates.check(db.session, probe)
            db.session.flush()
        finally:
            event.remove(engine, "before_cursor_execute", counted)
        assert sorted(d["kind"] for d in found) == ["contact", "lead"]
        db.session.rollback()
        return count

    with app.app_context():
        company = Company(name="明教")
        db.session.add(company)
        db.session.flush()
        contact("赵敏", email="zhaomin@example.com", company=company)
        lead(name="Zhao Min", phone="13600001111", company_name="明教")
        lead(name="赵敏", email="zhaomin@example.com", phone="136 0000 1111", company_name="明教")
        db.session.commit()
        small = statements(100)
        large = statements(1900)
        assert db.session.scalar(select(func.count(Lead.id))) == 2002
    assert small == large <= 15
