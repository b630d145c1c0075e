"""Inbound e-mail to the lead inbox becomes a lead (or a timeline entry for a known contact).

Mail sent to one of the addresses in BIGLEDGER_LEAD_INBOX (To or Cc) becomes a lead with source "email",
once per Message-ID. When the sender is already a contact (by e-mail address), the mail is recorded as an
e-mail activity on that contact's timeline instead. Mail to other addresses is left alone.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

from flask import current_app
from flask_babel import gettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from bigledger_core.db import db, utcnow

from ..models import Activity, Contact, Email
from ..normalize import InvalidValue, normalize_email
from .forms import plain_text
from .models import Lead
from .services import LIMITS, create_lead

log = logging.getLogger(__name__)


def _address(value: Any) -> str | None:
    try:
        return normalize_email(str(value or ""))
    except InvalidValue:
        return None


def inbox_addresses(config) -> set[str]:
    """The configured lead inbox addresses, normalized."""
    return {a for a in (_address(item) for item in config.get("BIGLEDGER_LEAD_INBOX") or []) if a}


def idempotency_key(message_id: str) -> str:
    """`email:<Message-ID>`, or a digest of it when the Message-ID is too long for the key."""
    key = f"email:{message_id}"
    return key if len(key) <= 200 else "email:sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


def _pair(value) -> tuple[str, str]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return str(value[0] or ""), str(value[1] or "")
    return "", str(value or "")


def _sent_at(value) -> dt.datetime | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def record(session: Session, payload: dict, inbox: set[str]) -> tuple[str, Any] | None:
    """Turn one received message (the `bigledger_inbound_message` payload) into a lead or a contact's
    activity. Returns ("lead", lead), ("activity", activity) or None when the message is not for the inbox.
    The same message twice gives the same lead (Lead.idempotency_key) or the same activity."""
    recipients = {_address(_pair(item)[1]) for item in (payload.get("to") or []) + (payload.get("cc") or [])}
    if not inbox or not (recipients & inbox) or payload.get("bounce"):  # a bounce is not a lead
        return None
    name, raw_address = _pair(payload.get("sender"))
    address = _address(raw_address)
    if address in inbox:  # our own mail (an auto-reply, a loop): not a lead
        return None
    message_id = str(payload.get("message_id") or "").strip().strip("<>").strip()
    subject = plain_text(payload.get("subject"), limit=300)
    text = plain_text(payload.get("text"), multiline=True, limit=LIMITS["message"])
    occurred = _sent_at(payload.get("date")) or utcnow()
    contact_id = session.scalar(
        select(Contact.id).join(Email, Email.contact_id == Contact.id)
        .where(Email.address == address, Contact.merged_into_id.is_(None))
        .order_by(Email.is_primary.desc(), Contact.id).limit(1)) if address else None
    if contact_id is not None:
        subject = subject or gettext("(no subject)")
        # delivery is at least once: the same mail again finds the activity it made
        existing = session.scalar(select(Activity).where(Activity.contact_id == contact_id,
                                                         Activity.kind == "email", Activity.subject == subject,
                                                         Activity.occurred_at == occurred).limit(1))
        if existing is not None:
            return "activity", existing
        activity = Activity(kind="email", subject=subject, body=text or None, occurred_at=occurred, done=True,
                            contact_id=contact_id)
        session.add(activity)
        session.flush()
        return "activity", activity
    display = plain_text(name, limit=LIMITS["name"]) or address or plain_text(raw_address, limit=LIMITS["name"])
    lead = Lead(name=display or "?", email=address, message=text or None, source="email", channel="email")
    key = idempotency_key(message_id) if message_id else None
    lead, _created = create_lead(session, lead, idempotency_key=key)
    return "lead", lead


def handle(event) -> None:
    """Called for every received e-mail (`bigledger_inbound_message`)."""
    inbox = inbox_addresses(current_app.config)
    if not inbox:
        return
    outcome = record(db.session, event.payload, inbox)
    if outcome is not None:
        db.session.commit()
        log.info("inbound mail %s recorded as %s %s", event.payload.get("message_id"), outcome[0], outcome[1].id)
