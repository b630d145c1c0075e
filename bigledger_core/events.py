"""Domain events through a transactional outbox.

`emit(session, name, payload)` validates the payload against the event type's schema and writes the
event, and one delivery row per subscribed module, in the caller's transaction: a rollback leaves
nothing. After commit the delivering process calls each subscriber on its own thread with a timeout
and records the outcome of each delivery separately; failures are retried with exponential back-off
and end up "dead" after `BIGLEDGER_EVENT_MAX_ATTEMPTS`, where an admin can retry them. Delivery is
at-least-once: subscribers get the event id to recognise a repeat.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import traceback
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, has_app_context
from marshmallow import Schema, ValidationError
from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from .db import db, utcnow
from .errors import BigLedgerError
from .models import EventDelivery, OutboxEvent

log = logging.getLogger(__name__)
_PENDING = "bigledger_pending_events"  # ids to deliver after commit
_ROWS = "bigledger_outbox_rows"  # outbox and delivery rows to write before commit
_ENABLED = "bigledger_enabled_modules"  # the enabled modules, read once per transaction
_MARKS = "bigledger_savepoint_marks"  # event counts when each open SAVEPOINT began
STATUSES = ("pending", "failed", "dead", "delivered")
_RETRYABLE = ("pending", "failed")
_MAX_DELAY = dt.timedelta(hours=6)
_first_attempts = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bigledger-events")


class EventError(BigLedgerError):
    """An event that cannot be emitted: unknown name or a payload its schema refuses."""


@dataclass(frozen=True)
class EventType:
    """A kind of event a module emits. `schema` validates the payload; bump `version` when the payload
    changes incompatibly. `description` ({"zh", "en"}) and the schema's fields are documented."""

    name: str
    schema: type[Schema]
    version: int = 1
    description: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """One delivered event. `id` is the idempotency key; `attempt` counts deliveries to this subscriber."""

    name: str
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: dt.datetime = field(default_factory=utcnow)
    version: int = 1
    attempt: int = 1


def event_types(host) -> dict[str, EventType]:
    """Every event type declared by a loaded plugin (`bigledger_event_types`), by name."""
    cached = getattr(host, "_event_types", None)
    if cached is None:
        cached = {}
        for plugin, answer in host.call_each("bigledger_event_types"):
            for etype in answer or []:
                if etype.name in cached:
                    raise EventError(f"plugin {plugin}: event {etype.name!r} is already declared")
                cached[etype.name] = etype
        host._event_types = cached
    return cached


def _messages(errors: Any, prefix: str = "") -> list[str]:
    if isinstance(errors, dict):
        return [m for key, value in errors.items() for m in _messages(value, f"{prefix}{key}.")]
    if isinstance(errors, list) and all(isinstance(item, str) for item in errors):
        return [f"{prefix.rstrip('.')}: {' '.join(errors)}"]
    return [f"{prefix.rstrip('.')}: {errors}"]


_SCHEMAS: dict[type, Any] = {}


def emit(session: Session, name: str, payload: dict[str, Any]) -> Event:
    """Add event `name` to `session`'s transaction; it is written to the outbox when the transaction
    commits (nothing if it rolls back) and delivered after that.

    Raises EventError (and writes nothing) for an undeclared event or a payload its schema refuses.
    """
    from .modules import enabled_modules

    host = current_app.extensions["bigledger"]
    etype = event_types(host).get(name)
    if etype is None:
        raise EventError(f"event {name!r} is not declared by any plugin (see bigledger_event_types)")
    schema = _SCHEMAS.get(etype.schema)
    if schema is None:  # one instance per schema: building one costs more than checking a payload with it
        schema = _SCHEMAS[etype.schema] = etype.schema()
    try:
        data = schema.dump(schema.load(payload))
    except ValidationError as exc:
        raise EventError(f"event {name!r} refused, its payload is invalid: "
                         + "; ".join(_messages(exc.messages))) from None
    event = Event(name=name, payload=data, version=etype.version)
    if _ENABLED not in session.info:  # read once per transaction
        session.info[_ENABLED] = enabled_modules(host, session)
    subscribers = [impl.plugin_name for impl in host.hookimpls(name, session.info[_ENABLED])]
    if not subscribers:  # deliveries are fanned out now, so nobody could ever receive it
        return event
    rows = session.info.setdefault(_ROWS, ([], []))
    rows[0].append({"id": event.id, "name": name, "version": etype.version, "payload": data,
                    "occurred_at": event.occurred_at})
    rows[1].extend({"event_id": event.id, "subscriber": plugin, "status": "pending", "attempts": 0,
                    "next_attempt_at": event.occurred_at} for plugin in subscribers)
    session.info.setdefault(_PENDING, []).append(event.id)
    return event


@sa_event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction) -> None:
    """Remember how many events a SAVEPOINT starts with, so rolling it back drops the ones it emitted."""
    if transaction.nested:
        events, deliveries = session.info.get(_ROWS, ([], []))
        session.info.setdefault(_MARKS, {})[id(transaction)] = (
            len(events), len(deliveries), len(session.info.get(_PENDING, [])))


@sa_event.listens_for(Session, "after_soft_rollback")
def _drop_savepoint_events(session: Session, previous_transaction) -> None:
    marks = session.info.get(_MARKS, {}).pop(id(previous_transaction), None)
    if previous_transaction.nested and marks is not None:
        events, deliveries = session.info.get(_ROWS, ([], []))
        del events[marks[0]:], deliveries[marks[1]:]
        del session.info.get(_PENDING, [])[marks[2]:]


@sa_event.listens_for(Session, "before_commit")
def _write_outbox(session: Session) -> None:
    """Write the transaction's events in two multi-row INSERTs, just before it commits."""
    if session.in_nested_transaction():  # releasing a SAVEPOINT: the events wait for the real commit
        return
    if session._is_clean() is False:  # pending changes may emit events while they flush
        session.flush()
    session.info.pop(_ENABLED, None)
    session.info.pop(_MARKS, None)
    events, deliveries = session.info.pop(_ROWS, ([], []))
    if events:
        session.execute(insert(OutboxEvent), events)
    if deliveries:
        session.execute(insert(EventDelivery), deliveries)


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    ids = session.info.pop(_PENDING, [])
    if not ids or not has_app_context():
        return  # the scheduler delivers what is left
    app = current_app._get_current_object()
    mode = app.config.get("BIGLEDGER_EVENT_FIRST_ATTEMPT", "background")
    if mode == "inline":
        deliver_due(app, event_ids=ids)
    elif mode == "background":
        _first_attempts.submit(_deliver_quietly, app, ids)


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    root = session.get_transaction()
    if root is not None and root.is_active:
        return  # only a SAVEPOINT rolled back: `_drop_savepoint_events` handles it
    for key in (_PENDING, _ROWS, _ENABLED, _MARKS):
        session.info.pop(key, None)


def _deliver_quietly(app, ids: list[str]) -> None:
    try:
        deliver_due(app, event_ids=ids)
    except Exception:  # the scheduler will try again
        log.exception("first delivery attempt of events %s failed", ids)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def retry_delay(app, attempts: int) -> dt.timedelta:
    """Back-off before attempt `attempts + 1`: the base delay doubled per failed attempt, capped."""
    base = dt.timedelta(seconds=app.config["BIGLEDGER_EVENT_RETRY_SECONDS"])
    return min(base * (2 ** max(attempts - 1, 0)), _MAX_DELAY)


def deliver_due(app, event_ids: Iterable[str] | None = None, limit: int = 500) -> dict[str, int]:
    """Deliver deliveries that are due (optionally only those of `event_ids`), at most `limit`.

    Safe to run in several processes at once: each delivery is claimed by one of them. Returns counts
    by outcome ({"delivered": n, "failed": n, "dead": n}).
    """
    from .modules import enabled_modules

    host = app.extensions["bigledger"]
    timeout = float(app.config["BIGLEDGER_EVENT_TIMEOUT"])
    max_attempts = int(app.config["BIGLEDGER_EVENT_MAX_ATTEMPTS"])
    counts = {"delivered": 0, "failed": 0, "dead": 0}
    with app.app_context(), Session(db.engine) as session:
        modules = enabled_modules(host, session)
        now = utcnow()
        due = (select(EventDelivery.id)
               .where(EventDelivery.status.in_(_RETRYABLE), EventDelivery.next_attempt_at <= now,
                      EventDelivery.subscriber.in_(modules),
                      or_(EventDelivery.locked_until.is_(None), EventDelivery.locked_until < now))
               .order_by(EventDelivery.next_attempt_at, EventDelivery.id).limit(limit))
        if event_ids is not None:
            due = due.where(EventDelivery.event_id.in_(list(event_ids)))
        ids = list(session.scalars(due))
        if not ids:
            return counts
        claim = uuid.uuid4().hex
        session.execute(update(EventDelivery)
                        .where(EventDelivery.id.in_(ids), EventDelivery.status.in_(_RETRYABLE),
                               or_(EventDelivery.locked_until.is_(None), EventDelivery.locked_until < now))
                        .values(claim=claim, locked_until=now + dt.timedelta(seconds=timeout * 2 + 60)))
        session.commit()
        rows = session.execute(
            select(EventDelivery.id, EventDelivery.subscriber, EventDelivery.attempts, OutboxEvent.id,
                   OutboxEvent.name, OutboxEvent.payload, OutboxEvent.occurred_at, OutboxEvent.version)
            .join(OutboxEvent, OutboxEvent.id == EventDelivery.event_id)
            .where(EventDelivery.claim == claim).order_by(EventDelivery.id)).all()
        delivered: list[int] = []
        for delivery_id, subscriber, attempts, *event_row in rows:
            event_id, name, payload, occurred_at, version = event_row
            event = Event(name=name, payload=payload, id=event_id, occurred_at=_aware(occurred_at),
                          version=version, attempt=attempts + 1)
            impls = [impl for impl in host.hookimpls(name, [subscriber])]
            if impls:
                error = _call(app, impls[0], event, timeout)
            else:
                error = f"module {subscriber} no longer subscribes to {name}"
            if error is None:
                delivered.append(delivery_id)
                continue
            dead = attempts + 1 >= max_attempts
            counts["dead" if dead else "failed"] += 1
            log.warning("delivery %s of event %s (%s) to %s failed: %s", delivery_id, name, event_id,
                        subscriber, error.splitlines()[-1] if error else "")
            session.execute(update(EventDelivery).where(EventDelivery.id == delivery_id).values(
                status="dead" if dead else "failed", attempts=attempts + 1, last_error=error[-4000:],
                next_attempt_at=None if dead else utcnow() + retry_delay(app, attempts + 1),
                locked_until=None, claim=None))
            session.commit()
        if delivered:
            session.execute(update(EventDelivery).where(EventDelivery.id.in_(delivered)).values(
                status="delivered", attempts=EventDelivery.attempts + 1, delivered_at=utcnow(),
                next_attempt_at=None, locked_until=None, claim=None, last_error=None))
            session.commit()
            counts["delivered"] = len(delivered)
    return counts


def _call(app, impl, event: Event, timeout: float) -> str | None:
    """Run one subscriber on a thread of its own; the error text, or None when it succeeded."""
    outcome: dict[str, str] = {}

    def target() -> None:
        with app.app_context():
            try:
                impl.function(event=event)
            except BaseException:
                db.session.rollback()
                outcome["error"] = traceback.format_exc(limit=8)
            finally:
                db.session.remove()

    thread = threading.Thread(target=target, name=f"bigledger-subscriber-{impl.plugin_name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return f"subscriber {impl.plugin_name} did not finish within {timeout:g} s"
    return outcome.get("error")


def retry(session: Session, ids: Iterable[int] | None = None, status: str = "dead") -> int:
    """Make deliveries due again: those in `ids`, or every one with `status`. Returns how many."""
    where = [EventDelivery.status != "delivered"]
    if ids is not None:
        where.append(EventDelivery.id.in_(list(ids)))
    else:
        where.append(EventDelivery.status == status)
    result = session.execute(update(EventDelivery).where(*where).values(
        status="pending", next_attempt_at=utcnow(), locked_until=None, claim=None))
    return result.rowcount


def purge(session: Session, older_than: dt.timedelta) -> int:
    """Delete events older than `older_than` whose every delivery succeeded. Returns how many."""
    cutoff = utcnow() - older_than
    undelivered = exists().where(EventDelivery.event_id == OutboxEvent.id, EventDelivery.status != "delivered")
    old = select(OutboxEvent.id).where(OutboxEvent.occurred_at < cutoff, ~undelivered)
    session.execute(delete(EventDelivery).where(EventDelivery.event_id.in_(old)))
    return session.execute(delete(OutboxEvent).where(and_(OutboxEvent.occurred_at < cutoff, ~undelivered))).rowcount


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(EventDelivery.status, func.count()).group_by(EventDelivery.status))
    return {status: count for status, count in rows}
