"""A person's data: export everything held about an e-mail address, and erase (anonymize) it.

    export_person(session, address: str) -> dict
    erase_person(session, address: str, *, by_id: int | None = None) -> dict[str, int]

The person is found by e-mail address: the leads with that address, the contacts with that address among
their e-mails (and the contacts those leads were converted into), the e-mails sent to it and received from it,
their enrollments, suppression and consent records.

Erasing keeps every row that statistics count (leads, contacts, activities, enrollments and step runs,
messages, deals) and removes what identifies the person:

* leads: the name becomes "已删除 / erased #<id>"; e-mail, phone, address, title, website, message, referrer,
  consent text, custom fields, search text, idempotency key and disqualification reason are cleared; consent
  is off. Facts (what the lead did, as counts) and assignments stay: without a name they describe no one.
* contacts: the name becomes the same placeholder, other name fields, title, external id and custom fields
  are cleared; their e-mail, phone and address rows and documents are deleted; their activities keep kind,
  times and links but lose subject text, notes and outcome.
* messages sent to the address: recipient replaced by "(erased)", subject, bodies, headers and error text
  cleared (still queued ones are cancelled); messages received from it: sender, subject and bodies cleared,
  attachments deleted.
* the audit trail of those records keeps who changed what and when, without the values; one "erase" entry
  per lead and contact records who erased it.
* domain events in the outbox that carry the address or describe those leads and contacts lose their
  personal values.
* the suppression list keeps the address's digest only, so the person stays suppressed; consent records keep
  action, source and time without text; a consent record "erased" notes the erasure.

Data held by other modules (finance, POS…) is theirs to erase. Deal names are kept as entered.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from typing import Any

from flask_babel import gettext
from sqlalchemy import (
    String,
    Text,
    and_,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from bigledger_core.db import utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.models import (
    InboundAttachment,
    InboundMessage,
    Message,
    OutboxEvent,
)

from ..leads.models import Assignment, Lead, LeadFact
from ..models import (
    Activity,
    Address,
    AuditEntry,
    Contact,
    ContactCompany,
    Document,
    Email,
    Phone,
)
from ..normalize import InvalidValue, normalize_email
from .models import (
    ConsentRecord,
    Enrollment,
    EnrollmentStep,
    Sequence,
    SequenceStep,
    Suppression,
)
from .tracking import address_hash, suppress_once

log = logging.getLogger(__name__)
PLACEHOLDER = "已删除 / erased"
ERASED_ADDRESS = "(erased)"
PERSONAL_KEYS = {"name", "full_name", "family_name", "given_name", "name_en", "email", "phone", "address",
                 "title", "message", "website", "to", "to_address", "sender", "sender_address"}


class PrivacyError(BigLedgerError):
    """An export or erasure that cannot be done (the address is not an e-mail address)."""


def clean_address(address: str) -> str:
    """The address as the CRM stores it; PrivacyError (translated) when it is not an e-mail address."""
    try:
        return normalize_email(str(address or ""))
    except InvalidValue:
        raise PrivacyError(gettext("%(value)s is not a valid e-mail address", value=address)) from None


def _jsonable(value):
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return None
    return value


def _row(obj, skip: tuple[str, ...] = ()) -> dict:
    return {c.key: _jsonable(getattr(obj, c.key)) for c in obj.__mapper__.column_attrs if c.key not in skip}


def _lead_ids(session: Session, address: str) -> list[int]:
    return list(session.scalars(select(Lead.id).where(Lead.email == address).order_by(Lead.id)))


def _contact_ids(session: Session, address: str, lead_ids: list[int]) -> list[int]:
    by_email = select(Email.contact_id).where(Email.address == address, Email.contact_id.is_not(None))
    converted = select(Lead.contact_id).where(Lead.id.in_(lead_ids), Lead.contact_id.is_not(None))
    return sorted(set(session.scalars(by_email)) | set(session.scalars(converted)))


def _sent_to(address: str):
    return func.lower(Message.to_address) == address


def _received_from(address: str):
    return func.lower(InboundMessage.sender_address) == address


# -- export -------------------------------------------------------------------------------------------------

def export_person(session: Session, address: str) -> dict:
    """Everything held about the person with this e-mail address, as JSON-ready data: leads (fields, facts,
    assignments, consent), contacts (details, companies, activities, document names), enrollments with their
    step runs, messages sent to and received from the address, suppression and consent records, and the
    audit trail of those leads and contacts."""
    address = clean_address(address)
    lead_ids = _lead_ids(session, address)
    contact_ids = _contact_ids(session, address, lead_ids)
    digest = address_hash(address)

    facts: dict[int, list] = {}
    for fact in session.scalars(select(LeadFact).where(LeadFact.lead_id.in_(lead_ids)).order_by(LeadFact.id)):
        facts.setdefault(fact.lead_id, []).append(_row(fact, ("id", "lead_id")))
    assignments: dict[int, list] = {}
    for item in session.scalars(select(Assignment).where(Assignment.lead_id.in_(lead_ids)).order_by(Assignment.at)):
        assignments.setdefault(item.lead_id, []).append(_row(item, ("id", "lead_id")))
    leads = []
    for lead in session.scalars(select(Lead).where(Lead.id.in_(lead_ids)).order_by(Lead.id)):
        data = _row(lead, ("search_text",))
        data["consent"] = {"given": lead.consent, "text": lead.consent_text, "at": _jsonable(lead.consent_at)}
        data["facts"] = facts.get(lead.id, [])
        data["assignments"] = assignments.get(lead.id, [])
        leads.append(data)

    detail_ids: dict[str, list[int]] = {}
    details: dict[int, dict[str, list]] = {cid: {"emails": [], "phones": [], "addresses": [], "companies": [],
                                                 "activities": [], "documents": []} for cid in contact_ids}
    for model, key in ((Email, "emails"), (Phone, "phones"), (Address, "addresses"),
                       (ContactCompany, "companies"), (Activity, "activities")):
        for item in session.scalars(select(model).where(model.contact_id.in_(contact_ids)).order_by(model.id)):
            details[item.contact_id][key].append(_row(item, ("contact_id",)))
            detail_ids.setdefault(model.__tablename__, []).append(item.id)
    for doc in session.scalars(select(Document).where(Document.contact_id.in_(contact_ids)).order_by(Document.id)):
        details[doc.contact_id]["documents"].append(_row(doc, ("contact_id",)))
    contacts = [{**_row(contact, ("search_text",)), **details[contact.id]}
                for contact in session.scalars(select(Contact).where(Contact.id.in_(contact_ids))
                                               .order_by(Contact.id))]

    steps: dict[int, list] = {}
    for run, step_name, kind in session.execute(
            select(EnrollmentStep, SequenceStep.name, SequenceStep.kind)
            .join(SequenceStep, SequenceStep.id == EnrollmentStep.step_id)
            .join(Enrollment, Enrollment.id == EnrollmentStep.enrollment_id)
            .where(Enrollment.lead_id.in_(lead_ids)).order_by(EnrollmentStep.ran_at, EnrollmentStep.id)):
        steps.setdefault(run.enrollment_id, []).append({**_row(run, ("enrollment_id",)), "step_name": step_name,
                                                        "step_kind": kind})
    enrollments = [{**_row(enrollment), "sequence": name, "steps": steps.get(enrollment.id, [])}
                   for enrollment, name in session.execute(
                       select(Enrollment, Sequence.name).join(Sequence, Sequence.id == Enrollment.sequence_id)
                       .where(Enrollment.lead_id.in_(lead_ids)).order_by(Enrollment.id))]

    sent = [_row(message, ("claim", "locked_until")) for message in session.scalars(
        select(Message).where(_sent_to(address)).order_by(Message.id))]
    received = []
    attachments: dict[int, list] = {}
    inbound = list(session.scalars(select(InboundMessage).where(_received_from(address)).order_by(InboundMessage.id)))
    for name, content_type, size, message_id in session.execute(
            select(InboundAttachment.filename, InboundAttachment.content_type, InboundAttachment.size,
                   InboundAttachment.message_id)
            .where(InboundAttachment.message_id.in_([m.id for m in inbound])).order_by(InboundAttachment.id)):
        attachments.setdefault(message_id, []).append({"filename": name, "content_type": content_type,
                                                       "size": size})
    for message in inbound:
        received.append({**_row(message, ("message_key",)), "attachments": attachments.get(message.id, [])})

    audited = {Lead.__tablename__: lead_ids, Contact.__tablename__: contact_ids, **detail_ids}
    audit = [_row(entry, ("id",)) for entry in session.scalars(
        select(AuditEntry).where(or_(*(and_(AuditEntry.entity == entity, AuditEntry.record_id.in_(ids))
                                       for entity, ids in audited.items())))
        .order_by(AuditEntry.at, AuditEntry.id))]
    suppression = session.scalar(select(Suppression).where(Suppression.address_hash == digest))
    consent = [_row(record) for record in session.scalars(
        select(ConsentRecord).where(or_(ConsentRecord.address_hash == digest, ConsentRecord.lead_id.in_(lead_ids)))
        .order_by(ConsentRecord.at, ConsentRecord.id))]
    return {"address": address, "exported_at": utcnow().isoformat(), "leads": leads, "contacts": contacts,
            "enrollments": enrollments, "messages_sent": sent, "messages_received": received,
            "suppression": _row(suppression) if suppression is not None else None, "consent_records": consent,
            "audit": audit}


# -- erasure ------------------------------------------------------------------------------------------------

def _placeholder(model):
    """`已删除 / erased #<id>` for each row, in SQL."""
    return literal(f"{PLACEHOLDER} #", String) + cast(model.id, String)


def _scrub(value: Any, address: str) -> Any:
    """A payload with personal values replaced (keys that name a person, strings that contain the address)."""
    if isinstance(value, dict):
        return {k: (PLACEHOLDER if isinstance(v, str) and v else None) if k in PERSONAL_KEYS else _scrub(v, address)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, address) for v in value]
    if isinstance(value, str) and address in value.lower():
        return PLACEHOLDER
    return value


def _scrub_events(session: Session, address: str, lead_ids: list[int], contact_ids: list[int]) -> int:
    """Outbox events that carry the address, or describe one of the leads or contacts, lose personal values."""
    text = cast(OutboxEvent.payload, Text)
    pattern = address.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    conditions = [func.lower(text).like(f"%{pattern}%", escape="\\")]
    for prefix, ids in (("crm_lead_", lead_ids), ("crm_contact_", contact_ids)):
        for start in range(0, len(ids), 200):
            mentions = [text.like(f'%"id": {i}{end}%') for i in ids[start:start + 200] for end in (",", "}")]
            conditions.append(OutboxEvent.name.like(f"{prefix}%") & or_(*mentions))
    scrubbed = 0
    for event in session.scalars(select(OutboxEvent).where(or_(*conditions))):
        payload = event.payload if isinstance(event.payload, dict) else {}
        record = payload.get("id")
        if (event.name.startswith("crm_lead_") and record in lead_ids) \
                or (event.name.startswith("crm_contact_") and record in contact_ids) \
                or address in json.dumps(event.payload, ensure_ascii=False).lower():
            event.payload = _scrub(event.payload, address)
            scrubbed += 1
    return scrubbed


def erase_person(session: Session, address: str, *, by_id: int | None = None) -> dict[str, int]:
    """Anonymize the person with this e-mail address everywhere the CRM holds them (see the module's
    docstring for what is kept and what is removed), keep them on the suppression list by digest, and
    record who erased them. One transaction: the caller commits. Returns counts of what was changed."""
    from .services import exit_for_address

    address = clean_address(address)
    digest = address_hash(address)
    now = utcnow()
    lead_ids = _lead_ids(session, address)
    contact_ids = _contact_ids(session, address, lead_ids)
    counts: dict[str, int] = {"leads": len(lead_ids), "contacts": len(contact_ids)}

    # while the leads still have the address: end their running enrollments
    counts["enrollments_ended"] = exit_for_address(session, address, "erased")
    row, _created = suppress_once(session, address, reason="erased", source="erasure", by_id=by_id)
    session.execute(update(Suppression).where(Suppression.address_hash == digest).values(address=None, note=None)
                    .execution_options(synchronize_session=False))
    session.expire(row)

    # Core statements, not the ORM: the audit trail must not copy the values being erased
    if lead_ids:
        session.execute(update(Lead).where(Lead.id.in_(lead_ids)).values(
            name=_placeholder(Lead), email=None, phone=None, phone_e164=None, address=None, title=None,
            website=None, message=None, referrer=None, consent=False, consent_text=None, custom={},
            search_text="", idempotency_key=None, disqualify_reason=None, version=Lead.version + 1,
            updated_at=now).execution_options(synchronize_session=False))
    detail_ids: dict[str, list[int]] = {}
    if contact_ids:
        for model in (Email, Phone, Address):
            detail_ids[model.__tablename__] = list(session.scalars(
                select(model.id).where(model.contact_id.in_(contact_ids))))
            session.execute(delete(model).where(model.contact_id.in_(contact_ids))
                            .execution_options(synchronize_session=False))
        counts["contact_details"] = sum(len(ids) for ids in detail_ids.values())
        session.execute(update(Contact).where(Contact.id.in_(contact_ids)).values(
            full_name=_placeholder(Contact), family_name=None, given_name=None, name_en=None, title=None,
            external_id=None, custom={}, search_text="", pinyin=None, initials=None, version=Contact.version + 1,
            updated_at=now)
            .execution_options(synchronize_session=False))
        counts["activities"] = session.execute(update(Activity).where(Activity.contact_id.in_(contact_ids)).values(
            subject=PLACEHOLDER, body=None, outcome=None).execution_options(synchronize_session=False)).rowcount
        documents = list(session.scalars(select(Document).where(Document.contact_id.in_(contact_ids))))
        for document in documents:  # through the ORM: the stored file goes when no other row uses it
            session.delete(document)
        counts["documents"] = len(documents)

    # the audit trail keeps who and when, not the values
    audited = [("crm_lead", lead_ids), ("crm_contact", contact_ids), *detail_ids.items()]
    for entity, ids in audited:
        if ids:
            session.execute(update(AuditEntry).where(AuditEntry.entity == entity, AuditEntry.record_id.in_(ids))
                            .values(changes={"erased": True}).execution_options(synchronize_session=False))
    session.add_all([AuditEntry(entity=entity, record_id=record_id, action="erase", changes={}, user_id=by_id,
                                at=now) for entity, ids in audited[:2] for record_id in ids])

    counts["messages_sent"] = session.execute(update(Message).where(_sent_to(address)).values(
        to_address=ERASED_ADDRESS, to_name=None, subject=PLACEHOLDER, body_text="", body_html=None, headers=None,
        last_error=None).execution_options(synchronize_session=False)).rowcount
    session.execute(update(Message).where(Message.to_address == ERASED_ADDRESS, Message.status == "queued").values(
        status="failed", next_attempt_at=None, last_error="erased").execution_options(synchronize_session=False))
    inbound_ids = list(session.scalars(select(InboundMessage.id).where(_received_from(address))))
    if inbound_ids:
        session.execute(delete(InboundAttachment).where(InboundAttachment.message_id.in_(inbound_ids))
                        .execution_options(synchronize_session=False))
        session.execute(update(InboundMessage).where(InboundMessage.id.in_(inbound_ids)).values(
            sender_address=ERASED_ADDRESS, sender_name=None, subject=PLACEHOLDER, body_text="", body_html=None)
            .execution_options(synchronize_session=False))
    counts["messages_received"] = len(inbound_ids)

    counts["consent_records"] = session.execute(update(ConsentRecord).where(
        or_(ConsentRecord.address_hash == digest, ConsentRecord.lead_id.in_(lead_ids))).values(text=None)
        .execution_options(synchronize_session=False)).rowcount
    session.add(ConsentRecord(address_hash=digest, action="erased", source=f"erasure by user {by_id}"
                              if by_id is not None else "erasure", at=now))
    counts["events"] = _scrub_events(session, address, lead_ids, contact_ids)
    session.flush()
    log.info("person %s erased by user %s: %s", digest[:12], by_id, counts)
    return counts
