"""Outgoing messages through a real SMTP server: what arrives, outages, refusals, rate, the log screen."""
from __future__ import annotations

import datetime as dt
import email
import email.policy
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from bigledger_core.db import db, utcnow
from bigledger_core.mail.outbound import MessageError, queue_email, send_due
from bigledger_core.models import Message
from tests.conftest import add_user, csrf_token, login


def queue(app, **kwargs) -> int:
    values = {"to": "zhangwei@example.com", "to_name": "张伟", "subject": "您的报价单 · Your quotation",
              "text": "张先生您好，附上报价。\nHello, here is the quotation.",
              "html": "<p>张先生您好，附上<b>报价</b>。</p><p>Hello, here is the quotation.</p>"}
    values.update(kwargs)
    with app.app_context():
        message = queue_email(db.session, **values)
        db.session.commit()
        return message.id


def row(app, message_id: int) -> Message:
    with app.app_context():
        message = db.session.get(Message, message_id)
        db.session.expunge(message)
        return message


def make_due(app) -> None:
    with app.app_context():
        db.session.execute(update(Message).where(Message.status == "queued")
                           .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()


def test_an_email_arrives_with_both_parts_chinese_headers_and_unsubscribe(make_app, smtp_server):
    app = make_app(BIGLEDGER_MAIL_FROM="BigLedger 销售部 <sales@bigledger.example>", **smtp_server.config())
    message_id = queue(app, unsubscribe_url="https://crm.example/u/abc", unsubscribe_mailto="unsub@bigledger.example")
    assert smtp_server.recorder.received == []  # queued, not sent inside the transaction
    assert send_due(app) == {"sent": 1, "retry": 0, "failed": 0}
    [(mail_from, rcpt, _raw)] = smtp_server.recorder.received
    assert mail_from == "sales@bigledger.example" and rcpt == ["zhangwei@example.com"]
    [received] = smtp_server.recorder.messages()
    assert received["Subject"] == "您的报价单 · Your quotation"
    assert received["To"].addresses[0].display_name == "张伟"
    assert received["From"].addresses[0].display_name == "BigLedger 销售部"
    assert "=?utf-8?" in _raw.decode("ascii").split("\r\n\r\n")[0].lower()  # encoded, not raw UTF-8 headers
    sent = row(app, message_id)
    assert received["Message-ID"] == f"<{sent.message_id}>"
    assert received["List-Unsubscribe"].strip() == "<https://crm.example/u/abc>, <mailto:unsub@bigledger.example>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received.get_content_type() == "multipart/alternative"
    assert "张先生您好，附上报价。" in received.get_body(("plain",)).get_content()
    assert "<b>报价</b>" in received.get_body(("html",)).get_content()
    assert (sent.status, sent.provider, sent.attempts) == ("sent", "smtp", 1)
    assert sent.provider_message_id == sent.message_id and sent.sent_at is not None


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_mail_goes_out_over_tls_with_a_login(make_app, smtp_server_factory, security):
    server = smtp_server_factory(security, auth=("crm@example.com", "s3cret-pass"))
    app = make_app(**server.config())
    message_id = queue(app)
    assert send_due(app) == {"sent": 1, "retry": 0, "failed": 0}
    assert [m["Subject"] for m in server.recorder.messages()] == ["您的报价单 · Your quotation"]
    assert row(app, message_id).status == "sent"


def test_a_wrong_smtp_password_fails_the_message_with_the_servers_answer(make_app, smtp_server_factory):
    server = smtp_server_factory("starttls", auth=("crm@example.com", "right"))
    app = make_app(**{**server.config(), "BIGLEDGER_SMTP_PASSWORD": "wrong"})
    message_id = queue(app)
    assert send_due(app)["failed"] == 1
    assert "535" in row(app, message_id).last_error and server.recorder.received == []


def test_an_untrusted_certificate_keeps_mail_queued(make_app, smtp_server_factory):
    server = smtp_server_factory("starttls")
    app = make_app(**{**server.config(), "BIGLEDGER_SMTP_CA_FILE": None})
    message_id = queue(app)
    assert send_due(app)["retry"] == 1
    assert "CERTIFICATE_VERIFY_FAILED" in row(app, message_id).last_error and server.recorder.received == []


def test_mail_stays_queued_while_smtp_is_down_and_goes_out_once_when_it_is_back(make_app, smtp_server):
    app = make_app(**smtp_server.config())
    smtp_server.stop()
    message_id = queue(app)
    assert send_due(app) == {"sent": 0, "retry": 1, "failed": 0}
    waiting = row(app, message_id)
    assert waiting.status == "queued" and waiting.attempts == 1 and "unavailable" in waiting.last_error
    assert send_due(app)["retry"] == 0  # waits for its back-off
    smtp_server.start()
    make_due(app)
    assert send_due(app)["sent"] == 1
    assert send_due(app) == {"sent": 0, "retry": 0, "failed": 0}
    assert len(smtp_server.recorder.received) == 1
    assert row(app, message_id).status == "sent" and row(app, message_id).attempts == 2


def test_a_refused_recipient_fails_without_retrying(make_app, smtp_server):
    app = make_app(**smtp_server.config())
    message_id = queue(app, to="nobody@example.com")
    assert send_due(app) == {"sent": 0, "retry": 0, "failed": 1}
    failed = row(app, message_id)
    assert failed.status == "failed" and "nobody@example.com" in failed.last_error and failed.next_attempt_at is None


def test_a_provider_sends_no_more_than_its_rate_per_minute(make_app, smtp_server):
    app = make_app(BIGLEDGER_MAIL_RATE_PER_MINUTE=2, **smtp_server.config())
    for n in range(5):
        queue(app, to=f"buyer{n}@example.com")
    assert send_due(app)["sent"] == 2
    assert send_due(app)["sent"] == 0
    assert len(smtp_server.recorder.received) == 2
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message).where(Message.status == "queued")) == 3


@pytest.mark.parametrize("field, kwargs, expected", [
    ("to", {"to": "not-an-address"}, "to: not-an-address is not a valid e-mail address"),
    ("subject", {"subject": "  "}, "subject: a message needs a subject"),
    ("subject", {"subject": "hi\nBcc: victim@example.com"}, "subject: line breaks are not allowed"),
    ("headers", {"headers": {"X-Campaign": "a\r\nBcc: x@example.com"}}, "headers: line breaks are not allowed"),
    ("unsubscribe", {"unsubscribe_url": "javascript:alert(1)"}, "unsubscribe_url: must be an http(s) address"),
])
def test_bad_messages_are_refused_naming_the_field_and_nothing_is_queued(app, field, kwargs, expected):
    with app.test_request_context(headers={"Accept-Language": "en"}):
        with pytest.raises(MessageError) as err:
            queue_email(db.session, **{"to": "a@example.com", "subject": "s", "text": "t", **kwargs})
        assert expected in str(err.value)
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(Message)) == 0


def test_errors_are_translated(app):
    with app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        with pytest.raises(MessageError) as err:
            queue_email(db.session, to="a@example.com", subject=" ", text="t")
    assert "主题" in str(err.value)


def test_the_same_idempotency_key_queues_one_message(app):
    first = queue(app, idempotency_key="campaign-3:contact-9")
    second = queue(app, idempotency_key="campaign-3:contact-9")
    assert first == second


def test_development_writes_eml_files_under_the_instance_folder(app):
    assert app.config["BIGLEDGER_MAIL_PROVIDER"] == "file"
    message_id = queue(app)
    assert send_due(app)["sent"] == 1
    [path] = list((Path(app.config["INSTANCE_PATH"]) / "mail" / "outbox").glob("*.eml"))
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "您的报价单 · Your quotation"
    assert parsed["Message-ID"] == f"<{row(app, message_id).message_id}>"


def test_the_message_log_lists_failures_and_retries_them(make_app, smtp_server, client):
    app = make_app(**smtp_server.config())
    client = app.test_client()
    message_id = queue(app, to="nobody@example.com")
    send_due(app)
    add_user(app, "admin", "Admin")
    login(client, "admin")
    page = client.get("/messagesview/list/?_flt_0_status=failed").get_data(as_text=True)
    assert "nobody@example.com" in page and "您的报价单" in page
    assert "550" in client.get(f"/messagesview/show/{message_id}").get_data(as_text=True)
    response = client.post("/messagesview/action_post", data={
        "action": "retry", "rowid": [str(message_id)], "csrf_token": csrf_token(client, "/messagesview/list/")})
    assert response.status_code == 302 and row(app, message_id).status == "queued"
