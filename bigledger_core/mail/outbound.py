"""Outgoing messages: queued in the caller's transaction, sent later by the scheduler.

`queue_email(session, …)` writes a `Message` row; `send_due(app)` (the `core.send_messages` job)
claims due messages, respects each provider's per-minute rate, and hands each one to the
`bigledger_send_message` hook, which the configured provider answers. A temporary failure (server
down, 4xx) keeps the message queued with back-off; a permanent one (5xx, no provider) marks it failed.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from email.utils import parseaddr

from email_validator import EmailNotValidError, validate_email
from flask_babel import gettext
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from ..db import db, utcnow
from ..errors import BigLedgerError
from ..models import Message

log = logging.getLogger(__name__)
MAX_BODY_CHARS = 2_000_000


class MessageError(BigLedgerError):
    """A message that cannot be queued (bad address, empty subject…); the text says which field."""


class TemporaryFailure(Exception):
    """Raised by a provider when sending may succeed later (server down, rate limited, 4xx)."""


class PermanentFailure(Exception):
    """Raised by a provider when retrying cannot help (address refused, 5xx)."""


@dataclass(frozen=True)
class OutgoingMessage:
    """What a delivery provider receives: everything needed to send one message."""

    id: int
    channel: str
    message_id: str
    to_address: str
    to_name: str | None
    from_address: str
    from_name: str | None
    subject: str
    text: str
    html: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _address(value: str, field_name: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise MessageError(gettext("%(field)s: %(value)s is not a valid e-mail address (%(reason)s)",
                                   field=field_name, value=value, reason=str(exc))) from None


def queue_email(session: Session, *, to: str, subject: str, text: str, html: str | None = None,
                to_name: str | None = None, sender: str | None = None, reply_to: str | None = None,
                unsubscribe_url: str | None = None, unsubscribe_mailto: str | None = None,
                headers: dict[str, str] | None = None, idempotency_key: str | None = None,
                source: str | None = None) -> Message:
    """Queue an e-mail in `session`'s transaction; it is sent after commit by the scheduler.

    `unsubscribe_url` / `unsubscribe_mailto` add `List-Unsubscribe` (and, for a URL, one-click
    `List-Unsubscribe-Post`). A message with an `idempotency_key` already queued is returned as is.
    """
    from flask import current_app

    if idempotency_key:
        existing = session.scalar(select(Message).where(Message.idempotency_key == idempotency_key))
        if existing is not None:
            return existing
    to_address = _address(to, "to")
    if not subject or not subject.strip():
        raise MessageError(gettext("subject: a message needs a subject"))
    if "\n" in subject or "\r" in subject:
        raise MessageError(gettext("subject: line breaks are not allowed"))
    if len(text) > MAX_BODY_CHARS or len(html or "") > MAX_BODY_CHARS:
        raise MessageError(gettext("body: longer than %(n)d characters", n=MAX_BODY_CHARS))
    from_name, from_address = parseaddr(sender or current_app.config["BIGLEDGER_MAIL_FROM"])
    from_address = _address(from_address, "from")
    extra = dict(headers or {})
    for name, value in extra.items():
        if any(c in f"{name}{value}" for c in "\r\n"):
            raise MessageError(gettext("headers: line breaks are not allowed in %(name)s", name=name))
    targets = []
    if unsubscribe_url:
        if not unsubscribe_url.startswith(("https://", "http://")):
            raise MessageError(gettext("unsubscribe_url: must be an http(s) address"))
        targets.append(f"<{unsubscribe_url}>")
        extra["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if unsubscribe_mailto:
        targets.append(f"<mailto:{_address(unsubscribe_mailto, 'unsubscribe_mailto')}>")
    if targets:
        extra["List-Unsubscribe"] = ", ".join(targets)
    domain = from_address.rsplit("@", 1)[-1]
    message = Message(channel="email", status="queued", to_address=to_address, to_name=to_name,
                      from_address=from_address, from_name=from_name or None,
                      reply_to=_address(reply_to, "reply_to") if reply_to else None,
                      subject=subject.strip(), body_text=text, body_html=html, headers=extra or None,
                      message_id=f"{uuid.uuid4().hex}@{domain}", idempotency_key=idempotency_key, source=source,
                      attempts=0, next_attempt_at=utcnow(), created_at=utcnow())
    session.add(message)
    return message


def _retry_delay(app, attempts: int) -> dt.timedelta:
    from ..events import retry_delay

    return retry_delay(app, attempts)


def send_due(app, limit: int = 100) -> dict[str, int]:
    """Send queued messages that are due, within the provider's rate. Returns counts by outcome."""
    host = app.extensions["bigledger"]
    provider = app.config["BIGLEDGER_MAIL_PROVIDER"]
    per_minute = int(app.config["BIGLEDGER_MAIL_RATE_PER_MINUTE"])
    max_attempts = int(app.config["BIGLEDGER_MAIL_MAX_ATTEMPTS"])
    counts = {"sent": 0, "retry": 0, "failed": 0}
    with app.app_context(), Session(db.engine) as session:
        now = utcnow()
        recent = session.scalar(select(func.count()).select_from(Message).where(
            Message.provider == provider, Message.sent_at >= now - dt.timedelta(minutes=1)))
        room = min(limit, per_minute - (recent or 0))
        if room <= 0:
            return counts
        due = or_(Message.status == "queued", Message.status == "sending")
        ids = list(session.scalars(
            select(Message.id).where(due, Message.next_attempt_at <= now,
                                     or_(Message.locked_until.is_(None), Message.locked_until < now))
            .order_by(Message.next_attempt_at, Message.id).limit(room)))
        if not ids:
            return counts
        claim = uuid.uuid4().hex
        session.execute(update(Message).where(
            Message.id.in_(ids), due, or_(Message.locked_until.is_(None), Message.locked_until < now))
            .values(status="sending", claim=claim, locked_until=now + dt.timedelta(minutes=10)))
        session.commit()
        for message in session.scalars(select(Message).where(Message.claim == claim).order_by(Message.id)):
            outgoing = OutgoingMessage(
                id=message.id, channel=message.channel, message_id=message.message_id,
                to_address=message.to_address, to_name=message.to_name, from_address=message.from_address,
                from_name=message.from_name, subject=message.subject, text=message.body_text,
                html=message.body_html, reply_to=message.reply_to, headers=dict(message.headers or {}))
            attempts = message.attempts + 1
            try:
                result = host.pm.hook.bigledger_send_message(channel=message.channel, provider=provider,
                                                             message=outgoing)
                if result is None:
                    raise PermanentFailure(f"no provider {provider!r} for channel {message.channel!r}")
            except TemporaryFailure as exc:
                final = attempts >= max_attempts
                message.status = "failed" if final else "queued"
                message.next_attempt_at = None if final else utcnow() + _retry_delay(app, attempts)
                message.last_error = str(exc)[:4000]
                counts["failed" if final else "retry"] += 1
            except Exception as exc:  # PermanentFailure, or a provider's bug: do not retry blindly
                message.status, message.next_attempt_at = "failed", None
                message.last_error = f"{type(exc).__name__}: {exc}"[:4000]
                counts["failed"] += 1
            else:
                message.status, message.sent_at, message.last_error = "sent", utcnow(), None
                message.provider_message_id = str(result)[:255]
                message.next_attempt_at = None
                counts["sent"] += 1
            message.attempts, message.provider, message.claim, message.locked_until = attempts, provider, None, None
            session.commit()
            if message.status != "sent":
                log.warning("message %s to %s: %s", message.id, message.to_address, message.last_error)
    return counts


def retry(session: Session, ids: list[int] | None = None) -> int:
    """Queue failed messages again (those in `ids`, or every failed one). Returns how many."""
    where = [Message.status == "failed"]
    if ids is not None:
        where.append(Message.id.in_(ids))
    return session.execute(update(Message).where(*where).values(
        status="queued", next_attempt_at=utcnow(), locked_until=None, claim=None)).rowcount
