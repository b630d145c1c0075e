"""Nurturing sequences run by the scheduler: e-mails queued exactly once per enrollment and step, waits in
days and business days, quiet hours in the recipient's time zone, branches in the rule language, exits
(reply, conversion, unsubscribe, bounce, another sequence), pausing, editing a running sequence, and a run
killed half-way."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask_babel import force_locale
from sqlalchemy import func, select

import plugins.crm.plugin  # noqa: F401  (every CRM table, as the running app has them)
from bigledger_core.db import db
from bigledger_core.mail.inbound import parse_message
from bigledger_core.mail.outbound import send_due
from bigledger_core.models import Message
from plugins.crm.leads.models import Lead, LeadFact
from plugins.crm.models import Activity
from plugins.crm.nurture import services
from plugins.crm.nurture.models import (
    EmailTemplate,
    Enrollment,
    EnrollmentStep,
    Sequence,
    SequenceStep,
)
from plugins.crm.nurture.services import Calendar, NurtureError, enroll, run_due
from tests.conftest import add_user

UTC = dt.UTC
# Tuesday 2027-03-02 03:00 UTC is 11:00 in Shanghai: outside the default quiet hours (21:00–08:00)
T0 = dt.datetime(2027, 3, 2, 3, 0, tzinfo=UTC)
HTML_ZH = "<p>{{ lead.name }}，您好！</p><p><a href='https://example.com/价格'>查看价格</a></p>"
HTML_EN = "<p>Hello {{ lead.name }},</p><p><a href='https://example.com/pricing'>See pricing</a></p>"


def template(name="welcome", **extra) -> EmailTemplate:
    values = {"subject_zh": "欢迎 {{ lead.name }}", "html_zh": HTML_ZH, "subject_en": "Welcome {{ lead.name }}",
              "html_en": HTML_EN} | extra
    row = EmailTemplate(name=name, **values)
    db.session.add(row)
    db.session.flush()
    return row


def sequence(*steps: dict, name="onboarding", status="active", **extra) -> Sequence:
    row = Sequence(name=name, status="draft", **extra)
    db.session.add(row)
    db.session.flush()
    for values in steps:
        services.add_step(db.session, row, SequenceStep(**values))
    if status == "active":
        services.activate(db.session, row)
    return row


def lead(name="张伟", email="zhangwei@example.com", **extra) -> Lead:
    row = Lead(name=name, email=email, **extra)
    db.session.add(row)
    db.session.flush()
    return row


def messages_to(address: str) -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.to_address == address).order_by(Message.id)))


def enrollment_of(lead_row: Lead | int, seq: Sequence | int) -> Enrollment:
    db.session.expire_all()
    lead_id = lead_row if isinstance(lead_row, int) else lead_row.id
    sequence_id = seq if isinstance(seq, int) else seq.id
    return db.session.scalar(select(Enrollment).where(Enrollment.lead_id == lead_id,
                                                      Enrollment.sequence_id == sequence_id))


def test_a_sequence_sends_waits_and_sends_again_once_per_step_in_the_leads_language(app):
    with app.app_context():
        first, second = template("first"), template("second", subject_en="Still there, {{ lead.name }}?")
        seq = sequence({"kind": "email", "template_id": first.id}, {"kind": "wait", "days": 2},
                       {"kind": "email", "template_id": second.id})
        alice = lead("Alice Tan", "alice@example.com", language="en")
        wei = lead()
        assert enroll(db.session, seq, [alice.id, wei.id])["enrolled"] == 2
        db.session.commit()

        counts = run_due(db.session, now=T0)
        assert counts["sent"] == 2 and counts["waited"] == 2
        [to_alice] = messages_to("alice@example.com")
        [to_wei] = messages_to("zhangwei@example.com")
        assert to_alice.subject == "Welcome Alice Tan" and "Hello Alice Tan" in to_alice.body_html
        assert to_wei.subject == "欢迎 张伟" and "张伟，您好" in to_wei.body_html and "张伟" in to_wei.body_text
        assert to_alice.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "https://example.com/pricing" not in to_alice.body_html  # the link is tracked
        run = db.session.scalar(select(EnrollmentStep).where(EnrollmentStep.message_id == to_alice.id))
        assert run.outcome == "sent" and run.links == ["https://example.com/pricing"]
        assert enrollment_of(alice, seq).next_run_at.astimezone(UTC) == T0 + dt.timedelta(days=2)

        assert run_due(db.session, now=T0 + dt.timedelta(days=1)).get("sent", 0) == 0
        counts = run_due(db.session, now=T0 + dt.timedelta(days=2, minutes=1))
        assert counts["sent"] == 2 and counts["completed"] == 2
        assert [m.subject for m in messages_to("alice@example.com")] == ["Welcome Alice Tan",
                                                                       "Still there, Alice Tan?"]
        assert enrollment_of(alice, seq).status == "completed"
        run_due(db.session, now=T0 + dt.timedelta(days=9))
        assert db.session.scalar(select(func.count()).select_from(Message)) == 4


def test_quiet_hours_hold_a_mail_until_morning_in_the_recipients_time_zone(app):
    with app.app_context():
        seq = sequence({"kind": "email", "template_id": template().id})
        new_york = lead("Bob", "bob@example.com", timezone="America/New_York")
        shanghai = lead()  # no zone of its own: the default, Asia/Shanghai
        enroll(db.session, seq, [new_york.id, shanghai.id])
        db.session.commit()
        # 03:00 UTC: 22:00 the day before in New York (quiet), 11:00 in Shanghai
        counts = run_due(db.session, now=T0)
        assert counts["sent"] == 1 and counts["postponed"] == 1
        assert messages_to("bob@example.com") == []
        waiting = enrollment_of(new_york, seq)
        assert waiting.next_run_at.astimezone(UTC) == dt.datetime(2027, 3, 2, 13, 0, tzinfo=UTC)  # 08:00 EST
        assert run_due(db.session, now=dt.datetime(2027, 3, 2, 12, 59, tzinfo=UTC)).get("sent", 0) == 0
        assert run_due(db.session, now=dt.datetime(2027, 3, 2, 13, 0, tzinfo=UTC))["sent"] == 1
        assert len(messages_to("bob@example.com")) == 1


def test_a_phone_number_gives_a_time_zone_and_a_sequence_may_have_its_own_quiet_hours(app):
    with app.app_context():
        seq = sequence({"kind": "email", "template_id": template().id}, quiet_start="09:00", quiet_end="18:00")
        london = lead("Carol", "carol@example.com", phone_e164="+442079460000")
        enroll(db.session, seq, [london.id])
        db.session.commit()
        # 10:00 UTC is 10:00 in London (GMT in March before the 28th): inside this sequence's quiet hours
        assert run_due(db.session, now=dt.datetime(2027, 3, 2, 10, 0, tzinfo=UTC))["postponed"] == 1
        assert enrollment_of(london, seq).next_run_at.astimezone(UTC) == dt.datetime(2027, 3, 2, 18, 0, tzinfo=UTC)


def test_business_days_skip_weekends_holidays_and_count_make_up_workdays():
    zone = services.lead_zone("Asia/Shanghai", None, "UTC")
    friday = dt.datetime(2027, 3, 5, 2, 0, tzinfo=UTC)  # 10:00 Friday in Shanghai
    plain = Calendar("Asia/Shanghai", None, frozenset(), frozenset())
    assert plain.add_days(friday, 2, True, zone).astimezone(zone).date() == dt.date(2027, 3, 9)  # Tuesday
    assert plain.add_days(friday, 2, False, zone).astimezone(zone).date() == dt.date(2027, 3, 7)  # Sunday
    holiday = Calendar("Asia/Shanghai", None, frozenset({dt.date(2027, 3, 8)}), frozenset())
    assert holiday.add_days(friday, 2, True, zone).astimezone(zone).date() == dt.date(2027, 3, 10)
    makeup = Calendar("Asia/Shanghai", None, frozenset(), frozenset({dt.date(2027, 3, 6)}))
    assert makeup.add_days(friday, 2, True, zone).astimezone(zone).date() == dt.date(2027, 3, 8)
    assert makeup.add_days(friday, 2, True, zone).astimezone(zone).hour == 10  # same time of day


def test_a_branch_on_email_opens_sends_one_lead_a_task_and_the_other_a_mail(app):
    with app.app_context():
        owner_id = add_user(app, "rep", "Sales Rep")
        nudge = template("nudge")
        seq = sequence({"kind": "branch", "condition": "邮件开启 > 0"},
                       {"kind": "email", "template_id": nudge.id}, {"kind": "end"},
                       {"kind": "task", "subject": "打电话跟进", "days": 1},
                       {"kind": "set_status", "status": "working"})
        branch = seq.steps[0]
        branch.then_step_id = seq.steps[3].id  # openers get a call, the others another mail
        services.check_step(db.session, branch)
        opener = lead("李娜", "lina@example.com", email_opens=2, owner_id=owner_id)
        silent = lead("王强", "wangqiang@example.com")
        enroll(db.session, seq, [opener.id, silent.id])
        db.session.commit()
        run_due(db.session, now=T0)
        assert messages_to("lina@example.com") == [] and len(messages_to("wangqiang@example.com")) == 1
        [task] = db.session.scalars(select(Activity).where(Activity.kind == "task", Activity.lead_id.is_not(None)))
        assert (task.subject, task.lead_id, task.user_id) == ("打电话跟进", opener.id, owner_id)
        assert task.due_at.astimezone(UTC) == T0 + dt.timedelta(days=1)
        db.session.expire_all()
        assert (db.session.get(Lead, opener.id).status, db.session.get(Lead, silent.id).status) == ("working", "new")
        assert enrollment_of(opener, seq).status == enrollment_of(silent, seq).status == "completed"
        outcomes = dict(db.session.execute(select(EnrollmentStep.enrollment_id, EnrollmentStep.outcome)
                                           .where(EnrollmentStep.step_id == branch.id)).all())
        assert sorted(outcomes.values()) == ["else", "then"]


def test_steps_are_checked_with_a_message_that_says_where(app):
    with app.app_context(), force_locale("en"):
        seq = sequence({"kind": "email", "template_id": template().id}, {"kind": "wait", "days": 1}, status="draft")
        with pytest.raises(NurtureError, match="step 3, condition: position 7"):
            services.add_step(db.session, seq, SequenceStep(kind="branch", condition="公司规模 >"))
        with pytest.raises(NurtureError, match="template"):
            services.add_step(db.session, seq, SequenceStep(kind="email"))
        back = services.add_step(db.session, seq, SequenceStep(kind="branch", condition="邮件开启 > 1"))
        back.else_step_id = seq.steps[0].id
        with pytest.raises(NurtureError, match="forward"):
            services.check_step(db.session, back)
        with pytest.raises(NurtureError):
            services.add_step(db.session, seq, SequenceStep(kind="wait", days=0))
        with pytest.raises(NurtureError, match="HH:MM"):
            services.check_sequence(db.session, Sequence(name="x", status="draft", quiet_start="25:00",
                                                         quiet_end="08:00"))
        empty = Sequence(name="empty", status="draft")
        db.session.add(empty)
        db.session.flush()
        with pytest.raises(NurtureError, match="at least one step"):
            services.activate(db.session, empty)


def test_exits_conversion_qualification_unsubscribe_bounce_and_another_sequence(app):
    from plugins.crm.nurture.tracking import suppress

    with app.app_context():
        seq = sequence({"kind": "wait", "days": 1}, {"kind": "email", "template_id": template().id},
                       {"kind": "wait", "days": 7})
        other = sequence({"kind": "wait", "days": 5}, name="other")
        converted, qualified = lead("甲", "a@example.com"), lead("乙", "b@example.com")
        leaving, moving, bouncing = lead("丙", "c@example.com"), lead("丁", "d@example.com"), \
            lead("戊", "nobody@example.com")
        enroll(db.session, seq, [converted.id, qualified.id, leaving.id, moving.id, bouncing.id])
        db.session.commit()
        run_due(db.session, now=T0)
        converted.status, qualified.status = "converted", "qualified"
        suppress(db.session, "c@example.com", reason="unsubscribed", source="link")
        enroll(db.session, other, [moving.id])
        db.session.commit()
        assert enrollment_of(leaving, seq).exit_reason == "unsubscribed"  # at once
        assert enrollment_of(moving, seq).exit_reason == "enrolled_elsewhere"
        run_due(db.session, now=T0 + dt.timedelta(days=1, minutes=1))
        assert enrollment_of(converted, seq).exit_reason == "converted"
        assert enrollment_of(qualified, seq).exit_reason == "qualified"
        assert [m.to_address for m in db.session.scalars(select(Message))] == ["nobody@example.com"]
        db.session.execute(Message.__table__.update().values(status="failed", last_error="SMTP 550"))
        db.session.commit()
        run_due(db.session, now=T0 + dt.timedelta(days=1, minutes=2))
        assert enrollment_of(bouncing, seq).exit_reason == "bounced"
        from plugins.crm.nurture.tracking import suppressed

        assert suppressed(db.session, ["nobody@example.com"]) == {"nobody@example.com"}
        assert enroll(db.session, seq, [bouncing.id])["skipped"]["suppressed"] == 1


def test_pausing_a_sequence_holds_every_enrollment_until_it_resumes(app):
    with app.app_context():
        seq = sequence({"kind": "email", "template_id": template().id})
        leads = [lead(f"客户{i}", f"c{i}@example.com") for i in range(3)]
        enroll(db.session, seq, [row.id for row in leads])
        services.pause(db.session, seq)
        db.session.commit()
        assert run_due(db.session, now=T0).get("sent", 0) == 0
        services.resume(db.session, seq)
        db.session.commit()
        assert run_due(db.session, now=T0)["sent"] == 3


def test_editing_a_running_sequence_neither_repeats_nor_loses_steps(app):
    with app.app_context():
        first, later = template("first"), template("later")
        seq = sequence({"kind": "email", "template_id": first.id}, {"kind": "wait", "days": 3},
                       {"kind": "wait", "days": 1}, {"kind": "email", "template_id": later.id})
        person = lead()
        enroll(db.session, seq, [person.id])
        db.session.commit()
        run_due(db.session, now=T0)  # first mail; now waiting 3 days at step 3 (the 1-day wait)
        steps = seq.steps
        waiting_at = enrollment_of(person, seq).step_id
        assert waiting_at == steps[2].id
        services.remove_step(db.session, steps[2])  # the step it waits at goes away
        services.move_step(db.session, steps[0], +1)  # the sent mail moves after the first wait
        db.session.commit()
        run_due(db.session, now=T0 + dt.timedelta(days=3, minutes=1))
        subjects = [m.subject for m in messages_to("zhangwei@example.com")]
        assert len(subjects) == 2  # the removed wait is skipped, the moved first mail is not sent again
        assert enrollment_of(person, seq).status == "completed"


def test_a_reply_threaded_to_a_sequence_mail_ends_the_enrollment_over_real_smtp(make_app, smtp_server):
    app = make_app(**smtp_server.config(), BIGLEDGER_MAIL_FROM="BigLedger <sales@bigledger.example>")
    with app.app_context():
        seq = sequence({"kind": "email", "template_id": template().id}, {"kind": "wait", "days": 2},
                       {"kind": "email", "template_id": template("again").id})
        person = lead(language="zh")
        enroll(db.session, seq, [person.id])
        db.session.commit()
        run_due(db.session, now=T0)
        person, seq = person.id, seq.id
    assert send_due(app)["sent"] == 1
    [received] = smtp_server.recorder.messages()
    assert received["To"].addresses[0].addr_spec == "zhangwei@example.com"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "张伟，您好" in received.get_body(("html",)).get_content()
    assert "张伟" in received.get_body(("plain",)).get_content()
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "张伟 <zhangwei@example.com>", "sales@bigledger.example", "Re: 欢迎"
    reply["Message-ID"], reply["In-Reply-To"] = "<reply-1@example.com>", received["Message-ID"]
    reply.set_content("好的，请打电话给我。")
    with app.app_context():
        assert services.record_reply(db.session, parse_message(bytes(reply)).as_payload()) == 1
        db.session.commit()
        ended = enrollment_of(person, seq)
        assert (ended.status, ended.exit_reason) == ("exited", "replied")
        assert db.session.scalar(select(LeadFact.count).where(LeadFact.lead_id == person,
                                                              LeadFact.fact == "replied_email")) == 1
        run_due(db.session, now=T0 + dt.timedelta(days=3))
        assert len(messages_to("zhangwei@example.com")) == 1  # no second mail after the reply
        [stats] = services.statistics(db.session, seq)
        assert (stats["enrolled"], stats["sent"], stats["delivered"], stats["replied"]) == (1, 1, 1, 1)
        per_step = services.step_statistics(db.session, seq)
        assert [(s["kind"], s["sent"]) for s in per_step] == [("email", 1), ("wait", 0), ("email", 0)]


def test_rule_and_form_enrollment_happen_once_per_lead(app):
    with app.app_context():
        seq = sequence({"kind": "wait", "days": 1}, enroll_rule="公司规模 > 100")
        big = lead("大公司", "big@example.com", company_size=500)
        lead("小公司", "small@example.com", company_size=5)
        lead("无邮箱", None, company_size=800)
        db.session.commit()
        assert run_due(db.session, now=T0)["enrolled"] == 1
        assert enrollment_of(big, seq) is not None
        assert run_due(db.session, now=T0 + dt.timedelta(days=2)).get("enrolled", 0) == 0
        assert db.session.scalar(select(func.count()).select_from(Enrollment)) == 1


def test_two_runs_at_once_send_each_step_once(backend, app):
    if backend == "sqlite":
        pytest.skip("SQLite runs one writer at a time; the concurrent case is PostgreSQL's")
    with app.app_context():
        seq = sequence({"kind": "email", "template_id": template().id})
        enroll(db.session, seq, [lead(f"客户{i}", f"p{i}@example.com").id for i in range(300)])
        db.session.commit()
    results = []

    def worker():
        with app.app_context():
            results.append(run_due(db.session, now=T0, batch=20))
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.get("sent", 0) for r in results) == 300
    with app.app_context():
        assert db.session.scalar(select(func.count(func.distinct(Message.to_address)))) == 300
        assert db.session.scalar(select(func.count()).select_from(Message)) == 300


KILL_SCRIPT = textwrap.dedent("""
    import datetime as dt, os, sys
    sys.path.insert(0, {root!r})
    from tests.conftest import build_app
    from bigledger_core.db import db
    from plugins.crm.nurture.services import run_due
    app = build_app({url!r}, __import__("pathlib").Path({instance!r}))
    with app.app_context():
        print(run_due(db.session, now=dt.datetime(2027, 3, 2, 3, 0, tzinfo=dt.UTC), batch=25), flush=True)
""")


def test_a_run_killed_half_way_neither_loses_nor_repeats_a_send(app, database_url, slot, tmp_path):
    total = 1500
    with app.app_context():
        seq = sequence({"kind": "email", "template_id": template().id}, {"kind": "wait", "days": 1})
        enroll(db.session, seq, [lead(f"客户{i}", f"k{i}@example.com").id for i in range(total)])
        db.session.commit()
        wait_step = seq.steps[1].id
    script = tmp_path / "run.py"
    root = str(Path(__file__).resolve().parents[2])
    script.write_text(KILL_SCRIPT.format(root=root, url=database_url, instance=str(slot.instance)))
    process = subprocess.Popen([sys.executable, str(script)], cwd=root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=os.environ.copy())
    killed_at = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        with app.app_context():
            queued = db.session.scalar(select(func.count()).select_from(Message))
            db.session.remove()
        if 0 < queued < total:
            process.send_signal(signal.SIGKILL)
            killed_at = queued
            break
        time.sleep(0.01)
    process.wait(timeout=30)
    assert killed_at is not None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
    with app.app_context():
        before = db.session.scalar(select(func.count()).select_from(Message))
        assert before < total  # the killed run left work undone…
        counts = run_due(db.session, now=T0)  # …which the next run does
        assert db.session.scalar(select(func.count()).select_from(Message)) == total
        assert db.session.scalar(select(func.count(func.distinct(Message.to_address)))) == total
        assert db.session.scalar(select(func.count()).select_from(EnrollmentStep).where(
            EnrollmentStep.message_id.is_(None), EnrollmentStep.outcome == "sent")) == 0
        waited = db.session.scalar(select(func.count()).select_from(EnrollmentStep).where(
            EnrollmentStep.step_id == wait_step))
        assert waited == total and counts["sent"] == total - before


def test_erasing_a_person_mid_sequence_ends_it_and_later_runs_go_on(app):
    from plugins.crm.nurture.privacy import erase_person
    from plugins.crm.nurture.tracking import suppressed

    with app.app_context():
        seq = sequence({"kind": "email", "template_id": template().id}, {"kind": "wait", "days": 1},
                       {"kind": "email", "template_id": template("again").id})
        gone, staying = lead("赵六", "zhaoliu@example.com"), lead("钱七", "qianqi@example.com")
        enroll(db.session, seq, [gone.id, staying.id])
        db.session.commit()
        run_due(db.session, now=T0)  # both mails queued, not yet sent
        erase_person(db.session, "zhaoliu@example.com")
        db.session.commit()
        counts = run_due(db.session, now=T0 + dt.timedelta(days=1, minutes=1))
        assert counts.get("exited_bounced", 0) == 0 and counts["sent"] == 1
        assert enrollment_of(gone, seq).exit_reason == "erased"
        assert [m.status for m in messages_to("qianqi@example.com")] == ["queued", "queued"]
        assert suppressed(db.session, ["zhaoliu@example.com"]) == {"zhaoliu@example.com"}
        assert messages_to("zhaoliu@example.com") == []


DSN = """From: MAILER-DAEMON@mx.example.com
To: sales@bigledger.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <{dsn_id}@mx.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

The mail could not be delivered.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 no such user

--B
Content-Type: text/rfc822-headers

From: sales@bigledger.example
To: {recipient}
Message-ID: <{original}>
Subject: hi

--B--
"""


def test_a_bounce_report_in_the_inbox_suppresses_the_address_and_ends_the_sequence(make_app, smtp_server):
    from plugins.crm.leads.inbound import record as record_lead_mail
    from plugins.crm.nurture.tracking import suppressed

    app = make_app(**smtp_server.config(), BIGLEDGER_MAIL_FROM="BigLedger <sales@bigledger.example>",
                   BIGLEDGER_LEAD_INBOX=["sales@bigledger.example"])
    with app.app_context():
        seq = sequence({"kind": "email", "template_id": template().id}, {"kind": "wait", "days": 3},
                       {"kind": "email", "template_id": template("again").id})
        person = lead("周八", "zhouba@example.com")
        enroll(db.session, seq, [person.id])
        db.session.commit()
        run_due(db.session, now=T0)
        person, seq = person.id, seq.id
    assert send_due(app)["sent"] == 1  # the server took it; the bounce comes later, by mail
    [received] = smtp_server.recorder.messages()
    original = received["Message-ID"].strip("<>")
    with app.app_context():
        forged = parse_message(DSN.format(dsn_id="f1", recipient="zhouba@example.com",
                                          original="not-ours@elsewhere.example").encode()).as_payload()
        assert services.record_bounce(db.session, forged) == 0  # about someone else's mail: nothing happens
        report = parse_message(DSN.format(dsn_id="d1", recipient="zhouba@example.com", original=original).encode())
        assert report.failed_recipients == (("zhouba@example.com", "5.1.1", "smtp; 550 5.1.1 no such user"),)
        payload = report.as_payload()
        assert record_lead_mail(db.session, payload, {"sales@bigledger.example"}) is None  # not a new lead
        assert services.record_bounce(db.session, payload) == 1
        db.session.commit()
        ended = enrollment_of(person, seq)
        assert (ended.status, ended.exit_reason) == ("exited", "bounced")
        [sent] = messages_to("zhouba@example.com")
        assert sent.status == "failed" and "5.1.1" in sent.last_error
        assert suppressed(db.session, ["zhouba@example.com"]) == {"zhouba@example.com"}
        run_due(db.session, now=T0 + dt.timedelta(days=4))
        assert len(messages_to("zhouba@example.com")) == 1
        [stats] = services.statistics(db.session, seq)
        assert (stats["sent"], stats["delivered"]) == (1, 0)
