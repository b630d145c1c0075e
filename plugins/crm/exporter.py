"""Export contacts and companies to CSV or XLSX, in a form the importer reads back.

Rows are produced in batches of 1,000 records; each batch loads its details with one query per kind
of detail (phones, e-mails, addresses, companies, tags, owners), never one query per record.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any

from flask_appbuilder.security.sqla.models import User
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from bigledger_core.i18n import current_locale

from .importer import STATUS_LABELS, TARGETS, header_key
from .models import (
    Address,
    Company,
    Contact,
    ContactCompany,
    ContactRole,
    Email,
    Phone,
    Tag,
    company_tag,
    contact_tag,
)
from .services import custom_fields, field_label

EXPORT_BATCH = 1000
FORMATS = ("csv", "xlsx")
_CONTACT_KEYS = ("external_id", "full_name", "family_name", "given_name", "name_en", "title", "company", "role",
                 "phone:mobile", "phone:work", "email", "street", "district", "city", "province", "postcode",
                 "country", "tags", "owner")
_COMPANY_KEYS = ("external_id", "name", "name_en", "legal_name", "industry", "employees", "region", "website",
                 "status", "parent", "phone:mobile", "phone:work", "email", "street", "district", "city", "province",
                 "postcode", "country", "tags", "owner")
# A cell starting like a formula is prefixed with an apostrophe (the importer removes it again);
# phone numbers such as +86 138… are left alone.
_FORMULA = re.compile(r"^[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+\-]?[\d\s().\-]+$")


def _safe(value: str) -> str:
    return f"'{value}" if _FORMULA.match(value) and not _NUMBER.match(value) else value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):  # the words the importer's yes/no fields accept
        return ("是" if value else "否") if current_locale() == "zh" else ("yes" if value else "no")
    if isinstance(value, (list, tuple)):
        return _safe("; ".join(str(v) for v in value))
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return value
    return _safe(str(value))


def export_table(rows: Iterable[dict], columns: list[tuple[str, str]], fmt: str, out: IO[bytes]) -> int:
    """Write rows to a binary file as CSV (UTF-8 with BOM) or XLSX, streaming; returns the row count.

    `columns` is [(key in the row dicts, header)]. Values that a spreadsheet would run as a formula
    are written with a leading apostrophe.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    headers = [str(header) for _key, header in columns]
    keys = [key for key, _header in columns]
    count = 0
    if fmt == "csv":
        text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="")
        writer = csv.writer(text)
        writer.writerow(headers)
        for row in rows:
            writer.writerow([_cell(row.get(key)) for key in keys])
            count += 1
        text.flush()
        text.detach()
        return count
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet()
    sheet.append(headers)
    for row in rows:
        sheet.append([_cell(row.get(key)) for key in keys])
        count += 1
    book.save(out)
    return count


# -- columns ---------------------------------------------------------------------------------------------

def export_columns(session: Session, entity: str) -> list[tuple[str, str]]:
    """[(key, header)] of an export of contacts or companies, headers in the current language.

    Custom fields come last as `custom:<key>` under their label (or `custom:<key>` when the label is
    already the header of a built-in column).
    """
    targets = {target.key: target for target in TARGETS[entity]}
    keys = _CONTACT_KEYS if entity == "contact" else _COMPANY_KEYS
    result = [(key, str(targets[key].header)) for key in keys]
    taken = {header_key(header) for _key, header in result}
    for target in TARGETS[entity]:
        taken.update(header_key(alias) for alias in target.aliases)
    for field_ in custom_fields(session, entity):
        label = field_label(field_)
        header = label if header_key(label) not in taken else f"custom:{field_.key}"
        taken.add(header_key(header))
        result.append((f"custom:{field_.key}", header))
    return result


# -- rows ------------------------------------------------------------------------------------------------

def _id_batches(session: Session, query: Select, model) -> Iterator[list[int]]:
    """The ids a select of records or of ids yields, in its order, 1,000 at a time."""
    first = query.column_descriptions[0]
    if first.get("entity") is model and first.get("expr") is model:
        query = query.with_only_columns(model.id)
    result = session.execute(query.execution_options(yield_per=EXPORT_BATCH))
    for partition in result.scalars().partitions(EXPORT_BATCH):
        yield list(partition)


def _details(session: Session, model, owner_column, ids: list[int]) -> dict[str, dict[int, list]]:
    """Phones, e-mails and addresses of a batch, each list primary first, one query per kind."""
    found: dict[str, dict[int, list]] = {"phones": {}, "emails": {}, "addresses": {}}
    for name, detail in (("phones", Phone), ("emails", Email), ("addresses", Address)):
        column = getattr(detail, owner_column)
        query = select(detail).where(column.in_(ids)).order_by(column, detail.is_primary.desc(), detail.id)
        for item in session.scalars(query):
            found[name].setdefault(getattr(item, owner_column), []).append(item)
    return found


def _tags(session: Session, table, column: str, ids: list[int]) -> dict[int, list[str]]:
    tags: dict[int, list[str]] = {}
    query = select(table.c[column], Tag.name).join(Tag, Tag.id == table.c.tag_id) \
        .where(table.c[column].in_(ids)).order_by(table.c[column], Tag.name)
    for record_id, name in session.execute(query):
        tags.setdefault(record_id, []).append(name)
    return tags


def _owners(session: Session, records) -> dict[int, str]:
    ids = {record.owner_id for record in records if record.owner_id}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def _custom(record, fields) -> dict[str, Any]:
    values = record.custom or {}
    return {f"custom:{f.key}": values.get(f.key) for f in fields}


def _common(row: dict, record, details: dict, tags: dict, owners: dict) -> None:
    phones = details["phones"].get(record.id, [])
    emails = details["emails"].get(record.id, [])
    address = next(iter(details["addresses"].get(record.id, [])), None)
    row["phones"] = [(p.kind, p.raw) for p in phones]
    row["emails"] = [(e.kind, e.address) for e in emails]
    row["phone:mobile"] = next((p.raw for p in phones if p.kind == "mobile"), None)
    row["phone:work"] = next((p.raw for p in phones if p.kind != "mobile"), None)
    row["email"] = emails[0].address if emails else None
    if address is not None:
        row.update({key: getattr(address, key) for key in ("street", "district", "city", "province", "postcode",
                                                            "country")})
    row["tags"] = tags.get(record.id, [])
    row["owner"] = owners.get(record.owner_id)


def contact_rows(session: Session, query: Select) -> Iterator[dict[str, Any]]:
    """Export dicts of the contacts a select yields (of Contact objects or of ids), in its order.

    Keys are those of `export_columns(session, "contact")`, plus `phones` and `emails` (every
    (kind, value), primary first) for vCard.
    """
    fields = custom_fields(session, "contact")
    for ids in _id_batches(session, query, Contact):
        contacts = {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(ids)))}
        details = _details(session, Contact, "contact_id", ids)
        tags = _tags(session, contact_tag, "contact_id", ids)
        owners = _owners(session, contacts.values())
        links: dict[int, tuple[str, str | None]] = {}
        query_links = select(ContactCompany.contact_id, Company.name, ContactRole.name) \
            .join(Company, Company.id == ContactCompany.company_id) \
            .outerjoin(ContactRole, ContactRole.id == ContactCompany.role_id) \
            .where(ContactCompany.contact_id.in_(ids)) \
            .order_by(ContactCompany.contact_id, ContactCompany.is_primary.desc(), ContactCompany.id)
        for contact_id, company, role in session.execute(query_links):
            links.setdefault(contact_id, (company, role))
        for contact_id in ids:
            contact = contacts.get(contact_id)
            if contact is None:
                continue
            row = {key: getattr(contact, key) for key in ("id", "external_id", "full_name", "family_name",
                                                          "given_name", "name_en", "title")}
            row["company"], row["role"] = links.get(contact_id, (None, None))
            _common(row, contact, details, tags, owners)
            row.update(_custom(contact, fields))
            yield row


def company_rows(session: Session, query: Select) -> Iterator[dict[str, Any]]:
    """Export dicts of the companies a select yields (of Company objects or of ids), in its order."""
    fields = custom_fields(session, "company")
    for ids in _id_batches(session, query, Company):
        companies = {c.id: c for c in session.scalars(select(Company).where(Company.id.in_(ids)))}
        details = _details(session, Company, "company_id", ids)
        tags = _tags(session, company_tag, "company_id", ids)
        owners = _owners(session, companies.values())
        parent_ids = {c.parent_id for c in companies.values() if c.parent_id}
        parents = dict(session.execute(select(Company.id, Company.name).where(Company.id.in_(parent_ids))).all()) \
            if parent_ids else {}
        for company_id in ids:
            company = companies.get(company_id)
            if company is None:
                continue
            row = {key: getattr(company, key) for key in ("id", "external_id", "name", "name_en", "legal_name",
                                                          "industry", "employees", "region", "website")}
            row["status"] = str(STATUS_LABELS[company.status]) if company.status in STATUS_LABELS else company.status
            row["parent"] = parents.get(company.parent_id)
            _common(row, company, details, tags, owners)
            row.update(_custom(company, fields))
            yield row
