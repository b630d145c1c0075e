"""A person's data: the export holds everything about them and nothing about anyone else; erasure leaves no
trace of their address or name in the tables it touches, keeps counts and statistics, keeps them suppressed
by digest and records who erased; the same from the screen, the REST API and the CLI; the suppression list
screen, API and commands; consent given on a web form is recorded."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from bigledger_core.cli import cli
from bigledger_core.db import db
from bigledger_core.mail.outbound import queue_email
from bigledger_core.models import InboundAttachment, InboundMessage, Message
from plugins.crm.leads.models import Lead, LeadFact
from plugins.crm.models import (
    Activity,
    Address,
    AuditEntry,
    Contact,
    Document,
    Email,
    Phone,
)
from plugins.crm.nurture import tracking
from plugins.crm.nurture.models import (
    ConsentRecord,
    Enrollment,
    EnrollmentStep,
    Sequence,
    SequenceStep,
    Suppression,
)
from plugins.crm.nurture.privacy import PrivacyError, erase_person, export_person
from tests.conftest import add_user, api_token, csrf_token, login

WANG = {"email": "wang.xm@example.com", "name": "王小明", "phone": "13812345678", "street": "中山路88号",
        "message": "请周二联系我"}
LI = {"email": "li.lei@example.com", "name": "李雷", "phone": "13987654321", "street": "人民路1号",
      "message": "只要报价单"}
# the tables erasure touches, and whether each holds the person's name or address afterwards
TABLES = ["crm_lead", "crm_lead_fact", "crm_contact", "crm_email", "crm_phone", "crm_address", "crm_activity",
          "crm_document", "bl_message", "bl_inbound_message", "bl_inbound_attachment", "crm_suppression",
          "crm_consent_record", "crm_audit", "crm_enrollment", "crm_enrollment_step", "bl_outbox_event"]


def make_person(app, person: dict, sequence_name: str) -> dict:
    """A lead (with facts and consent), the contact it became (e-mail, phone, address, an activity, a document,
    a name change in the audit trail), an enrollment whose e-mail step ran and was opened, the message sent,
    a reply with an attachment, and a consent record."""
    with app.app_context():
        session = db.session
        contact = Contact(full_name=person["name"], title="采购经理", custom={})
        session.add(contact)
        session.flush()
        email = Email(contact_id=contact.id, address=person["email"].replace("example", "exmaple"), is_primary=True)
        session.add_all([email,
                         Phone(contact_id=contact.id, raw=person["phone"]),
                         Address(contact_id=contact.id, city="上海", street=person["street"]),
                         Activity(contact_id=contact.id, kind="call", subject=f"给{person['name']}打电话",
                                  body=f"{person['name']}想要报价"),
                         Document(contact_id=contact.id, filename=f"{person['name']}.pdf", content_type="application/pdf",
                                  size=3, sha256="0" * 64)])
        session.flush()
        contact.title, email.address = "采购总监", person["email"].upper()  # audited changes: old and new values
        lead = Lead(name=person["name"], email=person["email"], phone=person["phone"], message=person["message"],
                    source="form", consent=True, consent_text="我同意接收营销信息。", contact_id=contact.id,
                    email_opens=2, search_text=person["name"])
        sequence = Sequence(name=sequence_name, status="active")
        session.add_all([lead, sequence])
        session.flush()
        session.add(LeadFact(lead_id=lead.id, fact="visited_pricing", count=3))
        step = SequenceStep(sequence_id=sequence.id, position=1, kind="email", name="欢迎")
        session.add(step)
        session.flush()
        enrollment = Enrollment(sequence_id=sequence.id, lead_id=lead.id, status="active", step_id=step.id)
        message = queue_email(session, to=person["email"].replace("wang", "Wang"), subject=f"{person['name']}，您好",
                              text=f"{person['name']}，您好！", html=f"<p>{person['name']}，您好！</p>",
                              to_name=person["name"],
                              unsubscribe_url=f"https://crm.example.com/u/{person['email']}")
        session.add_all([enrollment, message])
        session.flush()
        session.add(EnrollmentStep(enrollment_id=enrollment.id, step_id=step.id, sequence_id=sequence.id,
                                   outcome="sent", message_id=message.id, opens=2, links=["https://example.com/"]))
        reply = InboundMessage(message_key=tracking.address_hash(f"reply {person['email']}"),
                               message_id=f"<{contact.id}.reply@mail.example.com>",
                               sender_address=person["email"], sender_name=person["name"], subject="Re: 您好",
                               body_text=f"谢谢，{person['name']}", source="test")
        session.add(reply)
        session.flush()
        session.add(InboundAttachment(message_id=reply.id, filename=f"{person['name']}的名片.png", content_type="image/png", size=4,
                                      data=b"\x89PNG"))
        session.add(ConsentRecord(address_hash=tracking.address_hash(person["email"]), lead_id=lead.id,
                                  action="given", source="form:spring", text="我同意接收营销信息。"))
        session.commit()
        return {"lead": lead.id, "contact": contact.id, "enrollment": enrollment.id, "message": message.id}


def _readable(value) -> str:
    """A column value as text, JSON decoded (names in stored JSON may be \\u-escaped)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def dump(app, tables=TABLES) -> dict[str, str]:
    """Every row of each table as text (lower case), to search for traces."""
    with app.app_context():
        found = {}
        for table in tables:
            rows = db.session.execute(text(f"SELECT * FROM {table}")).all()  # the names are fixed above
            found[table] = "\n".join(" | ".join(_readable(v) for v in row) for row in rows).lower()
        return found


def counts(app) -> dict[str, int]:
    with app.app_context():
        return {model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
                for model in (Lead, LeadFact, Contact, Activity, Enrollment, EnrollmentStep, Message, InboundMessage)}


@pytest.fixture
def people(app):
    return make_person(app, WANG, "欢迎序列"), make_person(app, LI, "老客户序列")


def test_the_export_holds_everything_about_the_person_and_nothing_about_another(app, people):
    wang, _li = people
    with app.app_context():
        data = export_person(db.session, "Wang.XM@Example.com")
        with pytest.raises(PrivacyError):
            export_person(db.session, "not-an-address")
    assert data["address"] == WANG["email"]
    [lead] = data["leads"]
    assert (lead["id"], lead["name"], lead["phone"], lead["message"]) == (wang["lead"], "王小明", WANG["phone"],
                                                                          WANG["message"])
    assert lead["consent"]["given"] and lead["facts"][0]["fact"] == "visited_pricing"
    [contact] = data["contacts"]
    assert contact["full_name"] == "王小明" and contact["emails"][0]["address"] == WANG["email"]
    assert contact["phones"][0]["raw"] == WANG["phone"] and contact["addresses"][0]["street"] == WANG["street"]
    assert contact["activities"][0]["body"] == "王小明想要报价" and contact["documents"][0]["filename"] == "王小明.pdf"
    [enrollment] = data["enrollments"]
    assert enrollment["sequence"] == "欢迎序列" and enrollment["steps"][0]["opens"] == 2
    [sent] = data["messages_sent"]
    assert sent["subject"] == "王小明，您好" and "王小明" in sent["body_text"]
    [received] = data["messages_received"]
    assert received["body_text"] == "谢谢，王小明" and received["attachments"][0]["filename"] == "王小明的名片.png"
    assert [c["action"] for c in data["consent_records"]] == ["given"] and data["suppression"] is None
    changes = {entry["entity"]: entry["changes"] for entry in data["audit"]}
    assert changes["crm_email"]["address"] == ["wang.xm@exmaple.com", WANG["email"]]
    assert changes["crm_contact"]["title"] == ["采购经理", "采购总监"]
    flat = json.dumps(data, ensure_ascii=False)
    assert "李雷" not in flat and LI["email"] not in flat and LI["phone"] not in flat and "老客户序列" not in flat


def test_erasure_leaves_no_trace_keeps_counts_and_keeps_the_person_suppressed(app, people):
    wang, li = people
    before = counts(app)
    admin = add_user(app, "privacy_admin", "Admin")
    with app.app_context():
        result = erase_person(db.session, WANG["email"].upper(), by_id=admin)
        db.session.commit()
    assert result["leads"] == 1 and result["contacts"] == 1 and result["messages_sent"] == 1
    assert result["messages_received"] == 1 and result["enrollments_ended"] == 1
    traces = dump(app)
    for table, content in traces.items():
        for trace in (WANG["email"], "王小明", WANG["phone"], WANG["street"], WANG["message"]):
            assert trace.lower() not in content, f"{trace} left in {table}"
    # the other person is untouched, where the erased one was (events, audit trail) too
    assert LI["email"] in traces["crm_lead"] and "李雷" in traces["crm_contact"] and "李雷" in traces["bl_outbox_event"]
    assert "采购经理" in traces["crm_audit"] and LI["email"] in traces["bl_message"]
    assert counts(app) == before
    with app.app_context():
        session = db.session
        assert tracking.suppressed(session, [WANG["email"]]) == {WANG["email"]}
        row = session.scalar(select(Suppression))
        assert (row.address, row.reason, row.address_hash) == (None, "erased", tracking.address_hash(WANG["email"]))
        lead = session.get(Lead, wang["lead"])
        assert lead.name == f"已删除 / erased #{lead.id}" and lead.email is None and not lead.consent
        assert lead.search_text == "" and lead.email_opens == 2 and lead.custom == {}
        contact = session.get(Contact, wang["contact"])
        assert contact.full_name == f"已删除 / erased #{contact.id}" and contact.search_text == ""
        assert contact.pinyin is None and contact.initials is None
        assert session.scalar(select(func.count()).select_from(Email).where(Email.contact_id == contact.id)) == 0
        assert session.get(Enrollment, wang["enrollment"]).exit_reason == "erased"
        assert session.get(Enrollment, li["enrollment"]).status == "active"
        message = session.get(Message, wang["message"])
        assert (message.to_address, message.body_text, message.body_html) == ("(erased)", "", None)
        assert session.scalar(select(func.sum(EnrollmentStep.opens))) == 4
        erased = session.scalars(select(AuditEntry).where(AuditEntry.action == "erase")).all()
        assert {(e.entity, e.record_id, e.user_id) for e in erased} == {("crm_lead", wang["lead"], admin),
                                                                         ("crm_contact", wang["contact"], admin)}
        actions = session.scalars(select(ConsentRecord.action).order_by(ConsentRecord.id)).all()
        assert actions == ["given", "given", "erased"]
        assert session.scalar(select(func.count()).select_from(ConsentRecord).where(ConsentRecord.text.is_not(None))) == 1
        assert session.scalar(select(func.count()).select_from(InboundAttachment)) == 1  # Li's
    with app.app_context():  # erasing again finds nothing and changes nothing
        again = erase_person(db.session, WANG["email"])
        db.session.commit()
    assert (again["leads"], again["contacts"], again["messages_sent"]) == (0, 0, 0)


def test_the_privacy_screen_downloads_and_erases_after_a_confirmation(app, client, people):
    add_user(app, "admin", "Admin")
    login(client, "admin")
    token = csrf_token(client, "/crm/privacy/")
    download = client.post("/crm/privacy/export", data={"csrf_token": token, "email": WANG["email"]})
    assert download.status_code == 200 and download.mimetype == "application/json"
    assert "attachment" in download.headers["Content-Disposition"]
    assert json.loads(download.data)["leads"][0]["name"] == "王小明"
    bad = client.post("/crm/privacy/export?_l_=en", data={"csrf_token": token, "email": "nobody"})
    assert bad.status_code == 400 and "not a valid e-mail address" in bad.get_data(as_text=True)
    ask = client.post("/crm/privacy/erase", data={"csrf_token": token, "email": WANG["email"]})
    assert ask.status_code == 200 and 'id="bl-privacy-confirm"' in ask.get_data(as_text=True)
    wrong = client.post("/crm/privacy/erase", data={"csrf_token": token, "email": WANG["email"],
                                                    "confirm": LI["email"]})
    assert wrong.status_code == 400
    assert "王小明" in dump(app, ["crm_lead"])["crm_lead"]  # nothing erased yet
    done = client.post("/crm/privacy/erase", data={"csrf_token": token, "email": WANG["email"],
                                                   "confirm": WANG["email"].upper()})
    assert done.status_code == 302
    assert "王小明" not in dump(app, ["crm_lead"])["crm_lead"]


def test_the_privacy_api_exports_and_erases_for_those_allowed(app, client, people):
    add_user(app, "admin", "Admin")
    add_user(app, "rep", "Sales Rep")
    admin = {"Authorization": f"Bearer {api_token(client, 'admin')}", "Accept-Language": "en"}
    rep = {"Authorization": f"Bearer {api_token(client, 'rep')}"}
    exported = client.get(f"/api/v1/crm/privacy/export?email={WANG['email']}", headers=admin)
    assert exported.status_code == 200 and exported.get_json()["result"]["leads"][0]["name"] == "王小明"
    assert client.get("/api/v1/crm/privacy/export?email=x", headers=admin).status_code == 400
    assert client.get(f"/api/v1/crm/privacy/export?email={WANG['email']}", headers=rep).status_code == 403
    assert client.post("/api/v1/crm/privacy/erase", json={"email": WANG["email"]}, headers=rep).status_code == 403
    erased = client.post("/api/v1/crm/privacy/erase", json={"email": WANG["email"]}, headers=admin)
    assert erased.status_code == 200 and erased.get_json()["result"]["leads"] == 1
    assert client.post("/api/v1/crm/privacy/erase", json={}, headers=admin).status_code == 400
    assert "王小明" not in dump(app, ["crm_lead"])["crm_lead"]


def test_the_suppression_list_screen_and_api(app, client, people):
    wang, _li = people
    add_user(app, "admin", "Admin")
    login(client, "admin")
    token = csrf_token(client, "/crm/suppression/add")
    refused = client.post("/crm/suppression/add?_l_=en", data={"csrf_token": token, "address": "not an address",
                                                               "reason": "manual"}, follow_redirects=True)
    assert "not a valid e-mail address" in refused.get_data(as_text=True)
    added = client.post("/crm/suppression/add", data={"csrf_token": token, "address": " Wang.XM@Example.com",
                                                      "reason": "complaint", "note": "投诉了"})
    assert added.status_code == 302
    with app.app_context():
        row = db.session.scalar(select(Suppression))
        assert (row.address, row.reason, row.source, row.note) == (WANG["email"], "complaint", "screen", "投诉了")
        assert db.session.get(Enrollment, wang["enrollment"]).exit_reason == "unsubscribed"
    listed = client.get("/crm/suppression/list/").get_data(as_text=True)
    assert WANG["email"] in listed
    twice = client.post("/crm/suppression/add?_l_=en", data={"csrf_token": token, "address": WANG["email"],
                                                             "reason": "manual"}, follow_redirects=True)
    assert "already on the suppression list" in twice.get_data(as_text=True)

    headers = {"Authorization": f"Bearer {api_token(client, 'admin')}"}
    created = client.post("/api/v1/crm/suppression/", json={"email": "Li.Lei@example.com", "note": "电话要求"},
                          headers=headers)
    assert created.status_code == 201 and created.get_json()["result"]["address"] == LI["email"]
    assert client.post("/api/v1/crm/suppression/", json={"email": LI["email"]}, headers=headers).status_code == 200
    assert client.post("/api/v1/crm/suppression/", json={"email": "x"}, headers=headers).status_code == 400
    assert client.post("/api/v1/crm/suppression/", json={"email": "a@example.com", "reason": "erased"},
                       headers=headers).status_code == 400
    listing = client.get("/api/v1/crm/suppression/", headers=headers).get_json()
    assert {r["address"] for r in listing["result"]} == {WANG["email"], LI["email"]}
    assert client.put(f"/api/v1/crm/suppression/{created.get_json()['id']}", json={"reason": "manual"},
                      headers=headers).status_code in (404, 405)
    assert client.delete(f"/api/v1/crm/suppression/{created.get_json()['id']}", headers=headers).status_code == 200
    with app.app_context():
        assert tracking.suppressed(db.session, [LI["email"], WANG["email"]]) == {WANG["email"]}


def run(app, *args, input=None):
    with app.app_context():
        return CliRunner().invoke(cli, list(args), env={"LC_ALL": "en_US.UTF-8"}, input=input,
                                  catch_exceptions=False)


def test_privacy_and_suppression_commands(app, people, tmp_path):
    target = tmp_path / "wang.json"
    exported = run(app, "crm", "privacy", "export", WANG["email"], "-o", str(target))
    assert exported.exit_code == 0 and json.loads(target.read_text(encoding="utf-8"))["leads"][0]["name"] == "王小明"
    printed = run(app, "crm", "privacy", "export", LI["email"])
    assert printed.exit_code == 0 and json.loads(printed.output)["contacts"][0]["full_name"] == "李雷"
    assert run(app, "crm", "privacy", "export", "nobody").exit_code == 1
    declined = run(app, "crm", "privacy", "erase", WANG["email"], input="n\n")
    assert declined.exit_code == 1 and "Nothing was erased" in declined.output
    assert "王小明" in dump(app, ["crm_lead"])["crm_lead"]
    erased = run(app, "crm", "privacy", "erase", WANG["email"], "--yes")
    assert erased.exit_code == 0 and "Erased: 1 leads, 1 contacts" in erased.output
    assert "王小明" not in dump(app, ["crm_lead"])["crm_lead"]

    added = run(app, "crm", "suppression", "add", "Li.Lei@Example.com", "--reason", "bounced", "--note", "550")
    assert added.exit_code == 0 and "li.lei@example.com is on the suppression list" in added.output
    assert "already" in run(app, "crm", "suppression", "add", LI["email"]).output
    assert run(app, "crm", "suppression", "add", "nobody").exit_code == 1
    lines = run(app, "crm", "suppression", "list").output.strip().splitlines()
    assert lines[0].startswith(f"{LI['email']}\tbounced\tcli\t") and lines[0].endswith("\t550")
    assert lines[1].startswith(f"(erased) {tracking.address_hash(WANG['email'])[:12]}\terased\terasure\t")
    assert run(app, "crm", "suppression", "remove", LI["email"].upper()).exit_code == 0
    assert run(app, "crm", "suppression", "remove", LI["email"]).exit_code == 1
    with app.app_context():
        assert tracking.suppressed(db.session, [LI["email"], WANG["email"]]) == {WANG["email"]}


def test_consent_given_on_a_web_form_is_recorded_with_its_text_and_time(app, client):
    from tests.crm.test_lead_forms import CONSENT_EN, GOOD, make_form, send

    form_id, slug = make_form(app)
    assert send(client, app, form_id, slug, GOOD).status_code == 200
    assert send(client, app, form_id, slug, {**GOOD, "email": "no.consent@example.com", "consent": ""},
                ).status_code in (200, 400)
    with app.app_context():
        records = db.session.scalars(select(ConsentRecord)).all()
        lead = db.session.scalar(select(Lead).where(Lead.email == "wang.xm@example.com"))
        assert [(r.action, r.source, r.text, r.lead_id, r.address_hash) for r in records] == [
            ("given", f"form:{slug}", CONSENT_EN, lead.id, tracking.address_hash("wang.xm@example.com"))]
        assert records[0].at is not None


def test_consent_given_and_withdrawn_over_the_api_is_recorded_with_its_text(app, client):
    add_user(app, "boss", "Admin")
    headers = {"Authorization": f"Bearer {api_token(client, 'boss')}", "Accept-Language": "en"}
    created = client.post("/api/v1/lead/", headers=headers, json={
        "name": "林小红", "email": "lin@example.com", "consent": True,
        "consent_text": "我同意接收 BigLedger 的产品资讯"})
    assert created.status_code == 201, created.get_json()
    lead_id = created.get_json()["id"]
    version = created.get_json()["result"]["version"]
    withdrawn = client.put(f"/api/v1/lead/{lead_id}", headers=headers, json={"consent": False, "version": version})
    assert withdrawn.status_code == 200, withdrawn.get_json()
    renamed = client.put(f"/api/v1/lead/{lead_id}", headers=headers,
                         json={"name": "林小红2", "version": withdrawn.get_json()["result"]["version"]})
    assert renamed.status_code == 200  # no consent change: no record
    with app.app_context():
        records = db.session.execute(select(ConsentRecord.action, ConsentRecord.source, ConsentRecord.text,
                                            ConsentRecord.address_hash)
                                     .where(ConsentRecord.lead_id == lead_id).order_by(ConsentRecord.id)).all()
    digest = tracking.address_hash("lin@example.com")
    assert records == [("given", "api", "我同意接收 BigLedger 的产品资讯", digest), ("withdrawn", "api", None, digest)]
