"""Read side of the CRM: search, likely duplicates, the timeline and the 360° view, all set-based."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import current_app
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import func, literal_column, or_, select, union
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, selectinload

from bigledger_core.security import visibility_clause

from .leads.queries import customer_leads
from .models import (
    Activity,
    Address,
    Company,
    Contact,
    ContactCompany,
    ContactRole,
    Document,
    Email,
    Phone,
)
from .normalize import normalize_name, phone_query
from .pipeline.queries import customer_deals, open_value_by_company, roll_up
from .services import ancestors, custom_fields, descendants, phone_region

KINDS = {"company": Company, "contact": Contact}


def _visible(model, user, session: Session):
    clause = visibility_clause(model, user, session)
    return [model.merged_into_id.is_(None)] + ([clause] if clause is not None else [])


class SearchTimeout(Exception):
    """A search statement ran longer than `BIGLEDGER_SEARCH_TIMEOUT` allows and PostgreSQL stopped it."""


# pg_trgm extracts no trigram from fewer characters: shorter input is matched word by word on PostgreSQL
SHORT_INPUT = 3
_SIMPLE = literal_column("'simple'::regconfig")  # a constant, so the full-text index's expression matches


def search(session: Session, q: str, user, limit: int = 20) -> list[dict]:
    """Companies and contacts matching `q` by name, pinyin, e-mail, phone (any format) or company name:
    companies first, then contacts, each shortest name first. On PostgreSQL an input shorter than 3
    characters matches the start of a word (a name, its pinyin or initials); longer input anywhere.
    Raises SearchTimeout when a statement runs past `BIGLEDGER_SEARCH_TIMEOUT` seconds (PostgreSQL)."""
    text = normalize_name(q)
    if len(text) < 1:
        return []
    timeout = current_app.config.get("BIGLEDGER_SEARCH_TIMEOUT") or 0
    if session.get_bind().dialect.name != "postgresql" or timeout <= 0:
        return _search(session, text, q, user, limit)
    # for the rest of this transaction only (SET LOCAL): a search is the last thing its request does
    session.connection().exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
    try:
        return _search(session, text, q, user, limit)
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "57014":  # query_canceled
            raise
        session.rollback()
        raise SearchTimeout(str(exc.orig)) from None


def _search(session: Session, text: str, q: str, user, limit: int) -> list[dict]:
    clean = text.replace("%", "").replace("_", "")
    like = f"%{clean}%"
    e164 = phone_query(q, phone_region())
    short = len(clean) < SHORT_INPUT and session.get_bind().dialect.name == "postgresql"
    word = re.sub(r"\W", "", clean)
    results: list[dict] = []
    company_ids: list[int] = []
    for kind, model in KINDS.items():  # companies first: their contacts are found through them
        name = model.full_name if model is Contact else model.name
        visible = _visible(model, user, session)
        matches = []
        if not short:
            owner = Email.contact_id if model is Contact else Email.company_id
            matches += [model.search_text.like(like), model.id.in_(select(owner).where(Email.address.like(like)))]
        elif word:
            vector = func.to_tsvector(_SIMPLE, model.search_text)
            matches.append(vector.op("@@")(func.to_tsquery(_SIMPLE, f"{word}:*")))
        if e164:
            owner = Phone.contact_id if model is Contact else Phone.company_id
            matches.append(model.id.in_(select(owner).where(Phone.e164 == e164)))
        if model is Contact and company_ids:
            matches.append(Contact.id.in_(select(ContactCompany.contact_id)
                                          .where(ContactCompany.company_id.in_(company_ids))))
        if not matches:
            continue
        # each way of matching filters and keeps its own first `limit` (its index does the work), then the
        # union of those few rows is ordered once
        order = (func.length(name), name, model.id)
        branches = [select(model.id.label("id"), name.label("name")).where(match, *visible).order_by(*order)
                    .limit(limit).subquery() for match in matches]
        hits = union(*[select(b.c.id, b.c.name) for b in branches]).subquery("hits")
        rows = session.execute(select(hits.c.id, hits.c.name)
                               .order_by(func.length(hits.c.name), hits.c.name, hits.c.id).limit(limit)).all()
        if model is Company:
            company_ids = [row.id for row in rows]
        results += [{"kind": kind, "id": row.id, "name": row.name} for row in rows]
    return results[:limit]


def likely_duplicates(session: Session, kind: str, *, emails=(), phones=(), name: str | None = None,
                      company_ids=(), exclude_id: int | None = None, user=None) -> list[dict]:
    """Records that share a normalized e-mail or phone, or (contacts) the same name at the same company."""
    model = KINDS[kind]
    owner_email = Email.contact_id if model is Contact else Email.company_id
    owner_phone = Phone.contact_id if model is Contact else Phone.company_id
    found: dict[int, set[str]] = {}

    def add(ids, reason):
        for record_id in ids:
            if record_id != exclude_id:
                found.setdefault(record_id, set()).add(reason)

    if emails:
        add(session.scalars(select(owner_email).where(Email.address.in_(list(emails)), owner_email.is_not(None))),
            "email")
    if phones:
        add(session.scalars(select(owner_phone).where(Phone.e164.in_(list(phones)), owner_phone.is_not(None))),
            "phone")
    if name:
        key = normalize_name(name)
        if model is Company:
            add(session.scalars(select(Company.id).where(func.lower(Company.name) == key)), "name")
        elif company_ids:
            add(session.scalars(select(Contact.id).join(ContactCompany).where(
                ContactCompany.company_id.in_(list(company_ids)), func.lower(Contact.full_name) == key)), "name")
    if not found:
        return []
    name_col = model.full_name if model is Contact else model.name
    rows = session.execute(select(model.id, name_col).where(model.id.in_(list(found)), *_visible(model, user, session)))
    return [{"kind": kind, "id": row[0], "name": row[1], "reasons": sorted(found[row[0]])} for row in rows]


# -- timeline ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CustomerRef:
    """What `crm_timeline_entries` and `crm_customer_panels` receive: the customer's kind and id, with
    the ids of the related companies and contacts so a bridge can look up its own records."""

    kind: str
    id: int
    name: str
    company_ids: tuple[int, ...]
    contact_ids: tuple[int, ...]


def _activity_scope(customer: CustomerRef):
    if customer.kind == "company":
        return or_(Activity.company_id.in_(customer.company_ids), Activity.contact_id.in_(customer.contact_ids))
    return Activity.contact_id == customer.id


def timeline(session: Session, customer: CustomerRef, *, page: int = 1, per_page: int = 25,
             kinds: list[str] | None = None, counts: dict[str, int] | None = None) -> dict:
    """Activities (and entries other modules contribute) newest first, one page. `counts`: the customer's
    activities by kind when the caller has them (the total is then not counted again)."""
    page, per_page = max(page, 1), min(max(per_page, 1), 100)
    query = select(Activity).where(_activity_scope(customer))
    if kinds:
        query = query.where(Activity.kind.in_(kinds))
    if counts is not None:
        total = sum(n for kind, n in counts.items() if not kinds or kind in kinds)
    else:
        total = session.scalar(select(func.count()).select_from(query.subquery()))
    window = page * per_page
    activities = session.scalars(query.order_by(Activity.occurred_at.desc(), Activity.id.desc()).limit(window)
                                 .options(selectinload(Activity.user))).all()
    entries = [{"source": "crm", "kind": a.kind, "id": a.id, "at": a.occurred_at.isoformat(), "title": a.subject,
                "detail": a.outcome or "", "duration_minutes": a.duration_minutes,
                "user": a.user.username if a.user else None} for a in activities]
    host = current_app.extensions["bigledger"]
    from bigledger_core.modules import enabled_modules

    for plugin, answer in host.call_each("crm_timeline_entries", modules=enabled_modules(),
                                         customer=customer, limit=window):
        for item in answer or []:
            if kinds and item.get("kind") not in kinds:
                continue
            entries.append({"source": plugin, **item})
            total += 1
    entries.sort(key=lambda e: e["at"], reverse=True)
    return {"page": page, "per_page": per_page, "total": total,
            "entries": entries[(page - 1) * per_page: window]}


# -- the 360° view -------------------------------------------------------------------------------------

def customer_ref(session: Session, kind: str, record, below: list[tuple[int, int, int]] | None = None) -> CustomerRef:
    """The customer as hooks see it; `below` is the company's `descendants` when already read."""
    if kind == "company":
        below = descendants(session, record.id) if below is None else below
        company_ids = (record.id, *[cid for cid, _depth, _parent in below])
        contact_ids = tuple(session.scalars(select(ContactCompany.contact_id)
                                            .where(ContactCompany.company_id == record.id)))
        return CustomerRef("company", record.id, record.name, company_ids, contact_ids)
    company_ids = tuple(session.scalars(select(ContactCompany.company_id).where(ContactCompany.contact_id == record.id)))
    return CustomerRef("contact", record.id, record.full_name, company_ids, (record.id,))


def _details(session: Session, kind: str, record_id: int) -> dict[str, list[dict]]:
    column = "contact_id" if kind == "contact" else "company_id"
    phones = session.scalars(select(Phone).where(getattr(Phone, column) == record_id).order_by(
        Phone.is_primary.desc(), Phone.id))
    emails = session.scalars(select(Email).where(getattr(Email, column) == record_id).order_by(
        Email.is_primary.desc(), Email.id))
    addresses = session.scalars(select(Address).where(getattr(Address, column) == record_id).order_by(
        Address.is_primary.desc(), Address.id))
    return {
        "phones": [{"id": p.id, "kind": p.kind, "raw": p.raw, "e164": p.e164, "primary": p.is_primary}
                   for p in phones],
        "emails": [{"id": e.id, "kind": e.kind, "address": e.address, "primary": e.is_primary} for e in emails],
        "addresses": [{"id": a.id, "kind": a.kind, "country": a.country, "province": a.province, "city": a.city,
                       "district": a.district, "street": a.street, "postcode": a.postcode,
                       "primary": a.is_primary} for a in addresses],
    }


def _custom(session: Session, kind: str, values: dict) -> list[dict]:
    from .services import field_label

    return [{"key": f.key, "label": field_label(f), "type": f.type, "value": values.get(f.key)}
            for f in custom_fields(session, kind)]


def _pairs(session: Session, statement) -> dict:
    return {key: value for key, value in session.execute(statement).all()}


def _money(values: dict) -> dict[str, str]:
    return {currency: str(amount) for currency, amount in sorted(values.items())}


def customer_360(session: Session, kind: str, record, user, *, page: int = 1,
                 kinds: list[str] | None = None) -> dict[str, Any]:
    """Everything about one customer in a handful of queries: profile, hierarchy (with open deal value rolled
    up), people, deals, leads, activities, documents, and the panels of other modules."""
    below = descendants(session, record.id) if kind == "company" else None
    ref = customer_ref(session, kind, record, below)
    data: dict[str, Any] = {"kind": kind, "id": record.id, "version": record.version}
    if kind == "company":
        data["profile"] = {"name": record.name, "name_en": record.name_en, "legal_name": record.legal_name,
                           "industry": record.industry, "employees": record.employees, "region": record.region,
                           "website": record.website, "status": record.status,
                           "owner": record.owner.username if record.owner else None,
                           "team": record.team.name if record.team else None}
        chain = ancestors(session, record.id)
        names = _pairs(session, select(Company.id, Company.name).where(Company.id.in_(chain + list(ref.company_ids))))
        counts = _pairs(session, select(ContactCompany.company_id, func.count()).where(
            ContactCompany.company_id.in_(ref.company_ids)).group_by(ContactCompany.company_id))
        own = open_value_by_company(session, ref.company_ids, user)
        rolled = roll_up(below, record.id, own)
        data["hierarchy"] = {
            "ancestors": [{"id": cid, "name": names.get(cid)} for cid in reversed(chain)],
            "children": [{"id": cid, "name": names.get(cid), "depth": depth, "parent_id": parent,
                          "contacts": counts.get(cid, 0), "open_value": _money(own.get(cid, {})),
                          "open_value_rolled_up": _money(rolled.get(cid, {}))} for cid, depth, parent in below],
            "contacts_total": sum(counts.values()),
            "open_value_total": _money(rolled.get(record.id, {})),
        }
        people = session.execute(
            select(Contact.id, Contact.full_name, Contact.title, ContactRole.name, ContactRole.name_en,
                   ContactCompany.is_primary)
            .join(ContactCompany, ContactCompany.contact_id == Contact.id)
            .outerjoin(ContactRole, ContactRole.id == ContactCompany.role_id)
            .where(ContactCompany.company_id == record.id, Contact.merged_into_id.is_(None))
            .order_by(ContactCompany.is_primary.desc(), Contact.full_name))
        data["people"] = [{"id": r[0], "name": r[1], "title": r[2], "role": r[3], "role_en": r[4],
                           "primary": r[5]} for r in people]
    else:
        data["profile"] = {"full_name": record.full_name, "family_name": record.family_name,
                           "given_name": record.given_name, "name_en": record.name_en, "title": record.title,
                           "owner": record.owner.username if record.owner else None,
                           "team": record.team.name if record.team else None}
        companies = session.execute(
            select(Company.id, Company.name, ContactRole.name, ContactRole.name_en, ContactCompany.is_primary)
            .join(ContactCompany, ContactCompany.company_id == Company.id)
            .outerjoin(ContactRole, ContactRole.id == ContactCompany.role_id)
            .where(ContactCompany.contact_id == record.id).order_by(ContactCompany.is_primary.desc(), Company.name))
        data["companies"] = [{"id": r[0], "name": r[1], "role": r[2], "role_en": r[3], "primary": r[4]}
                             for r in companies]
    data.update(_details(session, kind, record.id))
    data["duplicates"] = likely_duplicates(
        session, kind, emails=[e["address"] for e in data["emails"]],
        phones=[p["e164"] for p in data["phones"] if p["e164"]],
        name=record.full_name if kind == "contact" else record.name,
        company_ids=[c["id"] for c in data.get("companies", [])], exclude_id=record.id, user=user)
    data["tags"] = [{"id": t.id, "name": t.name, "color": t.color} for t in record.tags]
    data["custom"] = _custom(session, kind, record.custom or {})
    column = Document.contact_id if kind == "contact" else Document.company_id
    data["documents"] = [{"id": d.id, "filename": d.filename, "size": d.size, "content_type": d.content_type,
                          "uploaded_at": d.uploaded_at.isoformat()}
                         for d in session.scalars(select(Document).where(column == record.id)
                                                  .order_by(Document.uploaded_at.desc()).limit(50))]
    from .models import AuditEntry

    entries = session.execute(
        select(AuditEntry.action, AuditEntry.changes, AuditEntry.at, AuditEntry.user_id)
        .where(AuditEntry.entity == record.__tablename__, AuditEntry.record_id == record.id)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(20)).all()
    users = _pairs(session, select(User.id, User.username).where(User.id.in_({e.user_id for e in entries})))
    data["history"] = [{"action": e.action, "at": e.at.isoformat(), "user": users.get(e.user_id),
                        "changes": e.changes} for e in entries]
    data["deals"] = customer_deals(session, ref, user)
    data["leads"] = customer_leads(session, ref, user, emails=[e["address"] for e in data["emails"]],
                                   phones=[p["e164"] for p in data["phones"] if p["e164"]])
    data["activity_counts"] = _pairs(session, select(Activity.kind, func.count()).where(
        _activity_scope(ref)).group_by(Activity.kind))
    data["timeline"] = timeline(session, ref, page=page, kinds=kinds or None, counts=data["activity_counts"])
    host = current_app.extensions["bigledger"]
    from bigledger_core.modules import enabled_modules

    data["panels"] = [{"module": plugin, **panel}
                      for plugin, answer in host.call_each("crm_customer_panels", modules=enabled_modules(),
                                                           customer=ref)
                      for panel in (answer or [])]
    return data

