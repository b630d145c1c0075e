"""Incoming mail: store each message once (by Message-ID) and emit `bigledger_inbound_message`.

Both the IMAP polling job and `bigledger mail ingest FILE.eml` come through `ingest`; a subscriber
(email-to-lead, two-way sync…) implements the `bigledger_inbound_message` hook.
"""
from __future__ import annotations

import hashlib
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import db, utcnow
from ..events import emit
from ..models import InboundAttachment, InboundMessage, MailboxState
from .inbound import parse_message

log = logging.getLogger(__name__)
MAX_TEXT_IN_EVENT = 100_000


def _key(message_id: str) -> str:
    return hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()


def ingest(session: Session, raw: bytes, source: str) -> tuple[InboundMessage, bool]:
    """Parse and store one raw e-mail in `session`'s transaction (the caller commits).

    Returns (row, created); a Message-ID seen before returns the stored row and emits nothing.
    Raises ValueError for bytes that are not an e-mail.
    """
    parsed = parse_message(raw)
    key = _key(parsed.message_id)
    existing = session.scalar(select(InboundMessage).where(InboundMessage.message_key == key))
    if existing is not None:
        return existing, False
    row = InboundMessage(
        message_key=key, message_id=parsed.message_id, in_reply_to=parsed.in_reply_to,
        references=list(parsed.references), sender_name=parsed.sender[0] or None,
        sender_address=parsed.sender[1], subject=parsed.subject, sent_at=parsed.date,
        recipients={"to": [list(a) for a in parsed.to], "cc": [list(a) for a in parsed.cc]},
        body_text=parsed.text, body_html=parsed.html, source=source[:200], received_at=utcnow())
    row.attachments = [InboundAttachment(filename=a.filename[:255], content_type=a.content_type[:255],
                                         size=len(a.data), data=a.data) for a in parsed.attachments]
    session.add(row)
    session.flush()
    payload = parsed.as_payload()
    payload.update(id=row.id, source=row.source, text=(parsed.text or "")[:MAX_TEXT_IN_EVENT],
                   html=(parsed.html or "")[:MAX_TEXT_IN_EVENT] or None,
                   attachments=[{"id": a.id, "filename": a.filename, "content_type": a.content_type,
                                 "size": a.size} for a in row.attachments])
    emit(session, "bigledger_inbound_message", payload)
    return row, True


def poll_imap(app) -> int:
    """Read new messages from the configured IMAP mailbox; returns how many were new.

    The last UID read is saved in the transaction that stores the messages, so a restart neither
    skips nor re-processes one; a changed UIDVALIDITY starts the mailbox over (duplicates are
    recognised by Message-ID).
    """
    from .imap import ImapSettings, fetch_since, mark_seen

    config = app.config
    settings = ImapSettings(host=config["BIGLEDGER_IMAP_HOST"], port=int(config["BIGLEDGER_IMAP_PORT"]),
                            security=config["BIGLEDGER_IMAP_SECURITY"],
                            username=config["BIGLEDGER_IMAP_USERNAME"] or "",
                            password=config["BIGLEDGER_IMAP_PASSWORD"] or "",
                            mailbox=config["BIGLEDGER_IMAP_MAILBOX"])
    name = f"imap://{settings.username}@{settings.host}:{settings.port}/{settings.mailbox}"
    new = 0
    while True:
        with Session(db.engine) as session:
            state = session.get(MailboxState, name) or MailboxState(name=name, last_uid=0)
            uidvalidity, batch = fetch_since(settings, state.last_uid, state.uidvalidity, limit=50)
            if state.uidvalidity not in (None, uidvalidity):
                state.last_uid = 0
            state.uidvalidity = uidvalidity
            seen = []
            for uid, raw in batch:
                try:
                    _row, created = ingest(session, raw, f"imap:{settings.mailbox}")
                    new += created
                except ValueError as exc:
                    log.warning("%s UID %s is not a readable e-mail: %s", name, uid, exc)
                state.last_uid = max(state.last_uid, uid)
                seen.append(uid)
            state.updated_at = utcnow()
            session.add(state)
            session.commit()
        if seen and config["BIGLEDGER_IMAP_MARK_SEEN"]:
            mark_seen(settings, seen)
        if len(batch) < 50:
            return new
