"""Read side of the CRM: search, likely duplicates, the timeline and the 360° view, all set-based."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from flask import current_app
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import (
    Integer,
    String,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bigledger_core.db import ids_param
from bigledger_core.security import visibility_shape, visible_where

from .leads.queries import customer_leads
from .models import (
    Activity,
    ActivityTally,
    Address,
    Company,
    Contact,
    ContactCompany,
    ContactRole,
    Document,
    Email,
    Phone,
    Tag,
    company_tag,
    contact_tag,
)
from .normalize import normalize_name, phone_query
from .pipeline.queries import customer_deals, roll_up
from .services import (
    contributions,
    custom_fields,
    phone_region,
    unavailable_panel,
)

KINDS = {"company": Company, "contact": Contact}


class SearchTimeout(Exception):
    """A search statement ran longer than `BIGLEDGER_SEARCH_TIMEOUT` allows and PostgreSQL stopped it."""


# pg_trgm extracts no trigram from fewer characters: shorter input is matched word by word on PostgreSQL
SHORT_INPUT = 3
_SIMPLE = literal_column("'simple'::regconfig")  # a constant, so the full-text index's expression matches


def search(session: Session, q: str, user, limit: int = 20) -> list[dict]:
    """Companies and contacts matching `q` by name, pinyin, e-mail, phone (any format) or company name:
    companies first, then contacts; of each, the exact matches of the whole name (and a person's pinyin or
    initials) first, then the others, each shortest name first. On PostgreSQL Latin input and input shorter
    than 3 characters match the start of words (a name, its pinyin or initials), longer Chinese input and
    e-mail addresses anywhere.
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


@cache
def _search_statement(dialect: str, kind: str, ways: tuple[str, ...], skip: bool, visibility: str):
    """Built once per shape: up to `:limit` (id, name) visible records of `kind` matching any of `ways`,
    shortest name first, none of `:skip` (when `skip`). Each way keeps its own first `:limit` (its index does
    the work), then the union of those few rows is ordered once. The ways, with their parameters:
    `name` (the whole name is `:text`), `pinyin` and `initials` (a person's are `:word`), `like` (the search
    text holds `:like`), `words` (its words start with those of `:tsquery`, through the full-text index),
    `email` (an address holds `:like`), `phone` (a number is `:e164`), `companies` (people of `:companies`)."""
    model = KINDS[kind]
    name = model.full_name if model is Contact else model.name
    text, like = bindparam("text", type_=String), bindparam("like", type_=String)

    def owned(owner, *where):
        return model.id.in_(select(owner).where(owner.is_not(None), *where))

    conditions = {
        "name": lambda: func.lower(name) == text,
        "pinyin": lambda: Contact.pinyin == bindparam("word", type_=String),
        "initials": lambda: Contact.initials == bindparam("word", type_=String),
        "like": lambda: model.search_text.like(like),
        "words": lambda: func.to_tsvector(_SIMPLE, model.search_text).op("@@")(
            func.to_tsquery(_SIMPLE, bindparam("tsquery", type_=String))),
        "email": lambda: owned(Email.contact_id if model is Contact else Email.company_id,  # trigram index (crm_0009)
                               func.lower(Email.address).like(like)),
        "phone": lambda: owned(Phone.contact_id if model is Contact else Phone.company_id,
                               Phone.e164 == bindparam("e164", type_=String)),
        "companies": lambda: owned(ContactCompany.contact_id, ids_param(dialect, ContactCompany.company_id,
                                                                        "companies")),
    }
    limit = bindparam("limit", type_=Integer)
    order = (func.length(name), name, model.id)
    where = [model.merged_into_id.is_(None), *visible_where(model, visibility, dialect),
             *([~ids_param(dialect, model.id, "skip")] if skip else [])]
    branches = [select(model.id.label("id"), name.label("name")).where(conditions[way](), *where).order_by(*order)
                .limit(limit).subquery() for way in ways]
    hits = union(*[select(b.c.id, b.c.name) for b in branches]).subquery("hits")
    return select(hits.c.id, hits.c.name).order_by(func.length(hits.c.name), hits.c.name, hits.c.id).limit(limit)


def _search(session: Session, text: str, q: str, user, limit: int) -> list[dict]:
    clean = text.replace("%", "").replace("_", "")
    dialect = session.get_bind().dialect.name
    postgresql = dialect == "postgresql"
    # PostgreSQL: Latin input (pinyin, initials, Western names) and input too short for trigrams match the
    # start of words through the full-text index; Chinese input of 3 or more characters matches anywhere
    by_word = postgresql and (len(clean) < SHORT_INPUT or clean.isascii())
    words = re.findall(r"\w+", clean)
    word = "".join(words)
    e164 = phone_query(q, phone_region())
    visibility, params = visibility_shape(user, session)
    params.update(text=text, word=word, like=f"%{clean}%", tsquery=" & ".join(f"{w}:*" for w in words), e164=e164)
    results: list[dict] = []
    company_ids: list[int] = []
    for kind, model in KINDS.items():  # companies first: their contacts are found through them
        # exact matches first: the whole name, and a person's pinyin or initials (`张伟`, `zhangwei`, `zw`)
        exact = ("name", "pinyin", "initials") if model is Contact and word and word.isascii() else ("name",)
        rows = session.execute(_search_statement(dialect, kind, exact, False, visibility),
                               {**params, "limit": limit}).all()
        # the rest (part of a name, e-mail, phone, company) only while there is room
        ways = ["like"] if not by_word else ["words"] if words else []
        if len(clean) >= SHORT_INPUT or not postgresql:  # part of an e-mail address, anywhere
            ways.append("email")
        if e164:
            ways.append("phone")
        if model is Contact and company_ids:
            ways.append("companies")
        if ways and len(rows) < limit:
            rows += session.execute(_search_statement(dialect, kind, tuple(ways), bool(rows), visibility), {
                **params, "limit": limit - len(rows), "skip": [row.id for row in rows], "companies": company_ids}).all()
        if model is Company:
            company_ids = [row.id for row in rows]
        results += [{"kind": kind, "id": row.id, "name": row.name} for row in rows]
    return results[:limit]


@cache
def _duplicates_statement(dialect: str, kind: str, emails: bool, phones: bool, name: bool, exclude: bool,
                          visibility: str):
    """Built once per shape: the records sharing one of `:emails` or `:phones`, or with the name `:name` (a
    contact: at one of `:companies`), other than `:exclude_id`, as (id, name, reason) in one statement."""
    model = KINDS[kind]
    owner_email = Email.contact_id if model is Contact else Email.company_id
    owner_phone = Phone.contact_id if model is Contact else Phone.company_id
    ways = []  # (id, reason) of each way of matching, read together with the records' names
    if emails:
        ways.append(select(owner_email.label("id"), literal("email").label("reason"))
                    .where(ids_param(dialect, Email.address, "emails"), owner_email.is_not(None)))
    if phones:
        ways.append(select(owner_phone.label("id"), literal("phone").label("reason"))
                    .where(ids_param(dialect, Phone.e164, "phones"), owner_phone.is_not(None)))
    if name and model is Company:
        ways.append(select(Company.id.label("id"), literal("name").label("reason"))
                    .where(func.lower(Company.name) == bindparam("name", type_=String)))
    elif name:
        ways.append(select(Contact.id.label("id"), literal("name").label("reason")).join(ContactCompany).where(
            ids_param(dialect, ContactCompany.company_id, "companies"),
            func.lower(Contact.full_name) == bindparam("name", type_=String)))
    hits = (union_all(*ways) if len(ways) > 1 else ways[0]).subquery("hits")
    name_col = model.full_name if model is Contact else model.name
    return select(model.id, name_col, hits.c.reason).join(hits, hits.c.id == model.id).where(
        *([model.id != bindparam("exclude_id", type_=Integer)] if exclude else []), model.merged_into_id.is_(None),
        *visible_where(model, visibility, dialect)).order_by(model.id)


def likely_duplicates(session: Session, kind: str, *, emails=(), phones=(), name: str | None = None,
                      company_ids=(), exclude_id: int | None = None, user=None) -> list[dict]:
    """Records that share a normalized e-mail or phone, or (contacts) the same name at the same company."""
    by_name = bool(name) and (kind == "company" or bool(company_ids))
    if not (emails or phones or by_name):
        return []
    visibility, params = visibility_shape(user, session)
    params.update(emails=list(emails), phones=list(phones), companies=list(company_ids), exclude_id=exclude_id,
                  name=normalize_name(name) if by_name else None)
    statement = _duplicates_statement(session.get_bind().dialect.name, kind, bool(emails), bool(phones), by_name,
                                      exclude_id is not None, visibility)
    found: dict[int, dict] = {}
    for record_id, record_name, reason in session.execute(statement, params):
        found.setdefault(record_id, {"kind": kind, "id": record_id, "name": record_name, "reasons": set()}
                         )["reasons"].add(reason)
    return [{**row, "reasons": sorted(row["reasons"])} for row in found.values()]


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


@cache
def _activity_statement(dialect: str, kind: str, filtered: bool):
    """Built once per dialect, customer kind and whether the page shows only some kinds: how many activities
    of each kind the customer has, and the newest `:window` of `:kinds`, in one statement. The counts come from
    the tally the database keeps (`ActivityTally`), as rows with only kind and n. The page reads the covering
    indexes: a company's activities are two disjoint ranges (those on it or its subsidiaries, `:companies`, and
    those on its people, `:people`, not already among them), each cut at the window before they are merged."""
    def newest(*where):
        return select(Activity.id.label("id"), Activity.occurred_at.label("occurred_at")) \
            .where(*where, *([Activity.kind.in_(bindparam("kinds", expanding=True))] if filtered else [])) \
            .order_by(Activity.occurred_at.desc(), Activity.id.desc()).limit(bindparam("window", type_=Integer))

    tally = ActivityTally
    if kind != "company":
        contact_id = bindparam("contact_id", type_=Integer)
        hits = newest(Activity.contact_id == contact_id).subquery("hits")
        tallied = select(tally.kind, tally.n).where(tally.contact_id == contact_id).subquery("tallied")
    else:
        on_companies = ids_param(dialect, Activity.company_id, "companies")
        if dialect == "postgresql":  # each company's newest from its own index range, none of them sorted
            tree = func.unnest(bindparam("companies", type_=ARRAY(Integer))).table_valued("id").render_derived(name="tree")
            each = newest(Activity.company_id == tree.c.id).lateral("on_company")
            on_tree = select(each.c.id, each.c.occurred_at).select_from(tree).join(each, true())
        else:
            ranked = newest(on_companies).subquery("on_companies")
            on_tree = select(ranked.c.id, ranked.c.occurred_at)
        on_people = newest(ids_param(dialect, Activity.contact_id, "people"),
                           or_(Activity.company_id.is_(None), ~on_companies)).subquery("on_people")
        hits = union_all(on_tree, select(on_people.c.id, on_people.c.occurred_at)).subquery("hits")
        tallied = union_all(  # the tree's company rows, and the people's rows of companies outside it
            select(tally.kind, tally.n).where(ids_param(dialect, tally.company_id, "companies"), tally.contact_id == 0),
            select(tally.kind, tally.n).where(ids_param(dialect, tally.contact_id, "people"),
                                              ~ids_param(dialect, tally.company_id, "companies")),
        ).subquery("tallied")
    counts = select(tallied.c.kind.label("kind"), func.sum(tallied.c.n).label("n"), *[
        null().label(name) for name in ("id", "occurred_at", "subject", "outcome", "duration_minutes", "username")
    ]).group_by(tallied.c.kind)
    page_ids = select(hits.c.id).order_by(hits.c.occurred_at.desc(), hits.c.id.desc()) \
        .limit(bindparam("window", type_=Integer)).subquery("newest")
    page = select(Activity.kind, null().label("n"), Activity.id, Activity.occurred_at, Activity.subject,
                  Activity.outcome, Activity.duration_minutes, User.username) \
        .join(page_ids, page_ids.c.id == Activity.id).outerjoin(User, User.id == Activity.user_id)
    return union_all(page, counts)  # the page first: its columns' types are the result's


def _activity_page(session: Session, customer: CustomerRef, kinds: list[str] | None, window: int):
    """How many activities of each kind the customer has, and the newest `window` of `kinds` (all when None),
    newest first."""
    dialect = session.get_bind().dialect.name
    params: dict[str, Any] = {"window": window}
    if customer.kind == "company":
        params.update(companies=list(customer.company_ids), people=list(customer.contact_ids))
    else:
        params["contact_id"] = customer.id
    if kinds:
        params["kinds"] = list(kinds)
    counted: dict[str, int] = {}
    rows = []
    for row in session.execute(_activity_statement(dialect, customer.kind, bool(kinds)), params):
        if row.id is None:
            if row.n:
                counted[row.kind] = int(row.n)
        else:
            rows.append(row)
    rows.sort(key=lambda r: (r.occurred_at, r.id), reverse=True)
    return counted, rows


def timeline(session: Session, customer: CustomerRef, *, page: int = 1, per_page: int = 25,
             kinds: list[str] | None = None) -> dict:
    """Activities (and entries other modules contribute) newest first, one page, with the customer's
    activities counted by kind (`counts`, whatever `kinds` shows)."""
    page, per_page = max(page, 1), min(max(per_page, 1), 100)
    window = page * per_page
    counts, activities = _activity_page(session, customer, kinds, window)
    total = sum(n for kind, n in counts.items() if not kinds or kind in kinds)
    entries = [{"source": "crm", "kind": a.kind, "id": a.id, "at": a.occurred_at.isoformat(), "title": a.subject,
                "detail": a.outcome or "", "duration_minutes": a.duration_minutes, "user": a.username}
               for a in activities]
    answers, failed = contributions("crm_timeline_entries", customer=customer, limit=window)
    for plugin, answer in answers:
        for item in answer or []:
            if kinds and item.get("kind") not in kinds:
                continue
            entries.append({"source": plugin, **item})
            total += 1
    entries.sort(key=lambda e: e["at"], reverse=True)
    return {"page": page, "per_page": per_page, "total": total,
            "entries": entries[(page - 1) * per_page: window], "missing": failed, "counts": counts}


# -- the 360° view -------------------------------------------------------------------------------------

def _contact_ref(session: Session, record) -> CustomerRef:
    company_ids = tuple(session.scalars(select(ContactCompany.company_id).where(ContactCompany.contact_id == record.id)))
    return CustomerRef("contact", record.id, record.full_name, company_ids, (record.id,))


MAX_TREE_DEPTH = 1000


@dataclass(frozen=True)
class _Tree:
    chain: list[int]  # the ancestors, parent first
    below: list[tuple[int, int, int]]  # everything below, as `descendants` gives it: (id, depth, parent id)
    names: dict[int, str]  # of all of them
    people: tuple[int, ...]  # the ids of the company's own people
    counts: dict[int, int]  # how many people each company of the tree has


@cache
def _tree_statement():
    """Two recursive queries (the upward one stops at a cycle) and the people of the tree, as one statement
    built once: rows of (id, parent_id, name, depth, people, contact_id), where depth 0 is the company and its
    ancestors, above 0 a company below it, -1 a company's head count and -2 one of the company's people."""
    company_id = bindparam("company_id", type_=Integer)
    columns = (Company.id, Company.parent_id, Company.name)
    up = select(*columns).where(Company.id == company_id).cte("up", recursive=True)
    up = up.union(select(*columns).join(up, Company.id == up.c.parent_id))
    down = select(*columns, literal(1).label("depth")).where(Company.parent_id == company_id) \
        .cte("down", recursive=True)
    down = down.union(select(*columns, (down.c.depth + 1).label("depth")).join(down, Company.parent_id == down.c.id)
                      .where(down.c.depth < MAX_TREE_DEPTH))  # a cycle written past the checks still ends
    links = ContactCompany
    return union_all(
        select(up.c.id, up.c.parent_id, up.c.name, literal(0).label("depth"), cast(null(), Integer).label("people"),
               cast(null(), Integer).label("contact_id")),  # typed: PostgreSQL types a union's NULLs left to right
        select(down.c.id, down.c.parent_id, down.c.name, down.c.depth, null(), null()),
        select(links.company_id, null(), null(), literal(-1), func.count(), null())
        .where(links.company_id.in_(select(down.c.id))).group_by(links.company_id),
        select(links.company_id, null(), null(), literal(-2), null(), links.contact_id)
        .where(links.company_id == company_id))


def _tree(session: Session, company_id: int) -> _Tree:
    """The company's ancestors, everything below it, their names and the people of each, in one statement."""
    rows = session.execute(_tree_statement(), {"company_id": company_id}).all()
    names = {row.id: row.name for row in rows if row.depth >= 0}
    parents = {row.id: row.parent_id for row in rows if row.depth == 0}
    chain, current = [], parents.get(company_id)
    while current is not None and current in parents and current not in chain and current != company_id:
        chain.append(current)
        current = parents[current]
    below = sorted(((row.id, row.depth, row.parent_id) for row in rows if row.depth > 0), key=lambda r: (r[1], r[0]))
    people = tuple(sorted(row.contact_id for row in rows if row.depth == -2))
    counts = {row.id: row.people for row in rows if row.depth == -1}
    counts[company_id] = len(people)
    return _Tree(chain, below, names, people, counts)


_TEXTS = 6  # the most text columns one of the lists below has (an address)


@cache
def _details_statement(kind: str):
    """Built once per kind of record: its phones, e-mails, addresses and tags, each list one branch of a UNION ALL
    with the same columns (part, id, kind, primary and up to six texts), for the record `:record_id`."""
    column, tags = ("contact_id", contact_tag) if kind == "contact" else ("company_id", company_tag)
    record_id = bindparam("record_id", type_=Integer)

    def part(name, model, *texts, where=None, kind_=None, primary=None):
        padding = [null()] * (_TEXTS - len(texts))
        return select(literal(name).label("part"), model.id.label("id"),
                      (kind_ if kind_ is not None else model.kind).label("kind"),
                      (primary if primary is not None else model.is_primary).label("is_primary"),
                      *[text.label(f"t{i}") for i, text in enumerate([*texts, *padding])]) \
            .where(where if where is not None else getattr(model, column) == record_id)

    return union_all(
        part("phone", Phone, Phone.raw, Phone.e164),
        part("email", Email, Email.address),
        part("address", Address, Address.country, Address.province, Address.city, Address.district,
             Address.street, Address.postcode),
        part("tag", Tag, Tag.name, Tag.color, kind_=null(), primary=null(),
             where=Tag.id.in_(select(tags.c.tag_id).where(tags.c[column] == record_id))))


def _details(session: Session, kind: str, record_id: int) -> dict[str, list[dict]]:
    """The record's phones, e-mails, addresses (primary first) and tags, in one statement."""
    rows: dict[str, list] = {"phone": [], "email": [], "address": [], "tag": []}
    for row in session.execute(_details_statement(kind), {"record_id": record_id}):
        rows[row.part].append(row)
    for name in ("phone", "email", "address"):
        rows[name].sort(key=lambda r: (not r.is_primary, r.id))
    rows["tag"].sort(key=lambda r: r.id)
    return {
        "phones": [{"id": p.id, "kind": p.kind, "raw": p.t0, "e164": p.t1, "primary": p.is_primary}
                   for p in rows["phone"]],
        "emails": [{"id": e.id, "kind": e.kind, "address": e.t0, "primary": e.is_primary} for e in rows["email"]],
        "addresses": [{"id": a.id, "kind": a.kind, "country": a.t0, "province": a.t1, "city": a.t2,
                       "district": a.t3, "street": a.t4, "postcode": a.t5, "primary": a.is_primary}
                      for a in rows["address"]],
        "tags": [{"id": t.id, "name": t.t0, "color": t.t1} for t in rows["tag"]],
    }


def _custom(session: Session, kind: str, values: dict) -> list[dict]:
    from .services import field_label

    return [{"key": f.key, "label": field_label(f), "type": f.type, "value": values.get(f.key)}
            for f in custom_fields(session, kind)]


def _money(values: dict) -> dict[str, str]:
    return {currency: str(amount) for currency, amount in sorted(values.items())}


PEOPLE_PER_PAGE = 50


def customer_360(session: Session, kind: str, record, user, *, page: int = 1,
                 kinds: list[str] | None = None, people_page: int = 1) -> dict[str, Any]:
    """Everything about one customer in a handful of queries: profile, hierarchy (with open deal value rolled
    up), people (`PEOPLE_PER_PAGE` at a time), deals, leads, activities, documents, and the panels of other
    modules."""
    if kind == "company":
        tree = _tree(session, record.id)
        chain, below, names, counts = tree.chain, tree.below, tree.names, tree.counts
        ref = CustomerRef("company", record.id, record.name, (record.id, *[cid for cid, _d, _p in below]), tree.people)
    else:
        ref = _contact_ref(session, record)
    data: dict[str, Any] = {"kind": kind, "id": record.id, "version": record.version}
    if kind == "company":
        data["profile"] = {"name": record.name, "name_en": record.name_en, "legal_name": record.legal_name,
                           "industry": record.industry, "employees": record.employees, "region": record.region,
                           "website": record.website, "status": record.status,
                           "owner": record.owner.username if record.owner else None,
                           "team": record.team.name if record.team else None}
        data["deals"], own = customer_deals(session, ref, user)
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
            .order_by(ContactCompany.is_primary.desc(), Contact.full_name, Contact.id)
            .limit(PEOPLE_PER_PAGE).offset((max(people_page, 1) - 1) * PEOPLE_PER_PAGE))
        data["people"] = [{"id": r[0], "name": r[1], "title": r[2], "role": r[3], "role_en": r[4],
                           "primary": r[5]} for r in people]
        data["people_pages"] = {"page": max(people_page, 1), "per_page": PEOPLE_PER_PAGE,
                                "total": counts.get(record.id, 0)}
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
    data["custom"] = _custom(session, kind, record.custom or {})
    column = Document.contact_id if kind == "contact" else Document.company_id
    data["documents"] = [{"id": d.id, "filename": d.filename, "size": d.size, "content_type": d.content_type,
                          "uploaded_at": d.uploaded_at.isoformat()}
                         for d in session.scalars(select(Document).where(column == record.id)
                                                  .order_by(Document.uploaded_at.desc()).limit(50))]
    from .models import AuditEntry

    newest = select(AuditEntry.action, AuditEntry.changes, AuditEntry.at, AuditEntry.id, AuditEntry.user_id) \
        .where(AuditEntry.entity == record.__tablename__, AuditEntry.record_id == record.id) \
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(20).subquery("newest")
    entries = session.execute(
        select(newest.c.action, newest.c.changes, newest.c.at, User.username)
        .outerjoin(User, User.id == newest.c.user_id).order_by(newest.c.at.desc(), newest.c.id.desc())).all()
    data["history"] = [{"action": e.action, "at": e.at.isoformat(), "user": e.username, "changes": e.changes}
                       for e in entries]
    if kind != "company":
        data["deals"] = customer_deals(session, ref, user)[0]
    data["leads"] = customer_leads(session, ref, user, emails=[e["address"] for e in data["emails"]],
                                   phones=[p["e164"] for p in data["phones"] if p["e164"]])
    data["timeline"] = timeline(session, ref, page=page, kinds=kinds or None)
    data["activity_counts"] = data["timeline"].pop("counts")
    answers, failed = contributions("crm_customer_panels", customer=ref)
    data["panels"] = [{"module": plugin, **panel} for plugin, answer in answers for panel in (answer or [])] \
        + [unavailable_panel(module) for module in failed]
    return data

