"""Domain events: `emit` inside a transaction, delivered to hook implementations after it commits.

A rolled-back transaction delivers nothing. Each subscriber is called on its own: one that raises
is logged and never breaks the request or the other subscribers.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from .db import utcnow

log = logging.getLogger(__name__)
_PENDING = "bigledger_pending_events"


@dataclass(frozen=True)
class Event:
    """One domain event. `id` is the idempotency key subscribers may use to ignore a repeat."""

    name: str
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: dt.datetime = field(default_factory=utcnow)
    version: int = 1


def emit(session: Session, name: str, payload: dict[str, Any]) -> Event:
    """Queue event `name` on `session`; it is delivered once the session's transaction commits."""
    event = Event(name=name, payload=dict(payload))
    session.info.setdefault(_PENDING, []).append(event)
    return event


@sa_event.listens_for(Session, "after_commit")
def _deliver_after_commit(session: Session) -> None:
    events = session.info.pop(_PENDING, [])
    if not events or not has_app_context():
        return
    host = current_app.extensions["bigledger"]
    for event in events:
        deliver(host, event)


@sa_event.listens_for(Session, "after_rollback")
def _drop_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def deliver(host, event: Event) -> None:
    """Call every enabled subscriber of `event.name`, each isolated from the others' failures.

    Each subscriber runs in an app context of its own, so `db.session` there is a fresh session it may
    use and commit (the session that emitted the event has just committed and can run no more SQL).
    """
    from .db import db
    from .modules import enabled_modules

    with Session(db.engine) as session:
        modules = enabled_modules(host, session)
    app = current_app._get_current_object()
    for impl in host.hookimpls(event.name, modules):
        with app.app_context():
            try:
                impl.function(event=event)
            except Exception:  # a subscriber's failure is its own
                db.session.rollback()
                log.exception("subscriber %s of event %s (%s) failed", impl.plugin_name, event.name, event.id)
            finally:
                db.session.remove()
