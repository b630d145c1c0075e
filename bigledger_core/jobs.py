"""The host's own scheduled jobs: deliver events, send messages, poll IMAP, purge old rows."""
from __future__ import annotations

import datetime as dt

from flask import current_app
from sqlalchemy import delete
from sqlalchemy.orm import Session

from .db import db, utcnow
from .models import JobRun


def deliver_events() -> None:
    """Deliver every due event delivery (batches until none is left)."""
    from .events import deliver_due

    app = current_app._get_current_object()
    while sum(deliver_due(app, limit=500).values()) >= 500:
        pass


def send_messages() -> None:
    """Send due messages within the provider's rate."""
    from .mail.outbound import send_due

    send_due(current_app._get_current_object())


def poll_imap() -> None:
    """Read new mail from the configured IMAP mailbox."""
    from .mail.ingest import poll_imap as poll

    poll(current_app._get_current_object())


def purge() -> None:
    """Delete delivered events and finished job runs older than the retention period."""
    from .events import purge as purge_events

    keep = dt.timedelta(days=int(current_app.config["BIGLEDGER_EVENT_RETENTION_DAYS"]))
    with Session(db.engine) as session:
        purge_events(session, keep)
        session.execute(delete(JobRun).where(JobRun.started_at < utcnow() - keep, JobRun.status != "running"))
        session.commit()
