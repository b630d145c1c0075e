"""What the CRM answers other modules (the `crm_` service hooks): who customers are, the contact with a phone
number or e-mail address, a new contact, the sales pipelines. Bridges use these instead of reading the CRM's tables."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask_babel import gettext
from sqlalchemy import false, literal, or_, select, union_all
from sqlalchemy.orm import Session

from bigledger_core.db import in_ids

from .models import Company, Contact, Email, Phone
from .pipeline.models import Pipeline
from .services import CrmValidationError, Problem, clean_email, clean_phone


def customers(session: Session, company_ids: Iterable[int], contact_ids: Iterable[int],
              external_ids: Iterable[str] = ()) -> dict[str, dict]:
    """Name, external id, survivor, phones and e-mails of companies and contacts, given by id or external id:
    four statements at most."""
    external = sorted({str(e) for e in external_ids or () if e})
    wanted = {"companies": (Company, Company.name, sorted(set(company_ids or ()))),
              "contacts": (Contact, Contact.full_name, sorted(set(contact_ids or ())))}
    found: dict[str, dict[int, dict[str, Any]]] = {"companies": {}, "contacts": {}}
    for key, (model, name, ids) in wanted.items():
        if not ids and not external:
            continue
        chosen = or_(in_ids(session, model.id, ids) if ids else false(),
                     model.external_id.in_(external) if external else false())
        for row in session.execute(select(model.id, name, model.external_id, model.merged_into_id).where(chosen)):
            found[key][row[0]] = {"id": row[0], "name": row[1], "external_id": row[2], "merged_into": row[3],
                                  "phones": [], "emails": []}
        if not found[key]:
            continue
        owner = Phone.company_id if model is Company else Phone.contact_id
        email_owner = Email.company_id if model is Company else Email.contact_id
        points = union_all(
            select(owner.label("owner"), Phone.e164.label("value"), Phone.is_primary.label("is_primary"),
                   Phone.id.label("id"), literal(1).label("kind"))
            .where(in_ids(session, owner, list(found[key])), Phone.e164.is_not(None)),
            select(email_owner, Email.address, Email.is_primary, Email.id, literal(2))
            .where(in_ids(session, email_owner, list(found[key])))).subquery()
        for owner_id, value, _primary, _id, kind in session.execute(
                select(points).order_by(points.c.is_primary.desc(), points.c.id)):
            bucket = found[key][owner_id]["phones" if kind == 1 else "emails"]
            if value not in bucket:
                bucket.append(value)
    return found


def pipelines(session: Session) -> list[dict[str, Any]]:
    """The sales pipelines by name: id, name, English name, default and active flags."""
    return [{"id": p.id, "name": p.name, "name_en": p.name_en, "is_default": p.is_default, "active": p.active}
            for p in session.execute(select(Pipeline.id, Pipeline.name, Pipeline.name_en, Pipeline.is_default,
                                            Pipeline.active).order_by(Pipeline.name))]


def find_contact(session: Session, phone: str | None, email: str | None) -> int | None:
    """The live contact with this E.164 number, else with this address; primary first, then the oldest."""
    live = Contact.merged_into_id.is_(None)
    if phone:
        found = session.scalar(select(Phone.contact_id).join(Contact, Contact.id == Phone.contact_id)
                               .where(Phone.e164 == phone, live)
                               .order_by(Phone.is_primary.desc(), Contact.id).limit(1))
        if found is not None:
            return found
    if email:
        found = session.scalar(select(Email.contact_id).join(Contact, Contact.id == Email.contact_id)
                               .where(Email.address == email.strip().lower(), live)
                               .order_by(Email.is_primary.desc(), Contact.id).limit(1))
        if found is not None:
            return found
    return None


def create_contact(session: Session, data: dict[str, Any]) -> int:
    """A new contact with its primary phone and e-mail, checked first (CrmValidationError names the field)."""
    name = " ".join(str(data.get("full_name") or "").split())
    problems = []
    if not name:
        problems.append(Problem("full_name", gettext("is required")))
    elif len(name) > 200:
        problems.append(Problem("full_name", gettext("at most %(count)s characters", count=200)))
    phone = email = None
    try:
        phone = clean_phone(str(data["phone"])) if data.get("phone") else None
    except CrmValidationError as exc:
        problems += exc.problems
    try:
        email = clean_email(str(data["email"])) if data.get("email") else None
    except CrmValidationError as exc:
        problems += exc.problems
    if problems:
        raise CrmValidationError(problems)
    contact = Contact(full_name=name, title=data.get("title"), owner_id=data.get("owner_id"))
    if phone:
        contact.phones.append(Phone(raw=phone[0], e164=phone[1], kind="mobile", is_primary=True))
    if email:
        contact.emails.append(Email(address=email, kind="personal", is_primary=True))
    session.add(contact)
    session.flush()
    return contact.id

