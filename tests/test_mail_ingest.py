"""Received mail reaches the inbound hook once: from .eml files on the command line and from a real
IMAP server, across restarts."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from bigledger_core.cli import cli
from bigledger_core.db import db
from bigledger_core.mail.ingest import poll_imap
from bigledger_core.models import InboundAttachment, InboundMessage, MailboxState
from tests.sample_plugin import plugin as sample

MAIL = Path(__file__).parent / "data" / "mail"


@pytest.fixture(autouse=True)
def clear_inbound():
    sample.BEHAVIOUR["bigledger_inbound_message"] = "ok"
    sample.INBOUND.clear()


def test_mail_ingest_stores_a_message_once_and_tells_subscribers(app):
    runner = CliRunner()
    path = str(MAIL / "utf8_alternative.eml")
    with app.app_context():
        first = runner.invoke(cli, ["mail", "ingest", path], catch_exceptions=False)
        assert first.exit_code == 0 and "stored as message" in first.output and "回复：第三季度报价单确认" in first.output
        again = runner.invoke(cli, ["mail", "ingest", path], catch_exceptions=False)
        assert again.exit_code == 0 and "already received" in again.output
        assert db.session.scalar(select(func.count()).select_from(InboundMessage)) == 1
    [event] = sample.INBOUND
    assert event.payload["subject"] == "回复：第三季度报价单确认"
    assert event.payload["in_reply_to"] and len(event.payload["references"]) == 2
    assert event.payload["source"] == "file:utf8_alternative.eml"


def test_attachments_are_kept_with_their_chinese_names_and_bytes(app):
    runner = CliRunner()
    with app.app_context():
        result = runner.invoke(cli, ["mail", "ingest", str(MAIL / "gbk_base64_attachment.eml")],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        attachments = db.session.scalars(select(InboundAttachment).order_by(InboundAttachment.id)).all()
        names = [a.filename for a in attachments]
        assert "报价单.pdf" in names
        pdf = attachments[names.index("报价单.pdf")]
        assert pdf.data.startswith(b"%PDF") and pdf.size == len(pdf.data)
    [event] = sample.INBOUND
    assert {a["filename"] for a in event.payload["attachments"]} == set(names)


def test_a_file_that_is_not_mail_is_refused_in_one_line(app, tmp_path):
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    with app.app_context():
        result = CliRunner().invoke(cli, ["mail", "ingest", str(empty)])
        assert result.exit_code == 1 and str(empty) in result.output
        assert db.session.scalar(select(func.count()).select_from(InboundMessage)) == 0


def _imap_app(make_app, server):
    s = server.settings
    return make_app(BIGLEDGER_IMAP_HOST=s.host, BIGLEDGER_IMAP_PORT=s.port, BIGLEDGER_IMAP_SECURITY=s.security,
                    BIGLEDGER_IMAP_USERNAME=s.username, BIGLEDGER_IMAP_PASSWORD=s.password)


def test_imap_polling_reads_new_mail_once_marks_it_read_and_survives_a_restart(make_app, imap_server):
    for name in ("utf8_alternative.eml", "gb2312_qp.eml"):
        imap_server.append((MAIL / name).read_bytes())
    app = _imap_app(make_app, imap_server)
    with app.app_context():
        assert poll_imap(app) == 2
        assert poll_imap(app) == 0
    assert [e.payload["subject"] for e in sample.INBOUND] == ["回复：第三季度报价单确认", "镕达公司订单确认"]
    assert imap_server.seen_uids() == imap_server.uids()
    imap_server.append((MAIL / "html_only.eml").read_bytes())
    restarted = _imap_app(make_app, imap_server)  # a new process: only the saved state carries over
    with restarted.app_context():
        assert poll_imap(restarted) == 1
        state = db.session.scalars(select(MailboxState)).one()
        assert state.last_uid == max(imap_server.uids()) and state.uidvalidity
        assert db.session.scalar(select(func.count()).select_from(InboundMessage)) == 3
    assert len(sample.INBOUND) == 3


def test_the_imap_job_is_offered_only_when_a_server_is_configured(make_app, imap_server):
    from bigledger_core.scheduler import job_specs

    app = _imap_app(make_app, imap_server)
    with app.app_context():
        specs = job_specs(app.extensions["bigledger"], ["core"])
    assert specs["core.poll_imap"].trigger_args == {"seconds": 60}
