"""CRM rules shared by screens, the REST API and import: validation, hierarchy, search text, audit."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, has_app_context
from flask_babel import gettext
from sqlalchemy import event, inspect, literal, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bigledger_core.db import utcnow
from bigledger_core.errors import BigLedgerError

from .models import FIELD_TYPES, Address, Company, Contact, CustomField, Email, Phone
from .normalize import (
    InvalidValue,
    display_name,
    name_keys,
    normalize_email,
    parse_phone,
    search_text,
    split_chinese_name,
)
from .pipeline.models import Deal


@dataclass(frozen=True)
class Problem:
    """One refused value: which field, and why (already translated)."""

    field: str
    message: str


class CrmValidationError(BigLedgerError):
    """Values the CRM refuses; `problems` names each field. Nothing is written."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


# -- what other modules add to a page -------------------------------------------------------------------

def contributions(hook: str, **kwargs) -> tuple[list[tuple[str, Any]], list[str]]:
    """What enabled modules add to a page (panels, timeline entries, line checks): their (module, answer) pairs,
    and the modules that failed. A failure is logged and the page is shown without that module. After a failed
    database statement the transaction is rolled back before the next module is asked, so that the rest of the
    page can still be read; while the request is saving something, such a failure fails the save instead."""
    if not has_app_context():
        return [], []
    from bigledger_core.db import db
    from bigledger_core.modules import enabled_modules

    failed: list[str] = []

    def record(module: str, exc: Exception) -> None:
        if isinstance(exc, DBAPIError):
            session = db.session
            if session.new or session.dirty or session.deleted:
                raise exc
            session.rollback()
        failed.append(module)

    answers = current_app.extensions["bigledger"].call_each(hook, modules=enabled_modules(), on_error=record,
                                                            **kwargs)
    return answers, failed


def unavailable_panel(module: str) -> dict[str, Any]:
    """The panel shown in place of a module's panels when the module failed."""
    manifest = current_app.extensions["bigledger"].manifests.get(module)
    return {"module": module, "title": dict(manifest.label) if manifest else {"zh": module, "en": module},
            "failed": True, "rows": [[gettext("Not available"), gettext(
                "This module did not answer. The rest of the page is up to date; try again later.")]]}


def phone_region() -> str:
    return (current_app.config.get("BIGLEDGER_PHONE_REGION") or "CN") if has_app_context() else "CN"


# -- names and search text -----------------------------------------------------------------------------

def complete_contact_name(contact: Contact) -> None:
    """Fill `full_name` from family/given name, or family/given from a Chinese full name."""
    if contact.full_name and contact.full_name.strip():
        contact.full_name = contact.full_name.strip()
        if not contact.family_name and not contact.given_name:
            contact.family_name, contact.given_name = split_chinese_name(contact.full_name)
    else:
        contact.full_name = display_name(contact.family_name, contact.given_name)


def _refresh(obj) -> None:
    if isinstance(obj, Contact):
        complete_contact_name(obj)
        obj.search_text = search_text(obj.full_name, obj.name_en)
        obj.pinyin, obj.initials = name_keys(obj.full_name)
    elif isinstance(obj, Company):
        obj.search_text = search_text(obj.name, obj.name_en, obj.legal_name)
    elif isinstance(obj, Phone) and obj.raw and (obj.e164 is None or _changed(obj, "raw")):
        try:
            obj.e164 = parse_phone(obj.raw, phone_region())
        except InvalidValue:
            obj.e164 = None
    elif isinstance(obj, Email) and obj.address:
        try:
            obj.address = normalize_email(obj.address)
        except InvalidValue:
            obj.address = obj.address.strip().lower()


def _changed(obj, attr: str) -> bool:
    return inspect(obj).attrs[attr].history.has_changes()


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context, _instances) -> None:
    for obj in list(session.new) + list(session.dirty):
        if isinstance(obj, (Contact, Company, Phone, Email)):
            _refresh(obj)
        if isinstance(obj, Company) and obj.parent_id is not None and (obj in session.new or _changed(obj, "parent_id")):
            check_parent(session, obj.id, obj.parent_id)
    _audit(session)


@event.listens_for(Session, "after_flush")
def _one_primary(session: Session, _context) -> None:
    """Marking a phone, e-mail, address or company link primary makes the others of its owner secondary."""
    from sqlalchemy import update

    from .models import ContactCompany

    for obj in list(session.new) + list(session.dirty):
        if isinstance(obj, (Phone, Email, Address)) and obj.is_primary:
            owner = "contact_id" if obj.contact_id is not None else "company_id"
            column = getattr(type(obj), owner)
            siblings = update(type(obj)).where(column == getattr(obj, owner), type(obj).id != obj.id,
                                               type(obj).is_primary.is_(True))
        elif isinstance(obj, ContactCompany) and obj.is_primary:
            siblings = update(ContactCompany).where(ContactCompany.contact_id == obj.contact_id,
                                                    ContactCompany.id != obj.id, ContactCompany.is_primary.is_(True))
        else:
            continue
        session.execute(siblings.values(is_primary=False).execution_options(synchronize_session=False))
        for other in session.identity_map.values():  # keep loaded objects in step
            if type(other) is type(obj) and other is not obj and getattr(other, "is_primary", False) and (
                    (getattr(other, "contact_id", None), getattr(other, "company_id", None))
                    == (getattr(obj, "contact_id", None), getattr(obj, "company_id", None))):
                from sqlalchemy.orm.attributes import set_committed_value

                set_committed_value(other, "is_primary", False)


# -- hierarchy -----------------------------------------------------------------------------------------

def ancestors(session: Session, company_id: int) -> list[int]:
    """Ids from the company's parent up to the root (cycle-safe)."""
    chain, current = [], company_id
    seen = {company_id}
    while True:
        parent = session.execute(select(Company.parent_id).where(Company.id == current)).scalar()
        if parent is None or parent in seen:
            return chain
        chain.append(parent)
        seen.add(parent)
        current = parent


def check_parent(session: Session, company_id: int | None, parent_id: int) -> None:
    """Refuse a parent that is the company itself or one of its descendants."""
    if company_id is None:
        return
    with session.no_autoflush:
        if parent_id == company_id or company_id in ancestors(session, parent_id):
            raise CrmValidationError([Problem("parent", gettext(
                "a company cannot be its own parent or the parent of one of its parents"))])


def descendants(session: Session, company_id: int) -> list[tuple[int, int, int]]:
    """(id, depth, parent id) of every company below `company_id`, depth 1 for children, in one
    recursive query."""
    tree = select(Company.id, Company.parent_id, literal(1).label("depth")) \
        .where(Company.parent_id == company_id).cte("tree", recursive=True)
    below = select(Company.id, Company.parent_id, (tree.c.depth + 1).label("depth")) \
        .join(tree, Company.parent_id == tree.c.id)
    tree = tree.union(below)
    rows = session.execute(select(tree.c.id, tree.c.depth, tree.c.parent_id).order_by(tree.c.depth))
    return [(row.id, row.depth, row.parent_id) for row in rows]


# -- custom fields -------------------------------------------------------------------------------------

def custom_fields(session: Session, entity: str) -> list[CustomField]:
    return list(session.scalars(select(CustomField).where(CustomField.entity == entity, CustomField.active)
                                .order_by(CustomField.position, CustomField.id)))


def field_label(field: CustomField) -> str:
    from bigledger_core.i18n import current_locale

    return (field.label_en or field.label) if current_locale() == "en" else field.label


def clean_custom(session: Session, entity: str, values: dict, *, partial: bool = False) -> dict:
    """Validate and convert custom field values (str from forms and files, typed from JSON).

    Returns the cleaned dict; raises CrmValidationError naming every bad field. Unknown keys are refused.
    """
    fields = {f.key: f for f in custom_fields(session, entity)}
    problems: list[Problem] = []
    cleaned: dict = {}
    for key in values:
        if key not in fields:
            problems.append(Problem(key, gettext("unknown custom field")))
    for key, field in fields.items():
        label = field_label(field)
        raw = values.get(key)
        empty = raw is None or (isinstance(raw, str) and not raw.strip()) or raw == []
        if empty:
            if field.required and not (partial and key not in values):
                problems.append(Problem(label, gettext("is required")))
            continue
        try:
            cleaned[key] = convert_custom(field, raw)
        except ValueError as exc:
            problems.append(Problem(label, str(exc)))
    if problems:
        raise CrmValidationError(problems)
    return cleaned


def convert_custom(field: CustomField, raw):
    """One custom field value, converted to what is stored; ValueError (translated) when it cannot be."""
    kind = field.type
    if kind == "text":
        value = str(raw).strip()
        if field.pattern and not re.fullmatch(field.pattern, value):
            raise ValueError(gettext("%(value)s does not match the required format", value=value))
        return value
    if kind == "number":
        try:
            number = float(str(raw).replace(",", "").strip())
        except ValueError:
            raise ValueError(gettext("%(value)s is not a number", value=raw)) from None
        return int(number) if number.is_integer() else number
    if kind == "date":
        if isinstance(raw, (dt.date, dt.datetime)):
            return raw.isoformat()[:10]
        try:
            return dt.date.fromisoformat(str(raw).strip().replace("/", "-")).isoformat()
        except ValueError:
            raise ValueError(gettext("%(value)s is not a date (YYYY-MM-DD)", value=raw)) from None
    if kind == "boolean":
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "y", "是", "on"}:
            return True
        if text in {"0", "false", "no", "n", "否", "off"}:
            return False
        raise ValueError(gettext("%(value)s is not yes or no", value=raw))
    allowed = {str(o.get("value")) for o in (field.options or [])}
    if kind == "select":
        value = str(raw).strip()
        if value not in allowed:
            raise ValueError(gettext("%(value)s is not one of the choices", value=value))
        return value
    if kind == "multiselect":
        items = raw if isinstance(raw, list) else [p for p in re.split(r"[;,，；]", str(raw)) if p.strip()]
        values = [str(v).strip() for v in items]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(gettext("%(value)s is not one of the choices", value=", ".join(bad)))
        return values
    raise ValueError(f"unknown field type {kind!r} (one of {', '.join(FIELD_TYPES)})")


# -- contact details -----------------------------------------------------------------------------------

def clean_phone(raw: str, field: str = "phone") -> tuple[str, str]:
    """(as entered, E.164) or CrmValidationError."""
    try:
        return raw.strip(), parse_phone(raw, phone_region())
    except InvalidValue:
        raise CrmValidationError([Problem(field, gettext("%(value)s is not a valid phone number", value=raw))]) \
            from None


def clean_email(raw: str, field: str = "email") -> str:
    try:
        return normalize_email(raw)
    except InvalidValue:
        raise CrmValidationError([Problem(field, gettext("%(value)s is not a valid e-mail address", value=raw))]) \
            from None


# -- audit trail ---------------------------------------------------------------------------------------

_AUDITED = (Contact, Company, Address, Phone, Email, Deal)
_SKIP = {"search_text", "updated_at", "version", "created_at"}


def _audit(session: Session) -> None:
    from .models import AuditEntry

    user = getattr(g, "user", None) if has_app_context() else None
    user_id = getattr(user, "id", None) if user is not None and getattr(user, "is_authenticated", False) else None
    entries = []
    for obj in session.dirty:
        if isinstance(obj, _AUDITED) and session.is_modified(obj, include_collections=False):
            changes = {}
            for attr in inspect(obj).mapper.column_attrs:
                if attr.key in _SKIP:
                    continue
                hist = inspect(obj).attrs[attr.key].history
                if hist.has_changes():
                    old = hist.deleted[0] if hist.deleted else None
                    new = hist.added[0] if hist.added else None
                    changes[attr.key] = [_jsonable(old), _jsonable(new)]
            if changes:
                entries.append(AuditEntry(entity=obj.__tablename__, record_id=obj.id, action="update",
                                          changes=changes, user_id=user_id, at=utcnow()))
    for obj in session.deleted:
        if isinstance(obj, _AUDITED):
            entries.append(AuditEntry(entity=obj.__tablename__, record_id=obj.id, action="delete",
                                      changes={"repr": str(obj)}, user_id=user_id, at=utcnow()))
    session.add_all(entries)


def _jsonable(value):
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    return str(value)
