"""Mail to the lead inbox becomes a lead once per message; mail from a known contact goes on the contact's
timeline instead; mail to other addresses is left alone."""
from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlalchemy import func, select

from bigledger_core.db import db
from bigledger_core.events import Event
from bigledger_core.mail.ingest import ingest
from plugins.crm.leads import inbound
from plugins.crm.leads.models import Lead
from plugins.crm.models import Activity, Contact, Email


@pytest.fixture
def app(make_app):
    return make_app.reused(BIGLEDGER_LEAD_INBOX=["Leads@Example.com", "sales@example.com"])


def mail(*, to="BigLedger 销售 <leads@example.com>", sender='"王小明" <Wang.XM@Example.net>', subject="咨询报价",
         body="您好，想了解贵公司的 CRM 报价。\n<script>alert(1)</script>", message_id="<q1@mail.example.net>",
         cc=None) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    if cc:
        message["Cc"] = cc
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))))
    message.set_content(body)
    return message.as_bytes()


def receive(app, raw: bytes) -> None:
    with app.app_context():
        ingest(db.session, raw, "test")
        db.session.commit()  # the event is delivered before commit() returns (inline in tests)


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_mail_to_the_inbox_becomes_one_lead(app):
    receive(app, mail())
    receive(app, mail())  # the same message again (stored once by Message-ID)
    with app.app_context():
        [lead] = db.session.scalars(select(Lead)).all()
        assert (lead.name, lead.email, lead.source, lead.channel) == ("王小明", "wang.xm@example.net", "email", "email")
        assert lead.message == "您好，想了解贵公司的 CRM 报价。\n<script>alert(1)</script>"
        assert lead.idempotency_key == "email:q1@mail.example.net"
        # a second delivery of the same event (at-least-once) finds the same lead
        event = Event(name="bigledger_inbound_message", payload={
            "message_id": "<q1@mail.example.net>", "sender": ["王小明", "wang.xm@example.net"],
            "to": [["", "leads@example.com"]], "cc": [], "subject": "咨询报价", "text": "again"})
        inbound.handle(event)
        assert db.session.scalar(select(func.count()).select_from(Lead)) == 1
    assert count(app, Activity) == 0


def test_the_name_is_the_address_when_the_sender_gives_none_and_long_text_is_cut(app):
    receive(app, mail(sender="li.na@example.org", cc="Sales <SALES@example.com>", to="someone@example.org",
                      body="长" * 8000, message_id="<q2@example.org>"))
    with app.app_context():
        [lead] = db.session.scalars(select(Lead)).all()
        assert (lead.name, lead.email) == ("li.na@example.org", "li.na@example.org")
        assert len(lead.message) == 5000


def test_mail_from_a_known_contact_goes_on_the_contacts_timeline(app):
    with app.app_context():
        contact = Contact(full_name="张伟", emails=[Email(address="zhang.wei@example.com", is_primary=True)])
        db.session.add(contact)
        db.session.commit()
        contact_id = contact.id
    raw = mail(sender="Zhang Wei <Zhang.Wei@EXAMPLE.com>", subject="回复：第三季度报价单确认", body="已确认，谢谢。")
    receive(app, raw)
    with app.app_context():
        [activity] = db.session.scalars(select(Activity)).all()
        assert (activity.kind, activity.contact_id, activity.subject, activity.body) == (
            "email", contact_id, "回复：第三季度报价单确认", "已确认，谢谢。")
        assert activity.occurred_at.astimezone(dt.UTC) == dt.datetime(2026, 3, 2, 1, 30, tzinfo=dt.UTC)
        event = Event(name="bigledger_inbound_message", payload={
            "message_id": "<q1@mail.example.net>", "sender": ["", "zhang.wei@example.com"],
            "to": [["", "leads@example.com"]], "subject": "回复：第三季度报价单确认", "text": "已确认，谢谢。",
            "date": "2026-03-02T09:30:00+08:00"})
        inbound.handle(event)  # delivered twice: still one entry
        assert db.session.scalar(select(func.count()).select_from(Activity)) == 1
    assert count(app, Lead) == 0


def test_mail_to_other_addresses_is_left_alone(app):
    receive(app, mail(to="support@example.com", message_id="<other@example.net>"))
    assert count(app, Lead) == 0 and count(app, Activity) == 0


def test_without_an_inbox_no_mail_becomes_a_lead(make_app):
    app = make_app()
    receive(app, mail())
    assert count(app, Lead) == 0


def test_mail_from_the_inbox_itself_is_not_a_lead(app):
    receive(app, mail(sender="leads@example.com", to="sales@example.com", message_id="<loop@example.com>"))
    assert count(app, Lead) == 0
