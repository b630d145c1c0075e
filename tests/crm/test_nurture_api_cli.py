"""Sequences over the REST API and the command line: sequences and steps created through the sequence
commands (a bad rule refused with its position, an e-mail step without a template and a branch jumping
backwards refused, a stale version refused), moved and removed; activate, pause, resume; leads enrolled
(only those the caller may see), enrollments read, paused and ended; statistics after a real run; who may
call what; `bigledger crm nurture run|enroll|pause|resume|stats`; and the demo data."""
from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import func, select, update

from bigledger_core.cli import cli
from bigledger_core.db import db
from bigledger_core.models import Message
from plugins.crm.leads.models import Lead
from plugins.crm.leads.services import create_lead
from plugins.crm.nurture.models import (
    EmailTemplate,
    Enrollment,
    EnrollmentStep,
    Sequence,
    SequenceStep,
)
from plugins.crm.nurture.services import activate, add_step, run_due
from tests.conftest import add_user, api_token

HTML = "<p>{{ lead.name }}，您好！</p>"
# Tuesday 2027-03-02 03:00 UTC: 11:00 in Shanghai, outside the default quiet hours
T0 = dt.datetime(2027, 3, 2, 3, 0, tzinfo=dt.UTC)


def auth(client, username="admin"):
    return {"Authorization": f"Bearer {api_token(client, username)}", "Accept-Language": "en"}


def new_template(name="欢迎 Welcome") -> int:
    row = EmailTemplate(name=name, subject_zh="欢迎 {{ lead.name }}", html_zh=HTML,
                        subject_en="Welcome {{ lead.name }}", html_en=HTML)
    db.session.add(row)
    db.session.commit()
    return row.id


def new_lead(name, email=None, owner_id=None) -> int:
    lead, _created = create_lead(db.session, Lead(name=name, email=email, owner_id=owner_id, consent=True))
    db.session.commit()
    return lead.id


def running_sequence(name="培育") -> int:
    sequence = Sequence(name=name, status="draft")
    db.session.add(sequence)
    db.session.flush()
    add_step(db.session, sequence, SequenceStep(kind="email", template_id=new_template(f"{name} 邮件")))
    add_step(db.session, sequence, SequenceStep(kind="wait", days=2, business_days=True))
    add_step(db.session, sequence, SequenceStep(kind="task", subject="电话跟进"))
    activate(db.session, sequence)
    db.session.commit()
    return sequence.id


def test_sequences_and_steps_through_the_api(app, client):
    add_user(app, "admin", "Admin")
    h = auth(client)
    with app.app_context():
        welcome = new_template()
    bad = client.post("/api/v1/crm/sequence/", json={"name": "培育", "enroll_rule": "公司规模 > > 100"}, headers=h)
    assert bad.status_code == 400 and bad.get_json()["message"].startswith("enrollment rule: position 8:")
    bad = client.post("/api/v1/crm/sequence/", json={"name": "培育", "quiet_start": "21:00"}, headers=h)
    assert bad.get_json()["message"] == "quiet hours: give both the start and the end, or neither"
    body = {"name": "培育", "enroll_rule": "行业 = '科技'", "quiet_start": "21:00", "quiet_end": "08:00"}
    # the status changes only by activate, pause, resume and archive
    assert client.post("/api/v1/crm/sequence/", json={**body, "status": "active"}, headers=h).status_code == 422
    made = client.post("/api/v1/crm/sequence/", json=body, headers=h)
    assert made.status_code == 201, made.get_json()
    pk = made.get_json()["id"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Sequence)) == 1
        assert db.session.get(Sequence, pk).status == "draft"

    steps = "/api/v1/crm/sequence_step/"
    no_template = client.post(steps, json={"sequence_id": pk, "kind": "email"}, headers=h)
    assert (no_template.status_code, no_template.get_json()["message"]) == (
        400, "step 1: an e-mail step needs a template")
    email = client.post(steps, json={"sequence_id": pk, "kind": "email", "template_id": welcome}, headers=h)
    assert email.status_code == 201 and email.get_json()["result"]["position"] == 1
    email_id = email.get_json()["id"]
    backwards = client.post(steps, json={"sequence_id": pk, "kind": "branch", "condition": "邮件开启 > 0",
                                         "then_step_id": email_id}, headers=h)
    assert backwards.status_code == 400
    assert backwards.get_json()["message"] == "step 2: then: a branch may only go forward (to a later step)"
    wait = client.post(steps, json={"sequence_id": pk, "kind": "wait", "days": 2, "business_days": True},
                       headers=h).get_json()["id"]
    task = client.post(steps, json={"sequence_id": pk, "kind": "task", "subject": "电话跟进", "days": 1},
                       headers=h).get_json()["id"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(SequenceStep)) == 3
    refused = client.put(f"{steps}{wait}", json={"days": 0}, headers=h)
    assert refused.status_code == 400 and "days: a whole number from 1 to 3650" in refused.get_json()["message"]
    assert client.put(f"{steps}{wait}", json={"days": 3}, headers=h).get_json()["result"]["days"] == 3
    moved = client.post(f"{steps}{task}/move", json={"offset": -1}, headers=h)
    assert moved.get_json()["steps"] == [email_id, task, wait]
    assert client.post(f"{steps}{task}/move", json={"offset": 2}, headers=h).status_code == 400
    assert client.delete(f"{steps}{task}", headers=h).get_json() == {"id": task, "active": False}
    listed = client.get(f"{steps}?q=(filters:!((col:sequence_id,opr:eq,value:{pk}),(col:active,opr:eq,value:!t)))",
                        headers=h).get_json()["result"]
    assert [row["id"] for row in listed] == [email_id, wait]

    version = client.get(f"/api/v1/crm/sequence/{pk}", headers=h).get_json()["result"]["version"]
    assert client.put(f"/api/v1/crm/sequence/{pk}", json={"description": "新", "version": version},
                      headers=h).status_code == 200
    stale = client.put(f"/api/v1/crm/sequence/{pk}", json={"description": "旧", "version": version}, headers=h)
    assert stale.status_code == 400 and "changed by someone else" in stale.get_json()["message"]
    bad_rule = client.put(f"/api/v1/crm/sequence/{pk}", json={"enroll_rule": "行业 ="}, headers=h)
    assert bad_rule.status_code == 400 and bad_rule.get_json()["message"].startswith("enrollment rule: position")
    with app.app_context():
        row = db.session.get(Sequence, pk)
        assert (row.description, row.enroll_rule) == ("新", "行业 = '科技'")

    assert client.post(f"/api/v1/crm/sequence/{pk}/pause", headers=h).status_code == 400
    assert client.post(f"/api/v1/crm/sequence/{pk}/activate", headers=h).get_json() == {"id": pk, "status": "active"}
    assert client.post(f"/api/v1/crm/sequence/{pk}/pause", headers=h).get_json()["status"] == "paused"
    assert client.post(f"/api/v1/crm/sequence/{pk}/resume", headers=h).get_json()["status"] == "active"
    assert client.post("/api/v1/crm/sequence/999/activate", headers=h).status_code == 404


def test_enrollment_statistics_and_permissions_through_the_api(app, client):
    add_user(app, "admin", "Admin")
    rep = add_user(app, "rep", "Sales Rep")
    marketing = add_user(app, "marketer", "Marketing")
    with app.app_context():
        pk = running_sequence()
        mine = [new_lead(f"潜客{n}", f"p{n}@example.com", owner_id=marketing) for n in range(3)]
        no_email = new_lead("无邮箱", owner_id=marketing)
        others = new_lead("别人的", "others@example.com", owner_id=rep)
    h, hm, hr = auth(client), auth(client, "marketer"), auth(client, "rep")

    enroll = f"/api/v1/crm/sequence/{pk}/enroll"
    assert client.post(enroll, json={"lead_ids": [mine[0]]}, headers=hr).status_code == 403
    assert client.get("/api/v1/crm/sequence/", headers=hr).status_code == 403
    assert client.get("/api/v1/crm/nurture/statistics", headers=hr).status_code == 403
    assert client.post(enroll, json={"lead_ids": "1"}, headers=hm).status_code == 400
    result = client.post(enroll, json={"lead_ids": [*mine, no_email, others, 99999]}, headers=hm).get_json()
    assert result["enrolled"] == 3
    assert result["skipped"] == {"already": 0, "no_email": 1, "suppressed": 0, "closed": 0, "missing": 2}
    again = client.post(enroll, json={"lead_ids": [mine[0]]}, headers=hm).get_json()
    assert (again["enrolled"], again["skipped"]["already"]) == (0, 1)
    with app.app_context():
        assert db.session.scalar(select(Enrollment.source).limit(1)) == "api"
        assert db.session.scalar(select(func.count()).where(Enrollment.lead_id == others)) == 0

    listed = client.get(f"/api/v1/crm/enrollment/?q=(filters:!((col:sequence_id,opr:eq,value:{pk})))",
                        headers=hm).get_json()
    assert sorted(row["lead_id"] for row in listed["result"]) == mine
    first = next(row["id"] for row in listed["result"] if row["lead_id"] == mine[0])
    assert client.post(f"/api/v1/crm/enrollment/{first}/pause", headers=hm).get_json()["status"] == "paused"
    assert client.post(f"/api/v1/crm/enrollment/{first}/pause", headers=hm).status_code == 400
    assert client.post(f"/api/v1/crm/enrollment/{first}/resume", headers=hm).get_json()["status"] == "active"
    ended = client.delete(f"/api/v1/crm/enrollment/{first}", headers=hm).get_json()
    assert (ended["status"], ended["exit_reason"]) == ("exited", "manual")
    assert client.delete(f"/api/v1/crm/enrollment/{first}", headers=hm).status_code == 400
    assert client.post(f"/api/v1/crm/enrollment/{first}", json={}, headers=hm).status_code in (404, 405)

    # a real run sends the first step's e-mail to the two still running; then one is delivered and opened
    with app.app_context():
        counts = run_due(db.session, now=T0)
        assert counts["sent"] == 2
        sent = db.session.scalars(select(EnrollmentStep).where(EnrollmentStep.message_id.is_not(None))
                                  .order_by(EnrollmentStep.id)).all()
        db.session.execute(update(Message).where(Message.id == sent[0].message_id).values(status="sent"))
        sent[0].opened_at = T0
        db.session.commit()
    stats = client.get(f"/api/v1/crm/sequence/{pk}/statistics", headers=hm).get_json()
    totals = stats["sequence"]
    assert {k: totals[k] for k in ("enrolled", "active", "sent", "delivered", "opened", "clicked")} == {
        "enrolled": 3, "active": 2, "sent": 2, "delivered": 1, "opened": 1, "clicked": 0}
    assert (totals["delivered_rate"], totals["opened_rate"], totals["converted_rate"]) == (0.5, 1.0, 0.0)
    email_row, wait_row, task_row = stats["result"]
    assert (email_row["kind"], email_row["enrolled"], email_row["sent"], email_row["opened"]) == ("email", 2, 2, 1)
    assert (wait_row["kind"], wait_row["enrolled"], task_row["kind"], task_row["active"]) == ("wait", 2, "task", 2)
    overall = client.get("/api/v1/crm/nurture/statistics", headers=hm).get_json()
    assert [(row["name"], row["sent"]) for row in overall["sequences"]] == [("培育", 2)]
    assert [(row["name"], row["sent"], row["opened_rate"]) for row in overall["templates"]] == [
        ("培育 邮件", 2, 1.0)]
    assert client.get("/api/v1/crm/sequence/999/statistics", headers=hm).status_code == 404

    # marketing may not delete a sequence; an admin may not delete one that has enrollments
    assert client.delete(f"/api/v1/crm/sequence/{pk}", headers=hm).status_code == 403
    refused = client.delete(f"/api/v1/crm/sequence/{pk}", headers=h)
    assert refused.status_code == 400 and "archive it instead" in refused.get_json()["message"]
    assert client.post(f"/api/v1/crm/sequence/{pk}/archive", headers=hm).get_json()["status"] == "archived"
    archived = client.post(enroll, json={"lead_ids": [mine[1]]}, headers=hm)
    assert archived.status_code == 400 and "archived" in archived.get_json()["message"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Enrollment.status == "active")) == 0


def run(app, *args):
    with app.app_context():
        return CliRunner().invoke(cli, ["crm", "nurture", *args], env={"LC_ALL": "en_US.UTF-8"},
                                  catch_exceptions=False)


def test_nurture_commands(app, monkeypatch):
    # `crm nurture run` works at the real time of day: without quiet hours its mails go out at any hour
    monkeypatch.setitem(app.config, "BIGLEDGER_NURTURE_QUIET_HOURS", "")
    with app.app_context():
        pk = running_sequence("春季培育")
        leads = [new_lead(f"潜客{n}", f"p{n}@example.com") for n in range(2)]
        no_email = new_lead("无邮箱")
    unknown = run(app, "enroll", "没有这个", str(leads[0]))
    assert unknown.exit_code == 1 and "There is no sequence “没有这个”" in unknown.output
    by_name = run(app, "enroll", "春季培育", str(leads[0]), str(no_email))
    assert by_name.exit_code == 0, by_name.output
    assert "Enrolled in “春季培育”: 1." in by_name.output and "no e-mail address: 1" in by_name.output
    by_id = run(app, "enroll", str(pk), str(leads[0]), str(leads[1]))
    assert by_id.exit_code == 0 and "already in the sequence: 1" in by_id.output
    nothing = run(app, "enroll", str(pk), str(leads[0]))
    assert nothing.exit_code == 1  # nobody enrolled

    assert "paused" in run(app, "pause", "春季培育").output
    again = run(app, "pause", "春季培育")
    assert again.exit_code == 1 and "only an active sequence can be paused" in again.output
    with app.app_context():
        assert db.session.get(Sequence, pk).status == "paused"
    assert "Nothing was due." in run(app, "run").output  # a paused sequence runs no step
    assert run(app, "resume", str(pk)).exit_code == 0
    ran = run(app, "run")
    assert ran.exit_code == 0 and "e-mails queued: 2" in ran.output, ran.output

    table = run(app, "stats")
    assert "# Sequences" in table.output and "# E-mail templates" in table.output
    assert "春季培育\t2\t2\t2\t0 (0.0%)" in table.output
    data = json.loads(run(app, "stats", "春季培育", "--json").output)
    assert [(r["name"], r["enrolled"], r["sent"]) for r in data["sequences"]] == [("春季培育", 2, 2)]
    assert [(r["kind"], r["sent"], r["active"]) for r in data["steps"]] == [("email", 2, 0), ("wait", 0, 0),
                                                                             ("task", 0, 2)]
    assert data["sequences"][0]["delivered_rate"] == 0.0 and data["steps"][1]["opened_rate"] is None


def test_the_demo_loads_templates_and_a_running_sequence_once(app):
    from bigledger_core.demo import load_demo
    from plugins.crm.nurture.demo import SEQUENCE
    from plugins.crm.nurture.demo import load as load_nurture

    with app.app_context():
        load_demo()  # the demo users and leads (and, once wired, this demo too)
        users = {u.username: u for u in db.session.scalars(select(User))}
        load_nurture(db.session, users)
        load_nurture(db.session, users)
        db.session.commit()
        sequence = db.session.scalars(select(Sequence).where(Sequence.name == SEQUENCE)).one()
        assert sequence.status == "active" and (sequence.quiet_start, sequence.quiet_end) == ("21:00", "08:00")
        steps = db.session.scalars(select(SequenceStep).where(SequenceStep.sequence_id == sequence.id)
                                   .order_by(SequenceStep.position)).all()
        assert [s.kind for s in steps] == ["email", "wait", "branch", "email", "task"]
        assert (steps[1].days, steps[1].business_days, steps[2].condition) == (2, True, "邮件开启 > 0")
        assert (steps[2].then_step_id, steps[2].else_step_id) == (steps[3].id, steps[4].id)
        assert db.session.scalar(select(func.count()).select_from(EmailTemplate)) == 3
        enrolled = db.session.scalars(select(Lead.idempotency_key).join(Enrollment, Enrollment.lead_id == Lead.id)
                                      .where(Enrollment.sequence_id == sequence.id)).all()
        assert sorted(enrolled) == ["demo-lead-2", "demo-lead-3", "demo-lead-5"]
        for template in db.session.scalars(select(EmailTemplate)):
            assert "{{ lead.name }}" in template.html_zh and "{{ lead.name }}" in template.html_en
