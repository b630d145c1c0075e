"""Duplicate detection for leads on capture and edit, and the review of candidate pairs.

`check` looks for the people a lead may already be, among leads and contacts: a few indexed queries find
candidates by blocking key (the same e-mail, the same E.164 phone, the name in any script or order, the
same company), and the duplicate engine (`..common.dedupe`) scores each one. Pairs found are kept as
`DuplicateCandidate` rows for the review screen (CRM → Duplicates), where a person merges them or says
they are not a duplicate, which is remembered: a pair decided once is never proposed again. The batch
command `bigledger crm dedupe leads|contacts` writes the same rows (`save_batch`).
"""
from __future__ import annotations

import math

from flask import abort, flash, g, has_app_context, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    and_,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    true,
    union,
    update,
)
from sqlalchemy.orm import Session

from bigledger_core.db import utcnow
from bigledger_core.security import visibility_clause

from ..common.dedupe import (
    DEFAULT_THRESHOLD,
    Pair,
    Prepared,
    bits_for,
    compare,
    probability,
)
from ..models import AuditEntry, Company, Contact, ContactCompany, Email, Phone
from ..normalize import (
    has_chinese,
    normalize_name,
    search_text,
    split_chinese_name,
    syllables,
)
from ..services import CrmValidationError, phone_region
from .models import DuplicateCandidate, Lead, LeadFact
from .services import LeadError, rescore

CLOSED = ("converted", "disqualified")  # leads no longer worked: not proposed as duplicates
KEY_LIMIT = 50  # records fetched per exact key (e-mail, phone) and per company
NAME_LIMIT = 200  # records fetched per name lookup
MIN_FORM = 4  # shorter name forms match too much to be worth a lookup
KINDS = ("lead", "contact")
STATUSES = ("open", "not_duplicate", "merged")


def reason_labels() -> dict[str, str]:
    """How the fields that speak for a pair are named to people (the CLI's labels)."""
    from ..dedupe_cli import reason_labels as labels

    return labels()


# -- records as the engine sees them -------------------------------------------------------------------

_LEAD_COLUMNS = (Lead.id, Lead.name, Lead.email, Lead.phone, Lead.phone_e164, Lead.company_name, Lead.address,
                 Lead.city, Lead.country)


def lead_record(row) -> dict:
    """A lead (row or object) as a dedupe record. A country counts only as an ISO code, the form contacts
    keep it in, so that `China` and `CN` are not taken for a disagreement."""
    country = (row.country or "").strip()
    return {"id": row.id, "name": row.name, "email": row.email, "phone": row.phone_e164 or row.phone,
            "company": row.company_name, "address": row.address, "city": row.city,
            "country": country if len(country) == 2 else None}


def lead_records(session: Session, ids=None) -> list[dict]:
    """Leads still worked (not converted or disqualified), or those of `ids`, as dedupe records: one query."""
    query = select(*_LEAD_COLUMNS).order_by(Lead.id)
    query = query.where(Lead.id.in_(ids)) if ids is not None else query.where(Lead.status.not_in(CLOSED))
    return [lead_record(row) for row in session.execute(query)]


def name_forms(name: str | None) -> list[str]:
    """How a person's name may be written in another record's `search_text`, which holds names normalized
    and Chinese names also in pinyin: `张小明` → `zhang xiao ming`, `zhang xiaoming`, `xiaoming zhang`;
    `Mei Ling Lee` → `mei ling lee`, `lee mei ling`, `ling lee mei` and the same without spaces."""
    text = normalize_name(name)
    forms: list[str] = []
    if has_chinese(text):
        family, given = split_chinese_name(text)
        forms.append(" ".join(syllables(text)))
        if family and given:
            family_py = "".join(syllables(family))
            given_py = "".join(syllables(given))
            forms += [f"{family_py} {given_py}", f"{given_py} {family_py}"]
    else:
        words = text.split()
        forms.append(text)
        if len(words) >= 2:
            forms += [" ".join(words[-1:] + words[:-1]), " ".join(words[1:] + words[:1])]
        forms += [form.replace(" ", "") for form in forms]
    return [form for form in dict.fromkeys(forms) if len(form) >= MIN_FORM]


def _contains(column, form: str):
    escaped = form.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"%{escaped}%", escape="\\")


def _ids(branches) -> select:
    """The union of several id lookups, each limited on its own (its index does the work)."""
    subqueries = [branch.subquery() for branch in branches]
    return union(*[select(sub.c.id) for sub in subqueries])


def _lead_lookups(lead: Lead, forms: list[str]) -> list:
    open_lead = [Lead.status.not_in(CLOSED), Lead.id != lead.id]
    found = []
    if lead.email:
        found.append(select(Lead.id.label("id")).where(Lead.email == lead.email, *open_lead).limit(KEY_LIMIT))
    if lead.phone_e164:
        found.append(select(Lead.id.label("id")).where(Lead.phone_e164 == lead.phone_e164, *open_lead)
                     .limit(KEY_LIMIT))
    if forms:
        # no ORDER BY: PostgreSQL then reads the matches from the trigram index instead of walking every id
        found.append(select(Lead.id.label("id")).where(or_(*[_contains(Lead.search_text, f) for f in forms]),
                                                         *open_lead).limit(NAME_LIMIT))
    if company := normalize_name(lead.company_name):
        found.append(select(Lead.id.label("id")).where(func.lower(Lead.company_name) == company, *open_lead)
                     .limit(KEY_LIMIT))
    return found


def _contact_lookups(lead: Lead, forms: list[str]) -> list:
    alive = Contact.merged_into_id.is_(None)
    found = []
    if lead.email:
        found.append(select(Email.contact_id.label("id")).where(Email.address == lead.email,
                                                                Email.contact_id.is_not(None)).limit(KEY_LIMIT))
    if lead.phone_e164:
        found.append(select(Phone.contact_id.label("id")).where(Phone.e164 == lead.phone_e164,
                                                                Phone.contact_id.is_not(None)).limit(KEY_LIMIT))
    if name := normalize_name(lead.name):
        found.append(select(Contact.id.label("id")).where(func.lower(Contact.full_name) == name, alive)
                     .limit(NAME_LIMIT))
    if forms:
        found.append(select(Contact.id.label("id")).where(or_(*[_contains(Contact.search_text, f) for f in forms]),
                                                            alive).order_by(Contact.id.desc()).limit(NAME_LIMIT))
    if company := normalize_name(lead.company_name):
        found.append(select(ContactCompany.contact_id.label("id")).join(Company)
                     .where(func.lower(Company.name) == company, Company.merged_into_id.is_(None))
                     .order_by(ContactCompany.contact_id.desc()).limit(KEY_LIMIT))
    return found


def population(session: Session) -> int:
    """About how many leads and contacts there are (the highest ids: read from the primary keys' ends,
    unlike a count), for the prior odds of a match among them."""
    leads = select(func.max(Lead.id)).scalar_subquery()
    contacts = select(func.max(Contact.id)).scalar_subquery()
    row = session.execute(select(leads, contacts)).one()
    return (row[0] or 0) + (row[1] or 0)


# -- the check on capture and on edit --------------------------------------------------------------------

def check(session: Session, lead: Lead, *, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Likely duplicates of `lead` among leads and contacts (empty when none), best first, as
    {kind, id, name, score, reasons}. The pairs are kept for review; pairs someone already decided are
    left out. A handful of indexed queries, whatever the number of leads and contacts."""
    from ..dedupe_cli import contact_records

    if lead.id is None:
        session.flush()
    forms = name_forms(lead.name)
    candidates: list[dict] = []
    names: dict[tuple[str, int], str] = {}
    lead_lookups = _lead_lookups(lead, forms)
    # the ids first, then their rows: a plan that reads the rows through the lookups' subquery can turn
    # into a nested loop over every lead when the table's statistics are stale
    lead_ids = session.scalars(_ids(lead_lookups)).all() if lead_lookups else []
    if lead_ids:
        for record in lead_records(session, lead_ids):
            names[("lead", record["id"])] = record["name"]
            candidates.append({**record, "id": ("lead", record["id"])})
    contact_lookups = _contact_lookups(lead, forms)
    if contact_lookups:
        contact_ids = session.scalars(select(Contact.id).where(
            Contact.id.in_(select(_ids(contact_lookups).subquery().c.id)), Contact.merged_into_id.is_(None))).all()
        if contact_ids:
            for record in contact_records(session, ids=contact_ids):
                names[("contact", record["id"])] = record["name"]
                candidates.append({**record, "id": ("contact", record["id"])})
    found: dict[tuple, Pair] = {}
    if candidates:
        size = population(session)
        needed = bits_for(threshold, size)
        region = phone_region()
        me = Prepared(lead_record(lead), region)
        for record in candidates:
            bits, reasons = compare(me, Prepared(record, region))
            if bits >= needed:
                found[record["id"]] = Pair(("lead", lead.id), record["id"], round(probability(bits, size), 4),
                                           tuple(reasons))
    keyed = {_key(pair.id_a, pair.id_b): pair for pair in found.values()}
    existing = _involving(session, "lead", lead.id)
    if lead.status in CLOSED:  # nothing to review for a lead no longer worked; decisions still hold
        decided = {key for row in existing if row.status != "open"
                   and (key := (row.kind_a, row.id_a, row.kind_b, row.id_b)) in keyed}
    else:
        decided = _reconcile(session, keyed, existing)
    result = [{"kind": kind, "id": record_id, "name": names[(kind, record_id)], "score": pair.score,
               "reasons": list(pair.reasons)}
              for (kind, record_id), pair in found.items() if _key(pair.id_a, pair.id_b) not in decided]
    return sorted(result, key=lambda d: (-d["score"], d["kind"], d["id"]))


def _key(a: tuple[str, int], b: tuple[str, int]) -> tuple[str, int, str, int]:
    """The pair as stored: the smaller (kind, id) first, so that a pair has one row whoever found it."""
    first, second = sorted((a, b))
    return (*first, *second)


def _involving(session: Session, kind: str, record_id: int):
    row = _row_key()
    return session.execute(select(*row).where(or_(and_(DuplicateCandidate.kind_a == kind,
                                                       DuplicateCandidate.id_a == record_id),
                                                  and_(DuplicateCandidate.kind_b == kind,
                                                       DuplicateCandidate.id_b == record_id)))).all()


def _row_key():
    c = DuplicateCandidate
    return (c.id, c.kind_a, c.id_a, c.kind_b, c.id_b, c.status, c.score)


def _reconcile(session: Session, found: dict[tuple, Pair], existing) -> set[tuple]:
    """Store the pairs `found` against the `existing` rows of the same scope: new pairs are added, open ones
    get their new score, open ones no longer found are removed, and decided ones are
    left alone. Returns the keys of the pairs found that were already decided. Set-based: at most one
    statement each to insert, update and delete."""
    decided, updates, stale = set(), [], []
    seen = set()
    for row in existing:
        key = (row.kind_a, row.id_a, row.kind_b, row.id_b)
        seen.add(key)
        if row.status != "open":
            if key in found:
                decided.add(key)
        elif key in found:
            pair = found[key]
            updates.append({"id": row.id, "score": pair.score, "reasons": list(pair.reasons)})
        else:
            stale.append(row.id)
    now = utcnow()
    new = [{"kind_a": key[0], "id_a": key[1], "kind_b": key[2], "id_b": key[3], "score": pair.score,
            "reasons": list(pair.reasons), "status": "open", "found_at": now}
           for key, pair in found.items() if key not in seen]
    if new:
        session.execute(insert(DuplicateCandidate), new)
    if updates:
        session.execute(update(DuplicateCandidate), updates)
    for start in range(0, len(stale), 1000):
        session.execute(delete(DuplicateCandidate).where(DuplicateCandidate.id.in_(stale[start:start + 1000]))
                        .execution_options(synchronize_session=False))
    return decided


def save_batch(session: Session, pairs, scope: str) -> dict[str, int]:
    """Keep the pairs a batch run found for review. `scope` is "leads" (pairs with a lead in them) or
    "contacts" (contact with contact); ids are "lead:12"/"contact:5" strings or, for contacts, numbers.
    Open pairs of the scope that the run did not find are removed; decided pairs stay decided.
    Returns {"new", "open", "decided"} counts."""
    found: dict[tuple, Pair] = {}
    for pair in pairs:
        key = _key(_parse_id(pair.id_a), _parse_id(pair.id_b))
        found[key] = pair
    c = DuplicateCandidate
    where = or_(c.kind_a == "lead", c.kind_b == "lead") if scope == "leads" \
        else and_(c.kind_a == "contact", c.kind_b == "contact")
    existing = session.execute(select(*_row_key()).where(where)).all()
    before = {(r.kind_a, r.id_a, r.kind_b, r.id_b) for r in existing}
    decided = _reconcile(session, found, existing)
    return {"new": len(set(found) - before), "open": len(found) - len(decided), "decided": len(decided)}


def _parse_id(value) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, str) and ":" in value:
        kind, _, number = value.partition(":")
        return kind, int(number)
    return "contact", int(value)


# -- re-checking a lead after an edit -------------------------------------------------------------------

_WATCHED = ("name", "email", "phone_e164", "company_name", "address", "city", "country")
_PENDING = "crm_duplicate_recheck"


@event.listens_for(Session, "after_flush")
def _note_edited_leads(session: Session, _context) -> None:
    """Remember the leads whose name, e-mail, phone, company or address an edit changed."""
    for obj in session.dirty:
        if isinstance(obj, Lead) and obj.id is not None:
            state = inspect(obj)
            if any(state.attrs[key].history.has_changes() for key in _WATCHED):
                session.info.setdefault(_PENDING, set()).add(obj.id)


@event.listens_for(Session, "before_commit")
def _recheck_edited_leads(session: Session) -> None:
    """Check edited leads again before their transaction commits, whichever screen, API or job edited them."""
    if session.new or session.dirty or session.deleted:
        session.flush()  # the edit itself is flushed within the commit, after this event
    ids = session.info.pop(_PENDING, None)
    if not ids:
        return
    for lead in session.scalars(select(Lead).where(Lead.id.in_(sorted(ids)), Lead.status.not_in(CLOSED))):
        check(session, lead)
    session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_rollback")
def _forget_edited_leads(session: Session) -> None:
    session.info.pop(_PENDING, None)


# -- decisions: not a duplicate, merge ----------------------------------------------------------------

def _user_id() -> int | None:
    user = getattr(g, "user", None) if has_app_context() else None
    return getattr(user, "id", None) if getattr(user, "is_authenticated", False) else None


def _decide(candidate: DuplicateCandidate, status: str, user_id: int | None) -> None:
    if candidate.status != "open":
        raise LeadError(gettext("This pair was already decided (%(status)s).",
                                status=str(STATUS_LABELS.get(candidate.status, candidate.status))))
    candidate.status, candidate.decided_at, candidate.decided_by_id = status, utcnow(), user_id


def dismiss(session: Session, candidate: DuplicateCandidate, *, user_id: int | None = None) -> None:
    """Not a duplicate: the pair is kept with that decision and never proposed again."""
    _decide(candidate, "not_duplicate", user_id if user_id is not None else _user_id())
    session.flush()


def merge_pair(session: Session, candidate: DuplicateCandidate, *, keep: str = "a",
               user_id: int | None = None) -> tuple[tuple[str, int], tuple[str, int]]:
    """Merge the pair: a lead into a lead (`keep` "a" or "b" says which one stays), a lead into a contact
    (the contact always stays), a contact into a contact (`..merge.merge`). Returns (survivor, merged) as
    (kind, id). Raises LeadError or CrmValidationError when the records cannot be merged."""
    if keep not in ("a", "b"):
        raise LeadError(gettext("keep: say which record stays, \"a\" or \"b\"."))
    user_id = user_id if user_id is not None else _user_id()
    _decide(candidate, "merged", user_id)
    a, b = (candidate.kind_a, candidate.id_a), (candidate.kind_b, candidate.id_b)
    survivor, loser = (a, b) if keep == "a" else (b, a)
    if {a[0], b[0]} == {"lead", "contact"}:
        survivor, loser = (a, b) if a[0] == "contact" else (b, a)
        lead = session.get(Lead, loser[1])
        if lead is None or session.get(Contact, survivor[1]) is None:
            raise LeadError(gettext("One of the two records no longer exists."))
        link_lead_to_contact(session, lead, survivor[1], user_id=user_id)
    elif a[0] == "lead":
        merge_leads(session, survivor[1], loser[1], user_id=user_id)
    else:
        from ..merge import merge

        merge(session, "contact", survivor[1], loser[1])
    # the merged record is gone from review: its other open pairs go, found again for the survivor if need be
    c = DuplicateCandidate
    session.execute(delete(c).where(c.status == "open", or_(and_(c.kind_a == loser[0], c.id_a == loser[1]),
                                                            and_(c.kind_b == loser[0], c.id_b == loser[1])))
                    .execution_options(synchronize_session=False))
    session.flush()
    return survivor, loser


# the lead fields an empty field of the surviving lead takes from the merged one
_FILLED = ("title", "company_name", "company_size", "industry", "website", "email", "phone", "phone_e164",
           "country", "city", "address", "language", "message", "channel", "campaign", "utm_source",
           "utm_medium", "utm_campaign", "utm_term", "utm_content", "referrer", "owner_id", "team_id",
           "contact_id", "company_id", "deal_id")
_NOT_KEPT = {"search_text", "version"}


def _plain(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _values(lead: Lead) -> dict:
    return {attr.key: _plain(getattr(lead, attr.key)) for attr in inspect(Lead).column_attrs
            if attr.key not in _NOT_KEPT}


def merge_leads(session: Session, survivor_id: int, loser_id: int, *, user_id: int | None = None) -> Lead:
    """Merge lead `loser_id` into `survivor_id`: facts move (counts added, first and last times widened),
    e-mail opens and clicks add up, empty fields and consent are taken from the loser, and the survivor is
    rescored. The loser stays, disqualified as merged, and the audit trail keeps all its values and facts."""
    if survivor_id == loser_id:
        raise LeadError(gettext("A lead cannot be merged into itself."))
    survivor, loser = session.get(Lead, survivor_id), session.get(Lead, loser_id)
    if survivor is None or loser is None:
        raise LeadError(gettext("One of the two records no longer exists."))
    for lead in (survivor, loser):
        if (lead.conversion or {}).get("merged_into"):
            raise LeadError(gettext("Lead %(name)s was already merged into another lead.", name=lead.name))
    if loser.status == "converted":
        raise LeadError(gettext("Lead %(name)s is converted: keep it and merge the other lead into it.",
                                name=loser.name))
    facts = session.scalars(select(LeadFact).where(LeadFact.lead_id.in_([survivor.id, loser.id]))).all()
    kept = {f.fact: f for f in facts if f.lead_id == survivor.id}
    moved = [{"fact": f.fact, "count": f.count, "source": f.source, "first_at": _plain(f.first_at),
              "last_at": _plain(f.last_at)} for f in facts if f.lead_id == loser.id]
    before = _values(loser)
    filled = []
    for fact in facts:
        if fact.lead_id != loser.id:
            continue
        mine = kept.get(fact.fact)
        if mine is None:
            fact.lead_id = survivor.id
        else:
            mine.count += fact.count
            mine.first_at, mine.last_at = min(mine.first_at, fact.first_at), max(mine.last_at, fact.last_at)
            session.delete(fact)
    for field in _FILLED:
        value = getattr(loser, field)
        if getattr(survivor, field) in (None, "") and value not in (None, ""):
            setattr(survivor, field, value)
            filled.append(field)
    if loser.consent and not survivor.consent:
        survivor.consent, survivor.consent_text, survivor.consent_at = True, loser.consent_text, loser.consent_at
        filled.append("consent")
    survivor.email_opens = (survivor.email_opens or 0) + (loser.email_opens or 0)
    survivor.email_clicks = (survivor.email_clicks or 0) + (loser.email_clicks or 0)
    survivor.custom = {**(loser.custom or {}),
                       **{k: v for k, v in (survivor.custom or {}).items() if v not in (None, "", [])}}
    survivor.search_text = search_text(survivor.name, survivor.company_name)
    loser.status = "disqualified"
    loser.disqualify_reason = gettext("merged into lead %(id)s (%(name)s)", id=survivor.id, name=survivor.name)
    loser.conversion = {"merged_into": survivor.id}
    now = utcnow()
    session.add_all([
        AuditEntry(entity=Lead.__tablename__, record_id=loser.id, action="merge", at=now, user_id=user_id,
                   changes={"merged_into": survivor.id, "values": before, "facts": moved}),
        AuditEntry(entity=Lead.__tablename__, record_id=survivor.id, action="merge", at=now, user_id=user_id,
                   changes={"merged": loser.id, "filled": filled}),
    ])
    session.flush()
    rescore(session, survivor)
    return survivor


def link_lead_to_contact(session: Session, lead: Lead, contact_id: int, *, user_id: int | None = None) -> Lead:
    """The lead is a contact the CRM already has: it is linked to that contact and marked converted
    (`conversion` = {"linked_contact": id}); its e-mail and phone are added to the contact when the contact
    lacks them, and the audit trail keeps the lead's values."""
    if lead.status == "converted" and lead.contact_id not in (None, contact_id):
        raise LeadError(gettext("Lead %(name)s is already converted.", name=lead.name))
    if lead.status == "disqualified":
        raise LeadError(gettext("Lead %(name)s is disqualified: a disqualified lead is not linked to a contact.",
                                name=lead.name))
    contact = session.get(Contact, contact_id)
    if contact is None or contact.merged_into_id is not None:
        raise LeadError(gettext("One of the two records no longer exists."))
    before = _values(lead)
    added = []
    if lead.email and session.scalar(select(Email.id).where(Email.contact_id == contact_id,
                                                            Email.address == lead.email)) is None:
        has_primary = session.scalar(select(Email.id).where(Email.contact_id == contact_id).limit(1))
        session.add(Email(contact_id=contact_id, address=lead.email, is_primary=has_primary is None))
        added.append("email")
    if lead.phone_e164 and session.scalar(select(Phone.id).where(Phone.contact_id == contact_id,
                                                                 Phone.e164 == lead.phone_e164)) is None:
        has_primary = session.scalar(select(Phone.id).where(Phone.contact_id == contact_id).limit(1))
        session.add(Phone(contact_id=contact_id, raw=lead.phone or lead.phone_e164, e164=lead.phone_e164,
                          is_primary=has_primary is None))
        added.append("phone")
    lead.contact_id = contact_id
    if lead.company_id is None:
        lead.company_id = session.scalar(select(ContactCompany.company_id).where(
            ContactCompany.contact_id == contact_id).order_by(ContactCompany.is_primary.desc(),
                                                              ContactCompany.id).limit(1))
    lead.status, lead.converted_at = "converted", lead.converted_at or utcnow()
    lead.conversion = {"linked_contact": contact_id}
    session.add(AuditEntry(entity=Lead.__tablename__, record_id=lead.id, action="merge", at=utcnow(),
                           user_id=user_id, changes={"linked_contact": contact_id, "values": before,
                                                     "added_to_contact": added}))
    session.flush()
    return lead


# -- reading pairs for review ------------------------------------------------------------------------

def _visible_pairs(session: Session, user):
    """SQL condition: both records of the pair are the user's to see (their record rules)."""
    clauses = {"lead": visibility_clause(Lead, user, session), "contact": visibility_clause(Contact, user, session)}
    if all(clause is None for clause in clauses.values()):
        return true()
    models = {"lead": Lead, "contact": Contact}
    c = DuplicateCandidate
    sides = []
    for kind_col, id_col in ((c.kind_a, c.id_a), (c.kind_b, c.id_b)):
        sides.append(or_(*[and_(kind_col == kind, true() if clause is None
                                else id_col.in_(select(models[kind].id).where(clause)))
                           for kind, clause in clauses.items()]))
    return and_(*sides)


def review_page(session: Session, user, *, status: str = "open", page: int = 1, per_page: int = 20) -> dict:
    """One page of pairs (best first) with both records side by side: {"total", "page", "pages", "pairs"}."""
    c = DuplicateCandidate
    where = [c.status == status, _visible_pairs(session, user)]
    total = session.scalar(select(func.count()).select_from(c).where(*where))
    pages = max(1, math.ceil(total / per_page))
    page = min(max(page, 1), pages)
    rows = session.scalars(select(c).where(*where).order_by(c.score.desc(), c.id)
                           .offset((page - 1) * per_page).limit(per_page)).all()
    records = describe(session, [(r.kind_a, r.id_a) for r in rows] + [(r.kind_b, r.id_b) for r in rows])
    pairs = [{"id": r.id, "score": float(r.score), "reasons": list(r.reasons or []), "status": r.status,
              "found_at": _plain(r.found_at), "decided_at": _plain(r.decided_at),
              "a": records.get((r.kind_a, r.id_a)), "b": records.get((r.kind_b, r.id_b))} for r in rows]
    return {"total": total, "page": page, "pages": pages, "per_page": per_page, "pairs": pairs}


def describe(session: Session, keys) -> dict[tuple[str, int], dict]:
    """What the review shows of each record: name, e-mails, phones, company, place, status. Set-based."""
    from ..dedupe_cli import contact_records

    lead_ids = sorted({i for kind, i in keys if kind == "lead"})
    contact_ids = sorted({i for kind, i in keys if kind == "contact"})
    found: dict[tuple[str, int], dict] = {}
    if lead_ids:
        for lead in session.execute(select(*_LEAD_COLUMNS, Lead.status, Lead.source, Lead.created_at)
                                    .where(Lead.id.in_(lead_ids))):
            found[("lead", lead.id)] = {
                "kind": "lead", "id": lead.id, "name": lead.name, "emails": [lead.email] if lead.email else [],
                "phones": [lead.phone_e164 or lead.phone] if lead.phone else [], "company": lead.company_name,
                "city": lead.city, "address": lead.address, "status": lead.status, "source": lead.source,
                "created_at": _plain(lead.created_at)}
    if contact_ids:
        for record in contact_records(session, ids=contact_ids, merged=True):
            found[("contact", record["id"])] = {
                "kind": "contact", "id": record["id"], "name": record["name"], "emails": record["email"],
                "phones": record["phone"], "company": record.get("company"), "city": record.get("city"),
                "address": record.get("address"), "status": None, "source": None, "created_at": None}
    return found


def open_for(session: Session, kind: str, record_id: int) -> list[dict]:
    """The open pairs of one lead or contact, best first, each with the other record described: for the
    record's own page. Seven queries at most."""
    rows = [r for r in _involving(session, kind, record_id) if r.status == "open"]
    others = [(r.kind_b, r.id_b) if (r.kind_a, r.id_a) == (kind, record_id) else (r.kind_a, r.id_a) for r in rows]
    if not rows:
        return []
    records = describe(session, others)
    found = [{"pair_id": r.id, "score": float(r.score), "other": records.get(other)}
             for r, other in zip(rows, others, strict=True) if records.get(other) is not None]
    return sorted(found, key=lambda d: -d["score"])


def _candidate(session: Session, pk: int, user) -> DuplicateCandidate | None:
    return session.scalar(select(DuplicateCandidate).where(DuplicateCandidate.id == pk,
                                                           _visible_pairs(session, user)))


# -- screen and API -------------------------------------------------------------------------------------

STATUS_LABELS = {"open": _l("To review"), "not_duplicate": _l("Not a duplicate"), "merged": _l("Merged")}
KIND_LABELS = {"lead": _l("Lead"), "contact": _l("Contact")}


def _record_url(record: dict | None) -> str | None:
    if record is None:
        return None
    if record["kind"] == "lead":
        return url_for("LeadView.show", pk=record["id"])
    return url_for("CustomerView.show", kind="contact", pk=record["id"])


class DuplicateView(BaseView):
    """CRM → Duplicates: likely duplicate pairs side by side, to merge or to mark as not a duplicate."""

    route_base = "/crm/duplicates"
    default_view = "list"
    class_permission_name = "CrmDuplicate"
    method_permission_name = {"list": "list", "dismiss": "merge", "merge": "merge"}
    base_permissions = ["can_list", "can_merge"]

    @expose("/")
    @has_access
    def list(self):
        from bigledger_core.db import db

        from ..views import LEAD_STATUS_LABELS

        status = request.args.get("status", "open")
        if status not in STATUSES:
            status = "open"
        data = review_page(db.session, g.user, status=status, page=request.args.get("page", 1, type=int))
        return self.render_template("crm/duplicates.html", data=data, status=status, statuses=STATUS_LABELS,
                                    kinds=KIND_LABELS, reasons=reason_labels(), record_url=_record_url,
                                    lead_status=LEAD_STATUS_LABELS)

    def _back(self):
        return redirect(url_for("DuplicateView.list", status=request.form.get("status") or "open",
                                page=request.form.get("page", 1, type=int)))

    @expose("/<int:pk>/dismiss", methods=["POST"])
    @has_access
    def dismiss(self, pk):
        from bigledger_core.db import db

        candidate = _candidate(db.session, pk, g.user)
        if candidate is None:
            abort(404)
        try:
            dismiss(db.session, candidate)
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            flash(str(exc), "danger")
            return self._back()
        flash(gettext("Marked as not a duplicate: this pair will not be proposed again."), "success")
        return self._back()

    @expose("/<int:pk>/merge", methods=["POST"])
    @has_access
    def merge(self, pk):
        from bigledger_core.db import db

        candidate = _candidate(db.session, pk, g.user)
        if candidate is None:
            abort(404)
        try:
            survivor, loser = merge_pair(db.session, candidate, keep=request.form.get("keep", "a"))
            db.session.commit()
        except (LeadError, CrmValidationError) as exc:
            db.session.rollback()
            flash(str(exc), "danger")
            return self._back()
        flash(gettext("%(loser_kind)s #%(loser)s was merged into %(kind)s #%(id)s.",
                      loser_kind=str(KIND_LABELS[loser[0]]), loser=loser[1], kind=str(KIND_LABELS[survivor[0]]),
                      id=survivor[1]), "success")
        return self._back()


class DuplicateApi(BaseApi):
    """Likely duplicate pairs of leads and contacts for review: list, not a duplicate, merge."""

    resource_name = "crm/duplicates"
    class_permission_name = "CrmDuplicate"
    method_permission_name = {"pairs": "get", "dismiss": "merge", "merge": "merge"}
    openapi_spec_tag = "CRM leads"

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def pairs(self):
        """Pairs to review, best first (`status` open, not_duplicate or merged; `page` from 1, `per_page`).
        ---
        get:
          parameters:
          - {in: query, name: status, schema: {type: string, enum: [open, not_duplicate, merged]}}
          - {in: query, name: page, schema: {type: integer}}
          - {in: query, name: per_page, schema: {type: integer}}
          responses:
            200: {description: "total, page, pages and the pairs: id, score, reasons, a and b"}
            400: {description: an unknown status}
        """
        from bigledger_core.db import db

        status = request.args.get("status", "open")
        if status not in STATUSES:
            return self.response_400(message=gettext("status: one of %(values)s", values=", ".join(STATUSES)))
        per_page = min(max(request.args.get("per_page", 20, type=int), 1), 100)
        return self.response(200, **review_page(db.session, g.user, status=status, per_page=per_page,
                                                page=request.args.get("page", 1, type=int)))

    @expose("/<int:pk>/dismiss", methods=["POST"])
    @protect()
    @safe
    def dismiss(self, pk):
        """Not a duplicate: remembered, the pair is never proposed again.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: decided}
            400: {description: the pair was already decided}
            404: {description: no such pair, or not yours to see}
        """
        from bigledger_core.db import db

        candidate = _candidate(db.session, pk, g.user)
        if candidate is None:
            return self.response_404()
        try:
            dismiss(db.session, candidate)
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=pk, status=candidate.status)

    @expose("/<int:pk>/merge", methods=["POST"])
    @protect()
    @safe
    def merge(self, pk):
        """Merge the pair (`{"keep": "a"}` or `"b"`: which lead or contact stays; a lead always goes into a
        contact).
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: "merged: the survivor and the merged record as {kind, id}"}
            400: {description: refused, with the reason}
            404: {description: no such pair, or not yours to see}
        """
        from bigledger_core.db import db

        candidate = _candidate(db.session, pk, g.user)
        if candidate is None:
            return self.response_404()
        body = request.get_json(silent=True) or {}
        try:
            survivor, loser = merge_pair(db.session, candidate, keep=body.get("keep", "a"))
            db.session.commit()
        except (LeadError, CrmValidationError) as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=pk, status=candidate.status,
                             survivor={"kind": survivor[0], "id": survivor[1]},
                             merged={"kind": loser[0], "id": loser[1]})


def register(appbuilder) -> None:
    """Add the duplicate review screen and API."""
    appbuilder.add_view(DuplicateView, "CrmDuplicate", label=_l("Duplicates"), icon="fa-clone",
                        category="CRM", category_label=_l("CRM"))
    appbuilder.add_api(DuplicateApi)
