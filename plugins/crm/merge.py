"""Merging two contacts or two companies: everything moves to the survivor, nothing is lost."""
from __future__ import annotations

from flask import g, has_app_context
from flask_babel import gettext
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bigledger_core.db import utcnow

from .models import (
    Activity,
    Address,
    AuditEntry,
    Company,
    Contact,
    ContactCompany,
    Document,
    Email,
    Phone,
)
from .services import CrmValidationError, Problem

MERGEABLE = {
    "contact": ["full_name", "family_name", "given_name", "name_en", "title", "external_id", "owner_id", "team_id"],
    "company": ["name", "name_en", "legal_name", "industry", "employees", "region", "website", "status",
                "parent_id", "external_id", "owner_id", "team_id"],
}


def merge(session: Session, kind: str, survivor_id: int, loser_id: int, take: dict[str, str] | None = None):
    """Merge record `loser_id` into `survivor_id` in the caller's transaction.

    `take` maps a field (or "custom:<key>") to "loser" where the loser's value should win; the
    survivor's value wins otherwise, and empty survivor fields take the loser's value. Phones,
    e-mails, addresses, company links, activities, documents and tags move to the survivor (without
    duplicates); the loser stays, marked `merged_into`, and the audit trail keeps its values.
    """
    model = Contact if kind == "contact" else Company
    take = take or {}
    if survivor_id == loser_id:
        raise CrmValidationError([Problem("loser", gettext("a record cannot be merged into itself"))])
    survivor, loser = session.get(model, survivor_id), session.get(model, loser_id)
    if survivor is None or loser is None or survivor.merged_into_id or loser.merged_into_id:
        raise CrmValidationError([Problem("id", gettext("both records must exist and not be merged already"))])
    unknown = [f for f in take if f not in MERGEABLE[kind] and not f.startswith("custom:")]
    if unknown:
        raise CrmValidationError([Problem(f, gettext("cannot be chosen when merging")) for f in unknown])
    before = {f: _plain(getattr(loser, f)) for f in MERGEABLE[kind]} | {"custom": dict(loser.custom or {})}
    external_id = loser.external_id
    loser.external_id = None  # unique: free it before the survivor may take it
    session.flush()
    for field in MERGEABLE[kind]:
        value = external_id if field == "external_id" else getattr(loser, field)
        if take.get(field) == "loser" or (getattr(survivor, field) in (None, "") and value not in (None, "")):
            if field == "parent_id" and value == survivor.id:
                continue
            setattr(survivor, field, value)
    custom = dict(loser.custom or {})
    custom.update({k: v for k, v in (survivor.custom or {}).items() if v not in (None, "", [])})
    custom.update({k.split(":", 1)[1]: (loser.custom or {}).get(k.split(":", 1)[1])
                   for k, side in take.items() if k.startswith("custom:") and side == "loser"})
    survivor.custom = custom
    owner = Contact.__tablename__ if kind == "contact" else Company.__tablename__
    column = "contact_id" if kind == "contact" else "company_id"
    _move_unique(session, Phone, column, loser.id, survivor.id, "e164")
    _move_unique(session, Email, column, loser.id, survivor.id, "address")
    for detail in (Address, Document, Activity):
        session.execute(update(detail).where(getattr(detail, column) == loser.id).values({column: survivor.id}))
    other = "company_id" if kind == "contact" else "contact_id"
    have = set(session.scalars(select(getattr(ContactCompany, other))
                               .where(getattr(ContactCompany, column) == survivor.id)))
    for link in session.scalars(select(ContactCompany).where(getattr(ContactCompany, column) == loser.id)):
        if getattr(link, other) in have:
            session.delete(link)
        else:
            setattr(link, column, survivor.id)
    if kind == "company":
        session.execute(update(Company).where(Company.parent_id == loser.id, Company.id != survivor.id)
                        .values(parent_id=survivor.id))
        loser.parent_id = None
    for tag in list(loser.tags):
        if tag not in survivor.tags:
            survivor.tags.append(tag)
    loser.merged_into_id = survivor.id
    user = getattr(g, "user", None) if has_app_context() else None
    session.add(AuditEntry(entity=owner, record_id=loser.id, action="merge", at=utcnow(),
                           user_id=getattr(user, "id", None) if getattr(user, "is_authenticated", False) else None,
                           changes={"merged_into": survivor.id, "values": before}))
    session.flush()
    return survivor


def _move_unique(session: Session, model, column: str, loser_id: int, survivor_id: int, key: str) -> None:
    kept = set(session.scalars(select(getattr(model, key)).where(getattr(model, column) == survivor_id)))
    for row in session.scalars(select(model).where(getattr(model, column) == loser_id)):
        if getattr(row, key) is not None and getattr(row, key) in kept:
            session.delete(row)
        else:
            setattr(row, column, survivor_id)
            row.is_primary = False
            kept.add(getattr(row, key))


def _plain(value):
    return value.isoformat() if hasattr(value, "isoformat") else value
