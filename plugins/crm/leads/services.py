"""Lead commands: create (once per idempotency key), record facts, score — one lead at a time or every lead
at once in SQL — qualify, disqualify, and load versioned scoring rules. Screens, the REST API, web forms,
inbound e-mail, the CLI and jobs all call these."""
from __future__ import annotations

from typing import Any

from flask import current_app, has_app_context
from flask_babel import gettext
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bigledger_core.db import utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.events import emit

from ..normalize import address_hash, search_text
from ..services import (
    CrmValidationError,
    Problem,
    clean_custom,
    clean_email,
    clean_phone,
)
from .models import (
    LEAD_SOURCES,
    LEAD_STATUSES,
    ConsentRecord,
    Lead,
    LeadFact,
    ScoringRuleSet,
)
from .scoring_rules import RuleSet, RuleSetError, explain, parse_rule_set, score_sql
from .vocabulary import fact_key, lead_vocabulary, record_of

OPEN_STATUSES = ("new", "working", "nurturing")
LIMITS = {"name": 200, "title": 200, "company_name": 200, "industry": 100, "website": 300, "country": 100,
          "city": 100, "address": 300, "channel": 100, "campaign": 200, "utm_source": 200, "utm_medium": 200,
          "utm_campaign": 200, "utm_term": 200, "utm_content": 200, "referrer": 1000, "message": 5000}


class LeadError(BigLedgerError):
    """A lead action that is not allowed; the message says why (translated)."""


# -- validation -------------------------------------------------------------------------------------------

def _known_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone (Asia/Shanghai, Asia/Kuala_Lumpur…)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def clean_lead(lead: Lead, session: Session | None = None) -> None:
    """Check and normalize a lead's values (with `session`, its custom fields too); CrmValidationError names
    every bad field. Nothing is written."""
    problems: list[Problem] = []
    if session is not None:
        try:
            with session.no_autoflush:
                lead.custom = clean_custom(session, "lead", lead.custom or {})
        except CrmValidationError as exc:
            problems += exc.problems
    lead.status, lead.source = lead.status or "new", lead.source or "manual"
    lead.name = " ".join((lead.name or "").split())
    if not lead.name:
        problems.append(Problem("name", gettext("a lead needs a name")))
    for field, limit in LIMITS.items():
        value = getattr(lead, field)
        if isinstance(value, str):
            value = value.strip() or None
            setattr(lead, field, value)
            if value and len(value) > limit:
                problems.append(Problem(field, gettext("at most %(max)d characters", max=limit)))
    if lead.email:
        try:
            lead.email = clean_email(lead.email)
        except CrmValidationError as exc:
            problems += exc.problems
    if lead.phone:
        try:
            lead.phone, lead.phone_e164 = clean_phone(lead.phone)
        except CrmValidationError as exc:
            problems += exc.problems
    else:
        lead.phone_e164 = None
    if isinstance(lead.timezone, str):
        lead.timezone = lead.timezone.strip() or None
    if lead.timezone and not _known_zone(lead.timezone):
        problems.append(Problem("timezone", gettext("“%(value)s” is not a time zone (e.g. Asia/Shanghai)",
                                                    value=lead.timezone[:64])))
    if lead.company_size is not None and not 0 <= lead.company_size <= 10_000_000:
        problems.append(Problem("company_size", gettext("must be a number of employees from 0 to 10,000,000")))
    if lead.source not in LEAD_SOURCES:
        problems.append(Problem("source", gettext("must be one of %(values)s", values=", ".join(LEAD_SOURCES))))
    if lead.status not in LEAD_STATUSES:
        problems.append(Problem("status", gettext("must be one of %(values)s", values=", ".join(LEAD_STATUSES))))
    if problems:
        raise CrmValidationError(problems)
    lead.search_text = search_text(lead.name, lead.company_name)


# -- scoring ----------------------------------------------------------------------------------------------

def active_rule_set(session: Session) -> tuple[ScoringRuleSet, RuleSet] | None:
    """The newest scoring rule set, checked against today's vocabulary (None when none was loaded)."""
    row = session.scalar(select(ScoringRuleSet).order_by(ScoringRuleSet.version.desc()).limit(1))
    if row is None:
        return None
    return row, parse_rule_set(row.document, lead_vocabulary(session))


def load_rule_set(session: Session, source: Any, *, user_id: int | None = None) -> ScoringRuleSet:
    """Check `source` (the product page's JSON/YAML, Chinese or English keys) and store it as the next
    version. Raises RuleSetError listing every problem; nothing is saved then. Rescoring is separate
    (`rescore_all`), so a large base is rescored by a background job."""
    rule_set = parse_rule_set(source, lead_vocabulary(session))
    version = (session.scalar(select(func.max(ScoringRuleSet.version))) or 0) + 1
    row = ScoringRuleSet(version=version, document=rule_set.to_document(), threshold=rule_set.threshold,
                         created_by_id=user_id)
    session.add(row)
    session.flush()
    return row


def rescore_all(session: Session, *, batch: int = 50_000, progress=None) -> int:
    """Recompute every lead's score from the active rules with set-based UPDATEs (one per id range, writing
    only the rows whose score changes; `rule_set_version` tells which version last changed a score), then
    qualify those that reached the threshold. Returns the number of leads scored."""
    active = active_rule_set(session)
    if active is None:
        return 0
    row, rule_set = active
    expression = score_sql(rule_set, lead_vocabulary(session))
    low, high = session.execute(select(func.min(Lead.id), func.max(Lead.id))).one()
    done = 0
    if low is not None:
        for start in range(low, high + 1, batch):
            window = (Lead.id >= start, Lead.id < start + batch)
            # only rows whose score changes are written: fewer dead rows, and the rest cost a read
            session.execute(update(Lead).where(*window, Lead.score.is_distinct_from(expression))
                            .values(score=expression, rule_set_version=row.version)
                            .execution_options(synchronize_session=False))
            done += session.scalar(select(func.count()).select_from(Lead).where(*window)) or 0
            row.rescored_count = done
            if progress is not None:
                progress(done)
    _qualify(session, rule_set.threshold)
    row.rescored_at = utcnow()
    return done


def rescore(session: Session, lead: Lead) -> int:
    """Recompute one lead's score with the same SQL as `rescore_all`; qualify it if it reached the threshold."""
    active = active_rule_set(session)
    if active is None:
        return lead.score
    row, rule_set = active
    session.flush()
    session.execute(update(Lead).where(Lead.id == lead.id)
                    .values(score=score_sql(rule_set, lead_vocabulary(session)), rule_set_version=row.version)
                    .execution_options(synchronize_session=False))
    session.expire(lead, ["score", "rule_set_version", "version"])
    _qualify(session, rule_set.threshold, lead_id=lead.id)
    return lead.score


def _qualify(session: Session, threshold: int, lead_id: int | None = None) -> None:
    """Mark qualified, once, the open leads at or above the threshold, and emit `crm_lead_qualified` for each."""
    condition = [Lead.score >= threshold, Lead.qualified_at.is_(None), Lead.status.in_(OPEN_STATUSES)]
    if lead_id is not None:
        condition.append(Lead.id == lead_id)
    now = utcnow()
    ids = session.scalars(select(Lead.id).where(*condition)).all()
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        session.execute(update(Lead).where(Lead.id.in_(chunk), Lead.qualified_at.is_(None))
                        .values(status="qualified", qualified_at=now, version=Lead.version + 1)
                        .execution_options(synchronize_session=False))
        for row in session.execute(select(Lead.id, Lead.name, Lead.score, Lead.owner_id, Lead.team_id,
                                          Lead.source, Lead.channel, Lead.campaign).where(Lead.id.in_(chunk))):
            emit(session, "crm_lead_qualified", {"id": row.id, "name": row.name, "score": row.score,
                                                 "threshold": threshold, "owner_id": row.owner_id,
                                                 "team_id": row.team_id, "source": row.source,
                                                 "channel": row.channel, "campaign": row.campaign})
    if lead_id is not None and ids:
        for obj in session.identity_map.values():
            if isinstance(obj, Lead) and obj.id == lead_id:
                session.expire(obj, ["status", "qualified_at", "version"])


def why(session: Session, lead: Lead) -> list[dict]:
    """Which rules fired for this lead and the points each gave (the score's explanation)."""
    active = active_rule_set(session)
    if active is None:
        return []
    facts = set(session.scalars(select(LeadFact.fact).where(LeadFact.lead_id == lead.id)))
    return [{"rule": e.index, "criterion": e.criterion, "points": e.points, "fired": e.fired}
            for e in explain(active[1], record_of(lead, facts))]


# -- creating leads and recording what they do ----------------------------------------------------------

def _hook_facts(lead: Lead) -> list[tuple[str, int]]:
    """Facts other modules know about this lead (`crm_lead_facts`)."""
    if not has_app_context():
        return []
    from bigledger_core.modules import enabled_modules

    found = []
    for _plugin, answer in current_app.extensions["bigledger"].call_each(
            "crm_lead_facts", modules=enabled_modules(), lead=lead):
        for item in answer or []:
            name, count = (item, 1) if isinstance(item, str) else (item.get("fact"), int(item.get("count", 1)))
            key = fact_key(str(name or ""))
            if key:
                found.append((key, max(1, count)))
    return found


def create_lead(session: Session, lead: Lead, *, idempotency_key: str | None = None) -> tuple[Lead, bool]:
    """Add a lead: checked, normalized, scored (qualified when it reaches the threshold), `crm_lead_created`
    emitted. With an idempotency key the same key returns the lead it created the first time, also when two
    requests race. Returns (lead, created)."""
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip()
        if not idempotency_key or len(idempotency_key) > 200:
            raise CrmValidationError([Problem("Idempotency-Key", gettext("give 1 to 200 characters"))])
        found = session.scalar(select(Lead).where(Lead.idempotency_key == idempotency_key))
        if found is not None:
            return found, False
        lead.idempotency_key = idempotency_key
    clean_lead(lead, session)
    if lead.consent and lead.consent_at is None:
        lead.consent_at = utcnow()
    try:
        with session.begin_nested():
            session.add(lead)
            session.flush()
    except IntegrityError:
        found = session.scalar(select(Lead).where(Lead.idempotency_key == idempotency_key)) \
            if idempotency_key else None
        if found is None:
            raise
        return found, False
    for key, count in _hook_facts(lead):
        _add_fact(session, lead.id, key, count, "plugin")
    emit(session, "crm_lead_created", _payload(lead))
    rescore(session, lead)
    from . import assignment, duplicates

    lead.duplicates = duplicates.check(session, lead)  # shown to whoever captured it; not stored on the lead
    if lead.owner_id is None:
        assignment.assign(session, lead)
    return lead, True


def _add_fact(session: Session, lead_id: int, key: str, count: int, source: str | None) -> None:
    now = utcnow()
    fact = session.scalar(select(LeadFact).where(LeadFact.lead_id == lead_id, LeadFact.fact == key)
                          .with_for_update())
    if fact is None:
        session.add(LeadFact(lead_id=lead_id, fact=key, count=count, source=source, first_at=now, last_at=now))
    else:
        fact.count, fact.last_at = fact.count + count, now
    session.flush()


def record_fact(session: Session, lead: Lead, fact: str, *, count: int = 1, source: str | None = "api") -> int:
    """Record that the lead did something (a known fact, by key or its Chinese or English name; e-mail opens
    and clicks count in their own fields) and rescore it. Returns the new score."""
    name = (fact or "").strip()
    if name.casefold() in {"email_open", "email opens", "邮件开启", "邮件打开"}:
        lead.email_opens = (lead.email_opens or 0) + count
    elif name.casefold() in {"email_click", "email clicks", "邮件点击"}:
        lead.email_clicks = (lead.email_clicks or 0) + count
    else:
        key = fact_key(name)
        if key is None:
            from .vocabulary import FACTS

            known = ", ".join(f"{zh} / {key}" for key, zh, _en, _aliases in FACTS)
            raise LeadError(gettext("“%(fact)s” is not a known fact (known facts: %(known)s, email_open, "
                                    "email_click)", fact=name, known=known))
        _add_fact(session, lead.id, key, count, source)
    session.flush()
    return rescore(session, lead)


def record_consent(session: Session, lead: Lead, *, given: bool, source: str) -> None:
    """Keep a consent given or withdrawn for `lead`: the text it was given for, when and how (`source`:
    "api", "form:<slug>", …). Given consent also dates the lead's consent."""
    now = utcnow()
    if given:
        lead.consent_at = lead.consent_at or now
    session.add(ConsentRecord(address_hash=address_hash(lead.email) if lead.email else None, lead_id=lead.id,
                              action="given" if given else "withdrawn", source=source[:100],
                              text=lead.consent_text if given else None, at=lead.consent_at if given else now))


def consent_changed(lead: Lead) -> bool | None:
    """True or False when this unit of work gives or withdraws the lead's consent; None when it does not."""
    from sqlalchemy import inspect

    history = inspect(lead).attrs.consent.history
    if not history.has_changes() or bool(history.added and history.added[0]) == bool(
            history.deleted and history.deleted[0]):
        return None
    return bool(history.added and history.added[0])


def disqualify(session: Session, lead: Lead, reason: str | None) -> None:
    """Disqualify a lead; a reason is required."""
    text = (reason or "").strip()
    if not text:
        raise LeadError(gettext("Say why the lead is disqualified."))
    if lead.status == "converted":
        raise LeadError(gettext("A converted lead cannot be disqualified."))
    lead.status, lead.disqualify_reason = "disqualified", text[:500]


def _payload(lead: Lead) -> dict:
    return {"id": lead.id, "name": lead.name, "email": lead.email, "phone": lead.phone_e164,
            "company_name": lead.company_name, "source": lead.source, "channel": lead.channel,
            "campaign": lead.campaign, "owner_id": lead.owner_id, "team_id": lead.team_id}


def rescore_job() -> None:
    """Scheduler job: rescore every lead when the active rule set has not been applied yet."""
    from bigledger_core.db import db

    row = db.session.scalar(select(ScoringRuleSet).order_by(ScoringRuleSet.version.desc()).limit(1))
    if row is None or row.rescored_at is not None:
        return
    try:
        rescore_all(db.session)
        db.session.commit()
    except RuleSetError:
        db.session.rollback()
        raise

