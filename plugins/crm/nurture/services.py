"""Sequences at work: enrolling leads, running due steps (at most once per enrollment and step), exits,
replies, statistics. Screens, the REST API, the CLI and the scheduler job all call these.

How a run stays exactly-once: every step run is a row of `crm_enrollment_step`, unique on (enrollment,
step), inserted with ON CONFLICT DO NOTHING in the same transaction as the message it queues and the
enrollment's move to its next step. A batch of due enrollments is one transaction, claimed with
`FOR UPDATE SKIP LOCKED` on PostgreSQL; a run killed half-way rolls its batch back and the next run does it
again, and two runs at once cannot both send a step.

Interface (for screens, API and CLI):

    class NurtureError(BigLedgerError)                  # translated message naming the field or step
    check_sequence(session, sequence) -> None           # raises NurtureError (quiet hours, enroll rule)
    check_step(session, step) -> None                   # raises NurtureError (fields per kind, condition,
                                                        #   jumps only forward in the same sequence)
    add_step(session, sequence, step) -> SequenceStep   # appended after the last step, checked
    remove_step(session, step) -> None                  # deactivated; waiting enrollments go on to the next
    move_step(session, step, offset: int) -> None       # -1 up, +1 down among active steps
    activate(session, sequence) / pause(session, sequence) / resume(session, sequence) -> None
    enroll(session, sequence, lead_ids, *, source="manual", by_id=None) -> dict
        {"enrolled": n, "skipped": {"already": n, "no_email": n, "suppressed": n, "missing": n}}
    pause_enrollment / resume_enrollment(session, enrollment) -> None
    exit_enrollment(session, enrollment, reason="manual") -> None
    exit_for_address(session, address, reason) -> int   # every running enrollment of leads with that e-mail
    run_due(session, *, now=None) -> dict[str, int]      # counts by outcome; commits per batch
    run_job() -> None                                   # the scheduler job
    statistics(session, sequence_id=None) -> list[dict]  # per sequence: enrolled, active, sent, delivered,
                                                        #   opened, clicked, replied, unsubscribed, converted
    step_statistics(session, sequence_id) -> list[dict] # per step (position, name, kind) with the same counts
    template_statistics(session) -> list[dict]          # per template with the same counts
    handle_inbound(event) -> None                        # a reply threaded to a sent step ends the enrollment
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app
from flask_babel import gettext
from sqlalchemy import (
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from bigledger_core.db import insert_rows, utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.models import Message

from ..common.rules import RuleError, parse, to_sql
from ..leads.models import LEAD_STATUSES, Assignment, Lead
from ..leads.vocabulary import nurture_vocabulary
from ..models import Activity
from .models import (
    EXIT_REASONS,
    EmailTemplate,
    Enrollment,
    EnrollmentStep,
    Sequence,
    SequenceStep,
    Suppression,
)

log = logging.getLogger(__name__)
RUNNING = ("active", "paused")
SETTABLE_STATUSES = ("new", "working", "nurturing", "disqualified")
MAX_DAYS = 3650
RUN_SECONDS = 50.0
MAX_CHAIN = 20  # steps one enrollment may run in one batch (they only go forward; this bounds the work)  # a scheduler run stops taking new batches after this; the next run goes on
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class NurtureError(BigLedgerError):
    """A sequence, step or enrollment change that is refused; the message says which field and why."""


# -- checking sequences and steps ----------------------------------------------------------------------

def _minutes(value: str, field: str) -> int:
    match = _HOURS.match((value or "").strip())
    if not match:
        raise NurtureError(gettext("%(field)s: “%(value)s” is not a time of day (HH:MM, e.g. 21:00)",
                                   field=field, value=value))
    return int(match.group(1)) * 60 + int(match.group(2))


def _parse_quiet(text: str | None) -> tuple[int, int] | None:
    """"21:00-08:00" → (1260, 480); empty → None."""
    text = (text or "").strip()
    if not text:
        return None
    start, sep, end = text.partition("-")
    if not sep:
        raise NurtureError(gettext("quiet hours: “%(value)s” is not HH:MM-HH:MM", value=text))
    return _minutes(start, gettext("quiet hours")), _minutes(end, gettext("quiet hours"))


def _check_rule(session: Session, text: str, field: str) -> None:
    try:
        parse(text, nurture_vocabulary(session))
    except RuleError as exc:
        raise NurtureError(gettext("%(field)s: %(error)s", field=field, error=str(exc))) from None


def check_sequence(session: Session, sequence: Sequence) -> None:
    """Refuse a sequence whose name, quiet hours or enrollment rule is wrong."""
    if not (sequence.name or "").strip():
        raise NurtureError(gettext("name: a sequence needs a name"))
    sequence.name = sequence.name.strip()
    if bool(sequence.quiet_start) != bool(sequence.quiet_end):
        raise NurtureError(gettext("quiet hours: give both the start and the end, or neither"))
    if sequence.quiet_start:
        _minutes(sequence.quiet_start, gettext("quiet hours start"))
        _minutes(sequence.quiet_end, gettext("quiet hours end"))
    if (sequence.enroll_rule or "").strip():
        _check_rule(session, sequence.enroll_rule, gettext("enrollment rule"))
    else:
        sequence.enroll_rule = None
    if sequence.status not in ("draft", "active", "paused", "archived"):
        raise NurtureError(gettext("status: “%(value)s” is not a sequence status", value=sequence.status))


def _step_label(step: SequenceStep) -> str:
    return gettext("step %(position)s", position=step.position) if step.position else gettext("new step")


def check_step(session: Session, step: SequenceStep) -> None:
    """Refuse a step that lacks what its kind needs, whose condition is not in the rule language, or that
    jumps backwards or out of its sequence."""
    where = _step_label(step)

    def refuse(message: str) -> None:
        raise NurtureError(f"{where}: {message}")

    if step.kind == "email":
        template = session.get(EmailTemplate, step.template_id) if step.template_id else None
        if template is None:
            refuse(gettext("an e-mail step needs a template"))
    elif step.kind in ("wait", "task"):
        if step.kind == "task" and not (step.subject or "").strip():
            refuse(gettext("a task step needs a subject"))
        days = step.days if step.days is not None else (None if step.kind == "wait" else 0)
        if days is None or not 0 <= days <= MAX_DAYS or (step.kind == "wait" and days == 0):
            refuse(gettext("days: a whole number from %(low)s to %(high)s", low=1 if step.kind == "wait" else 0,
                           high=MAX_DAYS))
    elif step.kind == "branch":
        if not (step.condition or "").strip():
            refuse(gettext("a branch needs a condition"))
        _check_rule(session, step.condition, f"{where}, {gettext('condition')}")
        for target_id, label in ((step.then_step_id, gettext("then")), (step.else_step_id, gettext("else"))):
            if target_id is None:
                continue
            target = session.get(SequenceStep, target_id)
            if target is None or target.sequence_id != step.sequence_id or not target.active:
                refuse(gettext("%(which)s: the step to go to is not in this sequence", which=label))
            if step.position and target.position <= step.position:
                refuse(gettext("%(which)s: a branch may only go forward (to a later step)", which=label))
    elif step.kind == "set_status":
        if step.status not in SETTABLE_STATUSES:
            refuse(gettext("status: one of %(allowed)s", allowed=", ".join(SETTABLE_STATUSES)))
    elif step.kind == "set_owner":
        if step.owner_id is None:
            refuse(gettext("a change of owner needs the new owner"))
    elif step.kind == "enroll":
        if step.target_sequence_id is None:
            refuse(gettext("needs the sequence to enroll in"))
        if step.target_sequence_id == step.sequence_id:
            refuse(gettext("a sequence cannot enroll a lead in itself"))
    elif step.kind != "end":
        refuse(gettext("“%(kind)s” is not a kind of step", kind=step.kind))


def add_step(session: Session, sequence: Sequence, step: SequenceStep) -> SequenceStep:
    """Append `step` after the sequence's last step (its position), checked."""
    last = session.scalar(select(func.max(SequenceStep.position)).where(SequenceStep.sequence_id == sequence.id))
    step.sequence_id, step.position, step.active = sequence.id, (last or 0) + 1, True
    check_step(session, step)
    session.add(step)
    session.flush()
    return step


def remove_step(session: Session, step: SequenceStep) -> None:
    """Take a step out of its sequence. It is deactivated, not deleted, so that its statistics stay; an
    enrollment waiting on it goes on with the next active step; branches to it go to the next step."""
    step.active = False
    session.execute(update(SequenceStep).where(SequenceStep.then_step_id == step.id).values(then_step_id=None))
    session.execute(update(SequenceStep).where(SequenceStep.else_step_id == step.id).values(else_step_id=None))
    session.flush()


def move_step(session: Session, step: SequenceStep, offset: int) -> None:
    """Swap a step with its active neighbour above (offset -1) or below (+1). Refused when a branch would
    then jump backwards."""
    order = list(session.scalars(select(SequenceStep).where(SequenceStep.sequence_id == step.sequence_id,
                                                            SequenceStep.active.is_(True))
                                 .order_by(SequenceStep.position)))
    index = next(i for i, s in enumerate(order) if s.id == step.id)
    other = index + (1 if offset > 0 else -1)
    if not 0 <= other < len(order):
        return
    neighbour = order[other]
    step.position, neighbour.position = neighbour.position, step.position
    session.flush()
    for each in (step, neighbour, *(s for s in order if s.kind == "branch")):
        check_step(session, each)


def activate(session: Session, sequence: Sequence) -> None:
    """Start a sequence: it needs at least one step, and every step must be complete."""
    if sequence.status == "archived":
        raise NurtureError(gettext("an archived sequence cannot start again; copy it into a new one"))
    check_sequence(session, sequence)
    steps = list(session.scalars(select(SequenceStep).where(SequenceStep.sequence_id == sequence.id,
                                                            SequenceStep.active.is_(True))))
    if not steps:
        raise NurtureError(gettext("steps: a sequence needs at least one step before it starts"))
    for step in steps:
        check_step(session, step)
    sequence.status = "active"
    sequence.activated_at = sequence.activated_at or utcnow()
    session.flush()


def pause(session: Session, sequence: Sequence) -> None:
    """Pause a sequence: none of its enrollments runs a step until it is resumed."""
    if sequence.status != "active":
        raise NurtureError(gettext("only an active sequence can be paused"))
    sequence.status = "paused"
    session.flush()


def resume(session: Session, sequence: Sequence) -> None:
    """Resume a paused sequence; steps that fell due meanwhile run at the next run (quiet hours apply)."""
    if sequence.status != "paused":
        raise NurtureError(gettext("only a paused sequence can be resumed"))
    sequence.status = "active"
    session.flush()


def archive(session: Session, sequence: Sequence) -> None:
    """Stop a sequence for good: its running enrollments end (reason "manual")."""
    sequence.status = "archived"
    _exit(session, Enrollment.sequence_id == sequence.id, "manual")
    session.flush()


# -- enrolling ---------------------------------------------------------------------------------------

def _first_step_id(session: Session, sequence_id: int) -> int | None:
    return session.scalar(select(SequenceStep.id).where(SequenceStep.sequence_id == sequence_id,
                                                        SequenceStep.active.is_(True))
                          .order_by(SequenceStep.position).limit(1))


def _exit(session: Session, where, reason: str, now: dt.datetime | None = None) -> int:
    """End the running enrollments matching `where` with `reason`. Returns how many."""
    return session.execute(update(Enrollment).where(Enrollment.status.in_(RUNNING), where).values(
        status="exited", exit_reason=reason, finished_at=now or utcnow(), next_run_at=None)
        .execution_options(synchronize_session=False)).rowcount


def enroll(session: Session, sequence: Sequence, lead_ids: Iterable[int], *, source: str = "manual",
           by_id: int | None = None) -> dict:
    """Enroll leads in `sequence` (running or not: a draft or paused sequence keeps them until it runs).

    A lead already running in this sequence, without an e-mail address, suppressed, converted or
    disqualified is skipped (counted by reason). A lead enrolled here leaves any other sequence it was in
    (exit reason "enrolled_elsewhere")."""
    from .tracking import suppressed

    if sequence.status == "archived":
        raise NurtureError(gettext("an archived sequence takes no new enrollments"))
    first = _first_step_id(session, sequence.id)
    if first is None:
        raise NurtureError(gettext("steps: add the sequence's steps before enrolling leads"))
    wanted = sorted({int(i) for i in lead_ids})
    skipped = {"already": 0, "no_email": 0, "suppressed": 0, "missing": 0, "closed": 0}
    leads = {row.id: row for row in session.execute(
        select(Lead.id, Lead.email, Lead.status).where(Lead.id.in_(wanted)))} if wanted else {}
    skipped["missing"] = len(wanted) - len(leads)
    running = set(session.scalars(select(Enrollment.lead_id).where(
        Enrollment.sequence_id == sequence.id, Enrollment.status.in_(RUNNING),
        Enrollment.lead_id.in_(list(leads))))) if leads else set()
    blocked = suppressed(session, [row.email for row in leads.values() if row.email])
    chosen = []
    for lead_id, row in leads.items():
        if lead_id in running:
            skipped["already"] += 1
        elif not row.email:
            skipped["no_email"] += 1
        elif row.email in blocked:
            skipped["suppressed"] += 1
        elif row.status in ("converted", "disqualified"):
            skipped["closed"] += 1
        else:
            chosen.append(lead_id)
    if chosen:
        now = utcnow()
        _exit(session, and_(Enrollment.lead_id.in_(chosen), Enrollment.sequence_id != sequence.id),
              "enrolled_elsewhere", now)
        session.execute(insert(Enrollment), [
            {"sequence_id": sequence.id, "lead_id": lead_id, "status": "active", "step_id": first,
             "next_run_at": now, "source": source, "enrolled_by_id": by_id, "enrolled_at": now}
            for lead_id in chosen])
    session.flush()
    return {"enrolled": len(chosen), "skipped": skipped}


def pause_enrollment(session: Session, enrollment: Enrollment) -> None:
    if enrollment.status != "active":
        raise NurtureError(gettext("only an active enrollment can be paused"))
    enrollment.status = "paused"
    session.flush()


def resume_enrollment(session: Session, enrollment: Enrollment) -> None:
    if enrollment.status != "paused":
        raise NurtureError(gettext("only a paused enrollment can be resumed"))
    enrollment.status = "active"
    session.flush()


def exit_enrollment(session: Session, enrollment: Enrollment, reason: str = "manual") -> None:
    if enrollment.status not in RUNNING:
        raise NurtureError(gettext("this enrollment has already ended"))
    if reason not in EXIT_REASONS:
        raise NurtureError(gettext("“%(reason)s” is not an exit reason", reason=reason))
    _exit(session, Enrollment.id == enrollment.id, reason)
    session.refresh(enrollment)


def exit_for_address(session: Session, address: str, reason: str) -> int:
    """End every running enrollment of the leads with e-mail `address` (unsubscribed, bounced, erased)."""
    address = (address or "").strip().lower()
    if not address:
        return 0
    return _exit(session, Enrollment.lead_id.in_(select(Lead.id).where(func.lower(Lead.email) == address)),
                 reason)


def _enroll_automatically(session: Session, now: dt.datetime) -> int:
    """Enroll, once per lead and sequence, the leads that match an active sequence's rule or came from its
    web form since it started: one query for the matching leads per sequence, then `enroll`."""
    total = 0
    vocabulary = nurture_vocabulary(session)
    for sequence in session.scalars(select(Sequence).where(
            Sequence.status == "active", or_(Sequence.enroll_rule.is_not(None), Sequence.enroll_form_id.is_not(None)))):
        where = [Lead.email.is_not(None), Lead.status.not_in(("converted", "disqualified")),
                 ~select(Enrollment.id).where(Enrollment.sequence_id == sequence.id,
                                              Enrollment.lead_id == Lead.id).exists(),
                 ~select(Suppression.id).where(Suppression.address == func.lower(Lead.email)).exists()]
        matches = []
        if sequence.enroll_rule:
            try:
                matches.append(to_sql(parse(sequence.enroll_rule, vocabulary), vocabulary))
            except RuleError as exc:  # a custom field was removed since the rule was written
                log.warning("sequence %s: enrollment rule no longer valid: %s", sequence.id, exc)
        if sequence.enroll_form_id:
            matches.append(and_(Lead.form_id == sequence.enroll_form_id,
                                Lead.created_at >= (sequence.activated_at or now)))
        if not matches:
            continue
        lead_ids = list(session.scalars(select(Lead.id).where(*where, or_(*matches)).limit(100_000)))
        if not lead_ids:
            continue
        source = "rule" if sequence.enroll_rule else "form"
        total += enroll(session, sequence, lead_ids, source=source)["enrolled"]
    return total


# -- time: zones, quiet hours, business days -------------------------------------------------------------

@lru_cache(maxsize=512)
def _zone(name: str | None) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


@lru_cache(maxsize=65536)
def _phone_zone(e164: str) -> str | None:
    """The time zone of a phone number, when it has exactly one."""
    import phonenumbers
    from phonenumbers import timezone as phone_timezone

    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return None
    zones = phone_timezone.time_zones_for_number(number)
    return zones[0] if len(zones) == 1 and zones[0] != "Etc/Unknown" else None


def lead_zone(timezone: str | None, phone_e164: str | None, default: str) -> ZoneInfo:
    """A lead's time zone: its own, else its phone number's, else the default."""
    zone = _zone(timezone)
    if zone is None and phone_e164:
        zone = _zone(_phone_zone(phone_e164))
    return zone or _zone(default) or ZoneInfo("UTC")


@dataclass(frozen=True)
class Calendar:
    """Quiet hours (minutes of the local day) and the business-day calendar."""

    default_zone: str
    quiet: tuple[int, int] | None
    holidays: frozenset[dt.date]
    workdays: frozenset[dt.date]

    @classmethod
    def from_config(cls, config) -> Calendar:
        def dates(values):
            out = set()
            for value in values or []:
                try:
                    out.add(dt.date.fromisoformat(str(value).strip()))
                except ValueError:
                    log.warning("not a date in the nurturing calendar: %r", value)
            return frozenset(out)

        try:
            quiet = _parse_quiet(config.get("BIGLEDGER_NURTURE_QUIET_HOURS"))
        except NurtureError as exc:
            log.warning("BIGLEDGER_NURTURE_QUIET_HOURS ignored: %s", exc)
            quiet = None
        return cls(config.get("BIGLEDGER_NURTURE_TIMEZONE") or "UTC", quiet,
                   dates(config.get("BIGLEDGER_NURTURE_HOLIDAYS")), dates(config.get("BIGLEDGER_NURTURE_WORKDAYS")))

    def is_business_day(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_days(self, start: dt.datetime, days: int, business: bool, zone: ZoneInfo) -> dt.datetime:
        """`start` plus `days` days (business days: skipping weekends and holidays, in the lead's zone)."""
        if not business:
            return start + dt.timedelta(days=days)
        local = start.astimezone(zone)
        day, left = local.date(), days
        while left > 0:
            day += dt.timedelta(days=1)
            if self.is_business_day(day):
                left -= 1
        return dt.datetime.combine(day, local.timetz().replace(tzinfo=None), zone).astimezone(dt.UTC)

    def send_time(self, now: dt.datetime, zone: ZoneInfo, quiet: tuple[int, int] | None) -> dt.datetime | None:
        """None when an e-mail may go now; else the UTC time the quiet hours end for the recipient."""
        if quiet is None or quiet[0] == quiet[1]:
            return None
        start, end = quiet
        local = now.astimezone(zone)
        minute = local.hour * 60 + local.minute
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return None
        day = local.date() if minute < end else local.date() + dt.timedelta(days=1)
        wake = dt.datetime.combine(day, dt.time(end // 60, end % 60), zone)
        return wake.astimezone(dt.UTC)


# -- running due steps ---------------------------------------------------------------------------------

@dataclass
class _Due:
    id: int
    sequence_id: int
    lead_id: int
    step: SequenceStep | None


def _move(item: _Due, step_id: int | None, at: dt.datetime | None, *, status: str = "active",
          finished: dt.datetime | None = None, reason: str | None = None, chain: bool = False) -> dict:
    """Where an enrollment goes after a step: the row of the batch's UPDATE. `chain`: the next step may run
    in the same batch."""
    return {"e_id": item.id, "to_step": step_id, "at": at, "to_status": status, "finished": finished,
            "reason": reason, "chain": chain}


class _Run:
    """One scheduler run over due enrollments, one batch per transaction."""

    def __init__(self, session: Session, now: dt.datetime, config):
        self.session, self.now, self.config = session, now, config
        self.calendar = Calendar.from_config(config)
        self.require_consent = bool(config.get("BIGLEDGER_NURTURE_REQUIRE_CONSENT"))
        self.counts: dict[str, int] = defaultdict(int)
        self.steps: dict[int, list[SequenceStep]] = {}
        self.sequences: dict[int, Sequence] = {}

    # steps of a sequence, in order, loaded once per run
    def ordered(self, sequence_id: int) -> list[SequenceStep]:
        if sequence_id not in self.steps:
            self.steps[sequence_id] = list(self.session.scalars(
                select(SequenceStep).where(SequenceStep.sequence_id == sequence_id)
                .order_by(SequenceStep.position, SequenceStep.id)))
        return self.steps[sequence_id]

    def sequence(self, sequence_id: int) -> Sequence:
        if sequence_id not in self.sequences:
            self.sequences[sequence_id] = self.session.get(Sequence, sequence_id)
        return self.sequences[sequence_id]

    def next_after(self, step: SequenceStep) -> SequenceStep | None:
        """The first active step after `step` (which may itself have been removed meanwhile)."""
        return next((s for s in self.ordered(step.sequence_id)
                     if s.active and (s.position, s.id) > (step.position, step.id)), None)

    def effective(self, sequence_id: int, step_id: int | None) -> SequenceStep | None:
        """The step an enrollment is at: its step if active, else the next active one."""
        if step_id is None:
            return None
        step = next((s for s in self.ordered(sequence_id) if s.id == step_id), None)
        if step is None:
            return None
        return step if step.active else self.next_after(step)

    def quiet(self, sequence: Sequence) -> tuple[int, int] | None:
        if sequence.quiet_start and sequence.quiet_end:
            return _parse_quiet(f"{sequence.quiet_start}-{sequence.quiet_end}")
        return self.calendar.quiet

    # the run
    def claim(self, limit: int, enrollment_id: int | None = None) -> list[_Due]:
        """Lock up to `limit` due enrollments of running sequences (or the one `enrollment_id`), skipping
        those another run holds."""
        query = (select(Enrollment.id, Enrollment.sequence_id, Enrollment.lead_id, Enrollment.step_id)
                 .join(Sequence, Sequence.id == Enrollment.sequence_id)
                 .where(Enrollment.status == "active", Enrollment.next_run_at <= self.now, Sequence.status == "active"))
        if enrollment_id is not None:
            query = query.where(Enrollment.id == enrollment_id)
        rows = self.session.execute(query.order_by(Enrollment.next_run_at, Enrollment.id).limit(limit)
                                    .with_for_update(of=Enrollment, skip_locked=True)).all()
        return [_Due(r.id, r.sequence_id, r.lead_id, self.effective(r.sequence_id, r.step_id)) for r in rows]

    def batch(self, due: list[_Due]) -> None:
        """Run the due steps of `due`; an enrollment whose next step is due at once (an e-mail after a
        branch, the wait after an e-mail) runs it in the same transaction, so that it is claimed and
        written once per batch, not once per step."""
        final: dict[int, dict] = {}
        by_id = {item.id: item for item in due}
        pending = due
        for _ in range(MAX_CHAIN):
            for move in self.step_once(pending):
                final[move["e_id"]] = move
            pending = []
            for move in final.values():
                if move["chain"] and move["at"] <= self.now:
                    item = by_id[move["e_id"]]
                    pending.append(_Due(item.id, item.sequence_id, item.lead_id,
                                        self.effective(item.sequence_id, move["to_step"])))
                move["chain"] = False
            if not pending:
                break
        if final:
            table = Enrollment.__table__  # Core executemany: one statement for the whole batch
            self.session.execute(
                update(table).where(table.c.id == bindparam("e_id"), table.c.status == "active")
                .values(step_id=bindparam("to_step"), next_run_at=bindparam("at"), status=bindparam("to_status"),
                        finished_at=bindparam("finished"), exit_reason=bindparam("reason")),
                [{key: value for key, value in move.items() if key != "chain"} for move in final.values()])

    def step_once(self, due: list[_Due]) -> list[dict]:
        """Run the current step of each item; returns where each goes next."""
        moves: list[dict] = []
        by_step: dict[int, list[_Due]] = defaultdict(list)
        for item in due:
            if item.step is None:
                moves.append(self.finish(item))
            else:
                by_step[item.step.id].append(item)
        for items in by_step.values():
            step = items[0].step
            handler = getattr(self, f"run_{step.kind}")
            moves.extend(handler(step, items))
        return moves

    def move(self, item: _Due, step: SequenceStep, *, goto: SequenceStep | None = None,
             at: dt.datetime | None = None) -> dict:
        """The enrollment goes on to `goto` (default: the step after `step`) at `at` (default: now)."""
        target = goto if goto is not None else self.next_after(step)
        if target is None:
            return self.finish(item)
        return _move(item, target.id, at or self.now, chain=True)

    def stay(self, item: _Due, at: dt.datetime) -> dict:
        """The enrollment keeps its step, due again at `at` (quiet hours)."""
        return _move(item, item.step.id, at)

    def finish(self, item: _Due, reason: str | None = None) -> dict:
        self.counts["completed" if reason is None else f"exited_{reason}"] += 1
        return _move(item, None, None, status="completed" if reason is None else "exited", finished=self.now,
                     reason=reason)

    def record(self, step: SequenceStep, items: Seq[_Due], outcome, detail=None, links=None,
               messages=None) -> set[int]:
        """Insert the step runs; returns the enrollment ids whose row was new (those run the step now)."""
        rows = [{"enrollment_id": item.id, "step_id": step.id, "sequence_id": step.sequence_id,
                 "template_id": step.template_id if step.kind == "email" else None,
                 "message_id": (messages or {}).get(item.id),
                 "outcome": outcome(item) if callable(outcome) else outcome,
                 "detail": detail(item) if callable(detail) else detail,
                 "links": (links or {}).get(item.id), "ran_at": self.now, "opens": 0, "clicks": 0}
                for item in items]
        fresh = {row[0] for row in insert_rows(self.session, EnrollmentStep, rows,
                                                conflict=["enrollment_id", "step_id"], returning=("enrollment_id",))}
        self.counts["repeat_skipped"] += len(items) - len(fresh)
        return fresh

    def after(self, step: SequenceStep, items: Seq[_Due], moved: dict[int, dict]) -> list[dict]:
        """Moves for every item: those decided by the step (`moved`); the others go on to the next step
        (a step run found already recorded was done by an earlier run that did not get to move on)."""
        return [moved.get(item.id) or self.move(item, step) for item in items]

    # step kinds
    def run_wait(self, step: SequenceStep, items: list[_Due]) -> list[dict]:
        fresh = self.record(step, items, "done")
        zones = self.lead_zones([i.lead_id for i in items]) if step.business_days else {}
        moved = {}
        for item in items:
            if item.id in fresh:
                zone = zones.get(item.lead_id) or ZoneInfo("UTC")
                at = self.calendar.add_days(self.now, step.days or 1, step.business_days, zone)
                if self.next_after(step) is None:  # a wait at the end keeps the enrollment (and its exits) open
                    moved[item.id] = _move(item, None, at)
                else:
                    moved[item.id] = self.move(item, step, at=at)
        self.counts["waited"] += len(fresh)
        return self.after(step, items, moved)

    def lead_zones(self, lead_ids: list[int]) -> dict[int, ZoneInfo]:
        rows = self.session.execute(select(Lead.id, Lead.timezone, Lead.phone_e164).where(Lead.id.in_(lead_ids)))
        return {r.id: lead_zone(r.timezone, r.phone_e164, self.calendar.default_zone) for r in rows}

    def run_task(self, step: SequenceStep, items: list[_Due]) -> list[dict]:
        fresh = self.record(step, items, "done")
        owners = dict(self.session.execute(select(Lead.id, Lead.owner_id).where(
            Lead.id.in_([i.lead_id for i in items if i.id in fresh]))).all()) if fresh else {}
        due_at = self.now + dt.timedelta(days=step.days or 0)
        rows = [{"kind": "task", "subject": step.subject or step.name or gettext("Follow up"),
                 "lead_id": item.lead_id, "user_id": owners.get(item.lead_id), "occurred_at": self.now,
                 "due_at": due_at, "done": False} for item in items if item.id in fresh]
        if rows:
            self.session.execute(insert(Activity), rows)
        self.counts["tasks"] += len(rows)
        return self.after(step, items, {})

    def run_branch(self, step: SequenceStep, items: list[_Due]) -> list[dict]:
        vocabulary = nurture_vocabulary(self.session)
        try:
            condition = to_sql(parse(step.condition or "", vocabulary), vocabulary)
            matched = set(self.session.scalars(select(Lead.id).where(
                Lead.id.in_([i.lead_id for i in items]), condition)))
        except RuleError as exc:  # the condition names a custom field removed since: take the else way
            log.warning("sequence step %s: condition no longer valid: %s", step.id, exc)
            matched = set()
        fresh = self.record(step, items, lambda item: "then" if item.lead_id in matched else "else")
        by_id = {s.id: s for s in self.ordered(step.sequence_id)}
        moved = {}
        for item in items:
            if item.id in fresh:
                target_id = step.then_step_id if item.lead_id in matched else step.else_step_id
                target = by_id.get(target_id)
                moved[item.id] = self.move(item, step, goto=target if target is not None and target.active else None)
        self.counts["branched"] += len(fresh)
        return self.after(step, items, moved)

    def run_end(self, step: SequenceStep, items: list[_Due]) -> list[dict]:
        """The end of a path (after a branch): the enrollment is completed."""
        self.record(step, items, "done")
        return [self.finish(item) for item in items]

    def run_set_status(self, step: SequenceStep, items: list[_Due]) -> list[dict]:
        fresh = self.record(step, items, "done", step.status)
        ids = [i.lead_id for i in items if i.id in fresh]
        if ids:
            self.session.execute(update(Lead).where(Lead.id.in_(ids), Lead.status.in_(SETTABLE_STATUSES))
                                 .values(status=step.status, version=Lead.version + 1, updated_at=self.now)
                                 .execution_options(synchronize_session=False))
        return self.after(step, items, {})

    def run_set_owner(self, step: SequenceStep, items: list[_Due]) -> list[dict]:
        fresh = self.record(step, items, "done")
        ids = [i.lead_id for i in items if i.id in fresh]
        if ids:
            self.session.execute(update(Lead).where(Lead.id.in_(ids))
                                 .values(owner_id=step.owner_id, version=Lead.version + 1, updated_at=self.now)
                                 .execution_options(synchronize_session=False))
            reason = gettext("sequence %(name)s", name=self.sequence(step.sequence_id).name)[:300]
            self.session.execute(insert(Assignment), [{"lead_id": i, "user_id": step.owner_id, "reason": reason,
                                                       "at": self.now} for i in ids])
        return self.after(step, items, {})

    def run_enroll(self, step: SequenceStep, items: list[_Due]) -> list[dict]:
        fresh = self.record(step, items, "done")
        target = self.session.get(Sequence, step.target_sequence_id) if step.target_sequence_id else None
        handed = []
        if target is not None and target.status != "archived" and fresh:
            # enroll() ends these enrollments as "enrolled_elsewhere": they go on in the other sequence
            handed = [i for i in items if i.id in fresh]
            enroll(self.session, target, [i.lead_id for i in handed], source="sequence")
            self.counts["handed_over"] += len(handed)
        return [self.move(item, step) for item in items if item not in handed]

    def run_email(self, step: SequenceStep, items: list[_Due]) -> list[dict]:
        from . import templates as mail_templates
        from . import tracking

        sequence = self.sequence(step.sequence_id)
        template = self.session.get(EmailTemplate, step.template_id) if step.template_id else None
        columns = dict.fromkeys(("id", "name", "email", "phone_e164", "language", "timezone", "consent", "custom",
                                 "owner_id", *mail_templates.LEAD_FIELDS))
        leads = {r.id: r for r in self.session.execute(
            select(*(getattr(Lead, name) for name in columns)).where(Lead.id.in_([i.lead_id for i in items])))}
        blocked = tracking.suppressed(self.session, [r.email for r in leads.values() if r.email])
        quiet = self.quiet(sequence)
        moves, ready, skipped, stop = [], [], {}, {}
        for item in items:
            lead = leads.get(item.lead_id)
            if lead is None or not lead.email:
                skipped[item.id] = "no_email"
            elif lead.email in blocked:
                stop[item.id] = "unsubscribed"
            elif template is None or not template.active:
                skipped[item.id] = "no_template"
            elif self.require_consent and template.marketing and not lead.consent:
                skipped[item.id] = "no_consent"
            else:
                wake = self.calendar.send_time(self.now, lead_zone(lead.timezone, lead.phone_e164,
                                                                   self.calendar.default_zone), quiet)
                if wake is not None:
                    moves.append(self.stay(item, wake))
                    self.counts["postponed"] += 1
                else:
                    ready.append(item)
        # render before recording: the step run keeps the links of the mail it sends
        try:
            messages = self.render(step, template, ready, leads, mail_templates, tracking) if ready else {}
        except mail_templates.TemplateError as exc:  # stored before a check that now refuses it: hold the mails
            retry = self.now + dt.timedelta(hours=1)
            self.session.execute(update(Enrollment).where(Enrollment.id.in_([i.id for i in ready]))
                                 .values(last_error=str(exc)[:2000]).execution_options(synchronize_session=False))
            moves.extend(self.stay(item, retry) for item in ready)
            self.counts["template_errors"] += len(ready)
            ready, messages = [], {}
        # the messages go in first (a step run points at its message); a message whose step run turns out to
        # exist already (another run did the step) is taken out again before anything commits
        queued = self.queue([message for message, _links in messages.values()])
        message_ids = {item.id: queued[messages[item.id][0]["idempotency_key"]]
                       for item in ready if messages[item.id][0]["idempotency_key"] in queued}
        ready_ids = {i.id for i in ready}
        runnable = [i for i in items if i.id in skipped or i.id in stop or i.id in ready_ids]
        fresh = self.record(step, runnable,
                            lambda i: "skipped" if (i.id in skipped or i.id in stop) else "sent",
                            lambda i: skipped.get(i.id) or stop.get(i.id),
                            {i: links for i, (_message, links) in messages.items()}, message_ids)
        orphans = [message_id for enrollment_id, message_id in message_ids.items() if enrollment_id not in fresh]
        if orphans:
            self.session.execute(delete(Message).where(Message.id.in_(orphans))
                                 .execution_options(synchronize_session=False))
        for item in runnable:
            if item.id in stop:
                moves.append(self.finish(item, stop[item.id]))
            elif item.id in skipped or item.id not in fresh:
                if item.id in skipped and item.id in fresh:
                    self.counts["skipped"] += 1
                moves.append(self.move(item, step))
        sending = [i for i in ready if i.id in fresh]
        self.counts["sent"] += len(sending)
        moves.extend(self.move(item, step) for item in sending)
        return moves

    def render(self, step, template, items, leads, mail_templates, tracking) -> dict[int, tuple[dict, list]]:
        """The message (a bl_message row) and the tracked links of each item's e-mail, by enrollment id."""
        from flask_appbuilder.security.sqla.models import User

        owner_ids = {leads[i.lead_id].owner_id for i in items} - {None}
        owners = {u.id: {"name": f"{u.first_name} {u.last_name}".strip(), "email": u.email, "first_name": u.first_name,
                         "last_name": u.last_name}
                  for u in self.session.execute(select(User.id, User.first_name, User.last_name, User.email)
                                                .where(User.id.in_(owner_ids)))} if owner_ids else {}
        sender = self.config["BIGLEDGER_MAIL_FROM"]
        from_name, from_address = parseaddr(sender)
        domain = from_address.rsplit("@", 1)[-1]
        prepared = {}
        out = {}
        queued_at = utcnow()  # the mail queue's clock, whatever time the run was asked to act at
        for item in items:
            lead = leads[item.lead_id]
            language = "en" if (lead.language or "").lower().startswith("en") else "zh"
            if language not in prepared:
                prepared[language] = mail_templates.prepare(template, language)
            version = prepared[language]
            unsubscribe = tracking.unsubscribe_url(enrollment_id=item.id, step_id=step.id, address=lead.email)
            context = mail_templates.lead_context(lead._mapping, owners.get(lead.owner_id),
                                                  unsubscribe_url=unsubscribe, sender=sender)
            subject, html, text = version.render(context)
            html, text, links = tracking.finish(html, text, enrollment_id=item.id, step_id=step.id,
                                                unsubscribe_url=unsubscribe, language=version.language)
            out[item.id] = ({
                "channel": "email", "status": "queued", "to_address": lead.email, "to_name": lead.name,
                "from_address": from_address, "from_name": from_name or None, "subject": subject[:998],
                "body_text": text, "body_html": html,
                "headers": {"List-Unsubscribe": f"<{unsubscribe}>",
                            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"} if template.marketing else None,
                "message_id": f"{uuid.uuid4().hex}@{domain}", "idempotency_key": f"nurture:{item.id}:{step.id}",
                "source": f"nurture:{step.sequence_id}", "attempts": 0, "next_attempt_at": queued_at,
                "created_at": queued_at}, links or None)
        return out

    def queue(self, messages: list[dict]) -> dict[str, int]:
        """Insert the messages (skipping an idempotency key already queued); their ids by idempotency key."""
        return {key: message_id for message_id, key in insert_rows(
            self.session, Message, messages, conflict=["idempotency_key"], returning=("id", "idempotency_key"))}

    def housekeeping(self) -> None:
        """Exits decided by what happened since the last run: leads qualified, converted or disqualified,
        messages that bounced; then automatic enrollments."""
        session, now = self.session, self.now
        for status, flag in (("converted", Sequence.exit_on_converted), ("qualified", Sequence.exit_on_qualified)):
            self.counts[f"exited_{status}"] += _exit(session, and_(
                Enrollment.lead_id.in_(select(Lead.id).where(Lead.status == status)),
                Enrollment.sequence_id.in_(select(Sequence.id).where(flag.is_(True)))), status, now)
        self.counts["exited_disqualified"] += _exit(session, Enrollment.lead_id.in_(
            select(Lead.id).where(Lead.status == "disqualified")), "disqualified", now)
        bounced = session.execute(
            select(EnrollmentStep.id, EnrollmentStep.enrollment_id, Message.to_address, Enrollment.lead_id)
            .join(Message, Message.id == EnrollmentStep.message_id)
            .join(Enrollment, Enrollment.id == EnrollmentStep.enrollment_id)
            .where(Message.status == "failed", EnrollmentStep.outcome == "sent")).all()
        if bounced:
            from .privacy import ERASED_ADDRESS
            from .tracking import TrackingError, suppress

            for row in {r.to_address: r for r in bounced}.values():
                if row.to_address == ERASED_ADDRESS:  # cancelled by an erasure: suppressed by digest already
                    continue
                try:
                    suppress(session, row.to_address, reason="bounced", source="delivery", lead_id=row.lead_id)
                except TrackingError as exc:  # not an address the suppression list can hold: log, go on
                    log.warning("bounce of %s not suppressed: %s", row.to_address, exc)
            session.execute(update(EnrollmentStep).where(EnrollmentStep.id.in_([r.id for r in bounced]))
                            .values(outcome="bounced").execution_options(synchronize_session=False))
            self.counts["exited_bounced"] += _exit(session, Enrollment.id.in_([r.enrollment_id for r in bounced]),
                                                   "bounced", now)
        self.counts["enrolled"] += _enroll_automatically(session, now)
        session.commit()


def run_due(session: Session, *, now: dt.datetime | None = None, batch: int | None = None,
            seconds: float = RUN_SECONDS) -> dict[str, int]:
    """Run the steps that are due: exits first, automatic enrollments, then due enrollments in batches,
    each batch its own transaction. Returns counts by outcome (sent, postponed, waited, completed…)."""
    config = current_app.config
    run = _Run(session, now or utcnow(), config)
    run.housekeeping()
    size = batch or int(config.get("BIGLEDGER_NURTURE_BATCH") or 1000)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        due = run.claim(size)
        if not due:
            break
        try:
            run.batch(due)
            session.commit()
        except Exception:  # noqa: BLE001  (whatever broke the batch, each enrollment is retried alone)
            session.rollback()
            run.steps.clear()
            run.sequences.clear()
            _run_one_by_one(run, due)
    session.commit()
    return dict(run.counts)


def _run_one_by_one(run: _Run, due: list[_Due]) -> None:
    """A batch failed: run its enrollments one at a time so that one bad record cannot hold back the rest.
    An enrollment that fails alone keeps its step, records the error and is retried an hour later."""
    session = run.session
    for item in due:
        try:
            fresh = run.claim(1, item.id)
            if fresh:
                run.batch(fresh)
            session.commit()
        except Exception as exc:  # recorded on the enrollment, retried an hour later
            session.rollback()
            log.exception("nurturing: enrollment %s failed at step %s", item.id, item.step and item.step.id)
            session.execute(update(Enrollment).where(Enrollment.id == item.id).values(
                last_error=f"{type(exc).__name__}: {exc}"[:2000], next_run_at=run.now + dt.timedelta(hours=1)))
            session.commit()
            run.counts["failed"] += 1




def run_job() -> None:
    """Scheduler job (every minute): run due nurturing steps."""
    from bigledger_core.db import db

    counts = run_due(db.session)
    if counts.get("sent") or counts.get("failed"):
        log.info("nurturing run: %s", counts)


# -- replies -------------------------------------------------------------------------------------------

def record_reply(session: Session, payload: dict) -> int:
    """A received e-mail that answers a sequence's message (by In-Reply-To or References) ends that
    enrollment (reason "replied"), marks the step as replied and records the fact on the lead. Without
    threading headers, mail from the address of a lead running in a sequence that already wrote to it
    counts too. Returns the number of enrollments ended."""
    from ..leads.services import record_fact

    ids = [str(v).strip().strip("<>") for v in [payload.get("in_reply_to"), *(payload.get("references") or [])] if v]
    rows = []
    if ids:
        rows = session.execute(
            select(EnrollmentStep.id, EnrollmentStep.enrollment_id)
            .join(Message, Message.id == EnrollmentStep.message_id).where(Message.message_id.in_(ids))).all()
    if not rows:
        sender = payload.get("sender") or ["", ""]
        address = str(sender[1] if isinstance(sender, (list, tuple)) and len(sender) == 2 else sender).lower()
        if address:
            latest = (select(func.max(EnrollmentStep.id)).join(Enrollment, Enrollment.id == EnrollmentStep.enrollment_id)
                      .join(Lead, Lead.id == Enrollment.lead_id)
                      .where(func.lower(Lead.email) == address, Enrollment.status.in_(RUNNING),
                             EnrollmentStep.message_id.is_not(None))
                      .group_by(Enrollment.id))
            step_ids = list(session.scalars(latest))
            rows = session.execute(select(EnrollmentStep.id, EnrollmentStep.enrollment_id)
                                   .where(EnrollmentStep.id.in_(step_ids))).all() if step_ids else []
    if not rows:
        return 0
    now = utcnow()
    session.execute(update(EnrollmentStep).where(EnrollmentStep.id.in_([r.id for r in rows]),
                                                 EnrollmentStep.replied_at.is_(None)).values(replied_at=now))
    enrollment_ids = sorted({r.enrollment_id for r in rows})
    ended = _exit(session, Enrollment.id.in_(enrollment_ids), "replied", now)
    for lead in session.scalars(select(Lead).where(Lead.id.in_(
            select(Enrollment.lead_id).where(Enrollment.id.in_(enrollment_ids))))):
        record_fact(session, lead, "replied_email", source="email")
    return ended


def record_bounce(session: Session, payload: dict) -> int:
    """A delivery status notification about a message we sent (its Message-ID is ours: a forged bounce
    about someone else's mail changes nothing) marks that message failed, puts each failed recipient that
    was its addressee on the suppression list and ends their enrollments ("bounced"). Returns how many
    recipients were suppressed."""
    from .tracking import TrackingError, suppress

    bounce = payload.get("bounce") or {}
    original = str(bounce.get("message_id") or "").strip().strip("<>")
    failed = [item for item in bounce.get("failed") or [] if isinstance(item, dict) and item.get("recipient")]
    if not original or not failed:
        return 0
    message = session.scalar(select(Message).where(Message.message_id == original))
    if message is None:
        return 0
    first = failed[0]
    message.status, message.next_attempt_at = "failed", None
    message.last_error = f"bounced {first.get('status') or ''}: {first.get('diagnostic') or ''}".strip()[:4000]
    runs = list(session.scalars(select(EnrollmentStep).where(EnrollmentStep.message_id == message.id)))
    lead_ids = set(session.scalars(select(Enrollment.lead_id).where(
        Enrollment.id.in_([r.enrollment_id for r in runs])))) if runs else set()
    suppressed_count = 0
    for item in failed:
        address = str(item["recipient"]).strip().lower()
        if address != message.to_address.lower():  # only the address this message went to
            continue
        try:
            suppress(session, message.to_address, reason="bounced", source="delivery report",
                     lead_id=next(iter(lead_ids), None), note=str(item.get("status") or "")[:500] or None)
            suppressed_count += 1
        except TrackingError as exc:
            log.warning("bounce for %s not suppressed: %s", address, exc)
    for run in runs:
        run.outcome = "bounced"
    if runs:
        _exit(session, Enrollment.id.in_([r.enrollment_id for r in runs]), "bounced")
    session.flush()
    return suppressed_count


def handle_inbound(event) -> None:
    """Called for every received e-mail (`bigledger_inbound_message`): bounces and replies."""
    from bigledger_core.db import db

    if event.payload.get("bounce"):
        record_bounce(db.session, event.payload)
        db.session.commit()
        return
    ended = record_reply(db.session, event.payload)
    db.session.commit()
    if ended:
        log.info("inbound mail %s ended %s enrollment(s) as replied", event.payload.get("message_id"), ended)


# -- statistics ----------------------------------------------------------------------------------------

COUNTS = ("enrolled", "active", "sent", "delivered", "opened", "clicked", "replied", "unsubscribed", "converted")


def _message_counts(session: Session, key, where=()) -> dict:
    """sent, delivered, opened, clicked, replied, unsubscribed, converted by `key`, from the step runs."""
    sent = EnrollmentStep.message_id.is_not(None)
    rows = session.execute(
        select(key.label("key"),
               func.count(EnrollmentStep.message_id).label("sent"),
               func.count(case((Message.status == "sent", 1))).label("delivered"),
               func.count(case((and_(sent, EnrollmentStep.opened_at.is_not(None)), 1))).label("opened"),
               func.count(case((and_(sent, EnrollmentStep.clicked_at.is_not(None)), 1))).label("clicked"),
               func.count(case((EnrollmentStep.replied_at.is_not(None), 1))).label("replied"),
               func.count(case((EnrollmentStep.unsubscribed_at.is_not(None), 1))).label("unsubscribed"),
               func.count(case((and_(sent, Lead.status == "converted"), 1))).label("converted"))
        .select_from(EnrollmentStep)
        .outerjoin(Message, Message.id == EnrollmentStep.message_id)
        .join(Enrollment, Enrollment.id == EnrollmentStep.enrollment_id)
        .join(Lead, Lead.id == Enrollment.lead_id)
        .where(*where).group_by(key)).all()
    return {row.key: row._mapping for row in rows}


def statistics(session: Session, sequence_id: int | None = None) -> list[dict]:
    """Per sequence: enrolled, active (running), sent, delivered, opened, clicked (messages), replied,
    unsubscribed (enrollments ended so), converted (enrolled leads now converted)."""
    where = [Sequence.id == sequence_id] if sequence_id else []
    enrollment = session.execute(
        select(Enrollment.sequence_id,
               func.count().label("enrolled"),
               func.count(case((Enrollment.status.in_(RUNNING), 1))).label("active"),
               func.count(case((Enrollment.exit_reason == "replied", 1))).label("replied"),
               func.count(case((Enrollment.exit_reason == "unsubscribed", 1))).label("unsubscribed"),
               func.count(case((Lead.status == "converted", 1))).label("converted"))
        .join(Lead, Lead.id == Enrollment.lead_id)
        .where(*([Enrollment.sequence_id == sequence_id] if sequence_id else []))
        .group_by(Enrollment.sequence_id)).all()
    by_sequence = {row.sequence_id: row._mapping for row in enrollment}
    messages = _message_counts(session, EnrollmentStep.sequence_id,
                               [EnrollmentStep.sequence_id == sequence_id] if sequence_id else [])
    out = []
    for sequence in session.scalars(select(Sequence).where(*where).order_by(Sequence.name)):
        e, m = by_sequence.get(sequence.id, {}), messages.get(sequence.id, {})
        out.append({"id": sequence.id, "name": sequence.name, "status": sequence.status,
                    "enrolled": e.get("enrolled", 0), "active": e.get("active", 0),
                    "sent": m.get("sent", 0), "delivered": m.get("delivered", 0), "opened": m.get("opened", 0),
                    "clicked": m.get("clicked", 0), "replied": e.get("replied", 0),
                    "unsubscribed": e.get("unsubscribed", 0), "converted": e.get("converted", 0)})
    return out


def step_statistics(session: Session, sequence_id: int) -> list[dict]:
    """Per step of a sequence (removed ones included, marked): enrolled (reached the step), active
    (waiting at it), and the message counts."""
    reached = dict(session.execute(select(EnrollmentStep.step_id, func.count()).where(
        EnrollmentStep.sequence_id == sequence_id).group_by(EnrollmentStep.step_id)).all())
    waiting = dict(session.execute(select(Enrollment.step_id, func.count()).where(
        Enrollment.sequence_id == sequence_id, Enrollment.status.in_(RUNNING)).group_by(Enrollment.step_id)).all())
    messages = _message_counts(session, EnrollmentStep.step_id, [EnrollmentStep.sequence_id == sequence_id])
    out = []
    for step in session.scalars(select(SequenceStep).where(SequenceStep.sequence_id == sequence_id)
                                .order_by(SequenceStep.position, SequenceStep.id)):
        m = messages.get(step.id, {})
        out.append({"id": step.id, "position": step.position, "name": step.name, "kind": step.kind,
                    "active_step": step.active, "template_id": step.template_id,
                    "enrolled": reached.get(step.id, 0), "active": waiting.get(step.id, 0),
                    **{k: m.get(k, 0) for k in COUNTS[2:]}})
    return out


def template_statistics(session: Session) -> list[dict]:
    """Per template: enrollments that reached a step sending it, and the message counts."""
    reached = dict(session.execute(select(EnrollmentStep.template_id, func.count(func.distinct(
        EnrollmentStep.enrollment_id))).where(EnrollmentStep.template_id.is_not(None))
        .group_by(EnrollmentStep.template_id)).all())
    messages = _message_counts(session, EnrollmentStep.template_id, [EnrollmentStep.template_id.is_not(None)])
    out = []
    for template in session.scalars(select(EmailTemplate).order_by(EmailTemplate.name)):
        m = messages.get(template.id, {})
        out.append({"id": template.id, "name": template.name, "enrolled": reached.get(template.id, 0),
                    "active": 0, **{k: m.get(k, 0) for k in COUNTS[2:]}})
    return out


def lead_statuses() -> tuple[str, ...]:
    """Statuses a set_status step may give (the others follow from scoring and conversion)."""
    return tuple(s for s in LEAD_STATUSES if s in SETTABLE_STATUSES)
