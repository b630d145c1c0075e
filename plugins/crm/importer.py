"""Import contacts and companies from CSV, XLSX and vCard files.

Files are read as a stream of rows. Columns are recognised by their Chinese or English header (or by
an explicit mapping); each row is validated whole, and only valid rows are written. Rows are written
in batches of 500, each inside a SAVEPOINT: when the database refuses a batch, it is replayed row by
row so that only the guilty rows are rejected. An existing record (not merged) is updated instead of
duplicated: contacts are matched by external id, then e-mail, then phone; companies by external id,
then name. Empty cells never clear a value.
"""
from __future__ import annotations

import codecs
import csv
import datetime as dt
import itertools
import logging
import multiprocessing
import re
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import phonenumbers
from flask import current_app, has_app_context
from flask_appbuilder.security.sqla.models import User
from flask_babel import force_locale, gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, insert, select
from sqlalchemy import text as sql
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.exc import StaleDataError

from bigledger_core.db import in_ids, insert_rows, reserve_ids, utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.events import emit
from bigledger_core.security import visibility_clause

from .models import (
    COMPANY_STATUSES,
    Address,
    Company,
    Contact,
    ContactCompany,
    ContactRole,
    Email,
    Phone,
    Tag,
    contact_tag,
)
from .normalize import (
    display_name,
    learn_pinyin,
    name_keys,
    normalize_name,
    pinyin_of,
    search_text,
)
from .services import (
    CrmValidationError,
    clean_custom,
    clean_email,
    clean_phone,
    complete_contact_name,
    custom_fields,
    field_label,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 500
ENTITIES = ("contact", "company")
_CHUNK = 1 << 20
_PHONE_LENGTH = Phone.__table__.c.raw.type.length
_SPLIT = re.compile(r"[,;，；、\n]+")
# A leading apostrophe is how the exporter keeps spreadsheet programs from running a cell as a formula.
_ESCAPED = re.compile(r"^'(?=[=+\-@\t\r])")


class ImportFileError(BigLedgerError):
    """The file cannot be read as a table (format, damage, no header row, bad mapping); nothing was written."""


# -- what the importer understands ----------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A column the importer can fill: its key, its header in exported files, and header spellings."""

    key: str
    header: Any  # lazy string: the header written by the exporter in the current language
    aliases: tuple[str, ...] = ()
    multiple: bool = False  # several columns may feed it (phones, e-mails, tags)


_SHARED = [
    Target("external_id", _l("External id"), ("外部编号", "外部id", "external id", "external_id")),
    Target("phone:mobile", _l("Mobile"), ("手机", "手机号", "手机号码", "移动电话", "mobile", "mobile phone", "cell",
                                           "cell phone"), multiple=True),
    Target("phone:work", _l("Work phone"), ("电话", "办公电话", "工作电话", "固定电话", "座机", "work phone",
                                        "office phone"), multiple=True),
    Target("phone", _l("Other phone"), ("phone", "tel", "telephone", "联系电话", "电话号码", "其他电话"),
           multiple=True),
    Target("phone:home", _l("Home phone"), ("住宅电话", "家庭电话", "home phone"), multiple=True),
    Target("phone:fax", _l("Fax"), ("传真", "fax"), multiple=True),
    Target("email", _l("Email"), ("邮箱", "电子邮件", "电子邮箱", "邮件", "email", "e-mail", "mail"), multiple=True),
    Target("email:personal", _l("Personal email"), ("个人邮箱", "私人邮箱", "personal email"), multiple=True),
    Target("street", _l("Address"), ("地址", "详细地址", "街道", "address", "street")),
    Target("province", _l("Province"), ("省", "省份", "province", "state")),
    Target("city", _l("City"), ("市", "城市", "city")),
    Target("district", _l("District"), ("区", "区县", "district")),
    Target("postcode", _l("Postcode"), ("邮编", "邮政编码", "postcode", "postal code", "zip", "zip code")),
    Target("country", _l("Country"), ("国家", "国家/地区", "country")),
    Target("tags", _l("Tags"), ("标签", "tags", "tag"), multiple=True),
    Target("owner", _l("Owner"), ("负责人", "owner")),
]

TARGETS: dict[str, list[Target]] = {
    "contact": [
        Target("full_name", _l("Full name"), ("姓名", "name", "full name", "联系人", "联系人姓名")),
        Target("family_name", _l("Family name"), ("姓", "family name", "last name", "surname")),
        Target("given_name", _l("Given name"), ("名", "given name", "first name")),
        Target("name_en", _l("English name"), ("英文名", "英文名称", "english name")),
        Target("title", _l("Job title"), ("职位", "职务", "title", "job title")),
        Target("company", _l("Company"), ("公司", "公司名称", "company", "company name")),
        Target("role", _l("Role"), ("角色", "role")),
        *_SHARED,
    ],
    "company": [
        Target("name", _l("Company name"), ("公司名称", "名称", "公司", "name", "company name", "company")),
        Target("name_en", _l("English name"), ("英文名称", "英文名", "english name")),
        Target("legal_name", _l("Legal name"), ("法定名称", "legal name")),
        Target("industry", _l("Industry"), ("行业", "industry")),
        Target("employees", _l("Employees"), ("员工数", "人数", "员工人数", "employees")),
        Target("region", _l("Region"), ("地区", "区域", "region", "territory")),
        Target("website", _l("Website"), ("网站", "网址", "website")),
        Target("status", _l("Status"), ("状态", "status")),
        Target("parent", _l("Parent company"), ("上级公司", "母公司", "parent company", "parent")),
        *_SHARED,
    ],
}

STATUS_LABELS = {"prospect": _l("Prospect"), "customer": _l("Customer"), "partner": _l("Partner"),
                 "inactive": _l("Inactive")}
_STATUS_ALIASES = {"prospect": ("潜在客户", "潜客"), "customer": ("客户",), "partner": ("合作伙伴",),
                   "inactive": ("停用", "无效")}

_TEXT_COLUMNS = {
    "contact": {"full_name", "family_name", "given_name", "name_en", "title", "external_id"},
    "company": {"name", "name_en", "legal_name", "industry", "region", "website", "external_id"},
}
_ADDRESS_COLUMNS = ("street", "province", "city", "district", "postcode", "country")


def header_key(text: str) -> str:
    """How headers are compared: width, case, spaces, `_`/`-`, a trailing `*` or colon do not matter."""
    return re.sub(r"[\s_\-*:]+", "", normalize_name(text))


def _in_every_language(text) -> set[str]:
    """A lazy string rendered in each language of the deployment (so any exported file re-imports)."""
    if not has_app_context():
        return {str(text)}
    forms = set()
    for language in current_app.config.get("LANGUAGES") or {"en": {}}:
        with force_locale(language):
            forms.add(str(text))
    return forms


# -- reading files --------------------------------------------------------------------------------------

@dataclass
class Table:
    """An opened file: its header row and a stream of (row number, cells) for the rows below it."""

    headers: list[str]
    rows: Iterator[tuple[int, list[str]]]
    name: str

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        width = len(self.headers)
        for number, cells in self.rows:
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            yield number, dict(zip(self.headers, cells, strict=False))  # cells beyond the headers are left out


def read_table(path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, {header: text}) for each row below the header row of a CSV, XLSX or vCard file.

    The header row is row 1 of a CSV or XLSX file; a vCard file numbers its cards from 1. Rows are read
    one at a time. Raises ImportFileError at once when the file cannot be read.
    """
    return iter(open_table(path))


def open_table(path: str | Path) -> Table:
    """Open a CSV (UTF-8, UTF-8 with BOM, GBK/GB18030, UTF-16), XLSX or vCard file and read its header row."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise ImportFileError(gettext("Cannot open %(file)s: %(reason)s", file=path.name,
                                      reason=exc.strerror or exc)) from None
    suffix = path.suffix.lower()
    if head.startswith(b"PK\x03\x04") or suffix in {".xlsx", ".xlsm"}:
        table = _open_xlsx(path)
    elif suffix == ".vcf" or head.lstrip(codecs.BOM_UTF8).lstrip().upper().startswith(b"BEGIN:VCARD"):
        table = _open_vcard(path)
    elif suffix in {".csv", ".txt", ".tsv"}:
        table = _open_csv(path)
    else:
        raise ImportFileError(gettext("%(file)s is not a CSV, XLSX or vCard file.", file=path.name))
    return table


def _headers(cells: list[str]) -> list[str]:
    """Header texts, made unique: a repeated header gets ` (2)`, ` (3)`…; an empty one its position."""
    seen: dict[str, int] = {}
    headers = []
    for index, text in enumerate(cells, start=1):
        text = text.strip() or f"#{index}"
        count = seen.get(text, 0) + 1
        seen[text] = count
        headers.append(text if count == 1 else f"{text} ({count})")
    return headers


def _first_row(rows: Iterator[tuple[int, list[str]]], name: str) -> Table:
    for _number, cells in rows:
        if any(cells):  # blank rows above the header are skipped; row numbers stay those of the file
            return Table(_headers(cells), rows, name)
    raise ImportFileError(gettext("%(file)s has no header row.", file=name))


def _text_encoding(path: Path) -> str:
    """utf-8-sig or gb18030 (or utf-16 with its BOM), checked over the whole file in chunks."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in ("utf-8-sig", "gb18030"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    if b"\x00" in chunk:
                        raise ImportFileError(gettext("%(file)s is not a text file.", file=path.name))
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
    raise ImportFileError(gettext("%(file)s is neither UTF-8 nor GBK text.", file=path.name))


def _open_csv(path: Path) -> Table:
    encoding = _text_encoding(path)
    with path.open(encoding=encoding, newline="") as handle:
        first = next((line for line in handle if line.strip()), "")
    delimiter = max(",\t;", key=first.count) if first else ","

    def rows() -> Iterator[tuple[int, list[str]]]:
        with path.open(encoding=encoding, newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            number = 0
            try:
                for number, cells in enumerate(reader, start=1):
                    yield number, [cell.strip() for cell in cells]
            except csv.Error as exc:
                raise ImportFileError(gettext("%(file)s cannot be read at row %(row)s: %(reason)s",
                                              file=path.name, row=number + 1, reason=exc)) from None

    return _first_row(rows(), path.name)


def _cell_text(value: Any) -> str:
    """A spreadsheet value as the text a person would type: dates in ISO form, 12 not 12.0."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip()


def _open_xlsx(path: Path) -> Table:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception:  # openpyxl and zipfile raise many kinds of error for a damaged file
        raise ImportFileError(gettext("%(file)s is not a readable XLSX file.", file=path.name)) from None
    sheet = book.active if hasattr(book.active, "iter_rows") else next(iter(book.worksheets), None)
    if sheet is None:
        book.close()
        raise ImportFileError(gettext("%(file)s has no header row.", file=path.name))
    # Some programs write a wrong sheet size; forget it so that every row is read.
    sheet.reset_dimensions()

    def rows() -> Iterator[tuple[int, list[str]]]:
        number = 0
        try:
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                yield number, [_cell_text(value) for value in values]
        except ImportFileError:
            raise
        except Exception:
            raise ImportFileError(gettext("%(file)s is damaged at row %(row)s.", file=path.name,
                                          row=number + 1)) from None
        finally:
            book.close()

    try:
        return _first_row(rows(), path.name)
    except ImportFileError:
        book.close()
        raise


def _open_vcard(path: Path) -> Table:
    from .vcard import vcard_to_rows

    encoding = _text_encoding(path)
    try:
        cards = vcard_to_rows(path.read_text(encoding=encoding))
    except ValueError as exc:
        raise ImportFileError(gettext("%(file)s is not a readable vCard file: %(reason)s", file=path.name,
                                      reason=exc)) from None
    if not cards:
        raise ImportFileError(gettext("%(file)s has no contacts.", file=path.name))
    headers = list(dict.fromkeys(key for card in cards for key in card))
    rows = ((number, [card.get(key, "") for key in headers]) for number, card in enumerate(cards, start=1))
    return Table(headers, rows, path.name)


# -- column mapping -------------------------------------------------------------------------------------

def _aliases(session: Session, entity: str) -> dict[str, str]:
    """Normalized header → target for the entity: built-in spellings, exported headers, custom fields."""
    known: dict[str, str] = {}
    for field_ in custom_fields(session, entity):
        for text in (field_.key, field_.label, field_.label_en):
            if text:
                known[header_key(text)] = f"custom:{field_.key}"
        known[header_key(f"custom:{field_.key}")] = f"custom:{field_.key}"
    # Built-in columns win over a custom field that happens to share a label.
    for target in TARGETS[entity]:
        for text in (target.key, *target.aliases, *_in_every_language(target.header)):
            known[header_key(text)] = target.key
    return known


def detect_mapping(session: Session, entity: str, headers: list[str],
                   mapping: dict[str, str] | None = None) -> dict[str, str]:
    """Target of every header: a field key, `custom:<key>`, or `ignore` for columns not understood.

    `mapping` ({header: target}) overrides the detection; a target is a field key (`full_name`,
    `phone:mobile`…), `custom:<key>`, `ignore`, or any header spelling the importer knows.
    """
    known = _aliases(session, entity)
    targets = {target.key: target for target in TARGETS[entity]}
    custom_keys = {value for value in known.values() if value.startswith("custom:")}
    by_key = {header_key(header): header for header in headers}
    columns: dict[str, str] = {}
    for header in headers:
        key = header_key(header)
        columns[header] = known.get(key) or known.get(re.sub(r"\(\d+\)$", "", key)) or "ignore"
    for header, wanted in (mapping or {}).items():
        actual = header if header in columns else by_key.get(header_key(header))
        if actual is None:
            raise ImportFileError(gettext("The mapping names a column the file does not have: %(column)s",
                                          column=header))
        target = wanted.strip()
        if target != "ignore" and target not in targets and target not in custom_keys:
            target = known.get(header_key(target), "")
            if not target:
                raise ImportFileError(gettext("Unknown target %(target)s for column %(column)s.",
                                              target=wanted, column=header))
        columns[actual] = target
    used: dict[str, str] = {}
    for header, target in columns.items():
        if target == "ignore" or (target in targets and targets[target].multiple):
            continue
        if target in used:
            raise ImportFileError(gettext(
                "Columns %(first)s and %(second)s both hold %(target)s; map one of them to ignore.",
                first=used[target], second=header, target=target))
        used[target] = header
    return columns


# -- results --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowError:
    """One refused value: row number in the file, column header, the value, and why."""

    row: int
    column: str
    value: str
    message: str


@dataclass
class ImportResult:
    """What an import did (or, for a dry run, would do)."""

    created: int = 0
    updated: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False


def write_error_report(errors: Iterable[RowError], path: str | Path) -> None:
    """CSV of the refused values (UTF-8 with BOM, so that Excel shows Chinese): row, column, value, message."""
    with Path(path).open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([gettext("row"), gettext("column"), gettext("value"), gettext("message")])
        for error in errors:
            writer.writerow([error.row, error.column, error.value, error.message])


# -- values ---------------------------------------------------------------------------------------------

@cache
def _countries() -> dict[str, str]:
    from babel import Locale

    names: dict[str, str] = {}
    for language in ("en", "zh", "zh_Hant"):
        for code, name in Locale.parse(language).territories.items():
            if len(code) == 2 and code.isalpha():
                names.setdefault(normalize_name(name), code)
    for code in list(names.values()):
        names.setdefault(code.casefold(), code)
    names.update({"中华人民共和国": "CN", "中国大陆": "CN", "prc": "CN", "香港": "HK", "澳门": "MO", "台湾": "TW",
                  "uk": "GB", "usa": "US", "美国": "US"})
    return names


def _statuses() -> dict[str, str]:
    statuses: dict[str, str] = {}
    for code in COMPANY_STATUSES:
        for text in (code, *_STATUS_ALIASES.get(code, ()), *_in_every_language(STATUS_LABELS[code])):
            statuses[normalize_name(text)] = code
    return statuses


def _length(model, column: str) -> int | None:
    return getattr(model.__table__.c[column].type, "length", None)


@dataclass
class _Row:
    """One data row, parsed: values by target, problems found so far, and what became of it."""

    number: int
    cells: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    phones: list[tuple[str, str, str, str]] = field(default_factory=list)  # kind, raw, e164, header
    emails: list[tuple[str, str]] = field(default_factory=list)  # kind, address
    tags: list[str] = field(default_factory=list)
    custom: dict[str, str] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    pinyin: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # of its Chinese names
    settled: int = 0  # errors found before matching; the rest are found again when a batch is replayed

    def refuse(self, column: str, value: str, message: str) -> None:
        self.errors.append(RowError(self.number, column, value, message))


@dataclass
class _NewLink:
    """A new contact's link to a company (an id, or a Company made in the same batch)."""

    company: Company | int
    role_id: int | None
    is_primary: bool

    @property
    def company_id(self) -> int | None:
        return self.company if isinstance(self.company, int) else self.company.id


@dataclass
class _NewContact:
    """A contact the batch creates; written with one INSERT per table for the whole batch.

    It has the attributes of a Contact that the importer fills, so the same code fills both.
    """

    owner_id: int | None
    full_name: str | None = None
    family_name: str | None = None
    given_name: str | None = None
    name_en: str | None = None
    title: str | None = None
    external_id: str | None = None
    custom: dict = field(default_factory=dict)
    phones: list[SimpleNamespace] = field(default_factory=list)
    emails: list[SimpleNamespace] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)
    addresses: list[SimpleNamespace] = field(default_factory=list)
    links: list[_NewLink] = field(default_factory=list)


def _detail(record: Any, model: type, **values: Any) -> Any:
    """A phone, e-mail or address for the record: a mapped object, or plain values for a _NewContact."""
    return SimpleNamespace(**values) if isinstance(record, _NewContact) else model(**values)


def _insert_contacts(session: Session, contacts: list[_NewContact]) -> None:
    """Write new contacts and their details set-based (the ORM would take several times longer).

    The flush listener does not see these rows, so the names and search text it would derive are
    derived here with the same functions; phones and e-mails were already normalized when parsed.
    """
    if not contacts:
        return
    now = utcnow()
    rows = []
    for contact in contacts:
        complete_contact_name(contact)
        pinyin, initials = name_keys(contact.full_name)
        rows.append({"pinyin": pinyin, "initials": initials, "full_name": contact.full_name,
                     "family_name": contact.family_name, "given_name": contact.given_name, "name_en": contact.name_en, "title": contact.title,
                     "external_id": contact.external_id, "owner_id": contact.owner_id, "custom": contact.custom,
                     "search_text": search_text(contact.full_name, contact.name_en), "created_at": now,
                     "updated_at": now, "version": 1})
    table = Contact.__table__
    if session.get_bind().dialect.name == "postgresql":
        ids = reserve_ids(session, table, len(rows))
        insert_rows(session, table, [{"id": contact_id, **row} for contact_id, row in zip(ids, rows, strict=True)])
    else:
        ids = _inserted_ids(session, table, rows)
    details: dict[Any, list[dict]] = {Phone: [], Email: [], Address: []}
    links, tags = [], []
    for contact_id, contact in zip(ids, contacts, strict=True):
        for phone in contact.phones:
            details[Phone].append({"contact_id": contact_id, "kind": phone.kind, "raw": phone.raw, "e164": phone.e164,
                                   "is_primary": phone.is_primary})
        for email in contact.emails:
            details[Email].append({"contact_id": contact_id, "kind": email.kind, "address": email.address,
                                   "is_primary": email.is_primary})
        for address in contact.addresses:
            details[Address].append({"contact_id": contact_id, "kind": address.kind, "is_primary": address.is_primary,
                                     **{key: getattr(address, key) for key in _ADDRESS_COLUMNS}})
        links += [{"contact_id": contact_id, "company_id": link.company_id, "role_id": link.role_id,
                   "is_primary": link.is_primary} for link in contact.links]
        tags += [{"contact_id": contact_id, "tag_id": tag.id} for tag in contact.tags]
    for model, values in details.items():
        insert_rows(session, model, values)
    insert_rows(session, ContactCompany, links)
    insert_rows(session, contact_tag, tags)
    for contact_id, contact in zip(ids, contacts, strict=True):
        emit(session, "crm_contact_created", {"id": contact_id, "name": contact.full_name,
                                              "owner_id": contact.owner_id, "team_id": None,
                                              "external_id": contact.external_id})


class _Statistics:
    """PostgreSQL: the planner's statistics of the tables an import fills, refreshed (ANALYZE) each time the
    import has written as many records as the table was known to hold. Matching a batch against the records
    already there reads indexes only while the planner knows the tables' size; a database where autovacuum
    has not caught up (or is off) would otherwise have every batch read whole tables."""

    TABLES = {"contact": "crm_contact, crm_phone, crm_email, crm_address, crm_contact_company, crm_company",
              "company": "crm_company, crm_phone, crm_email, crm_address"}

    def __init__(self, session: Session, entity: str) -> None:
        self.session, self.entity = session, entity
        self.enabled = session.get_bind().dialect.name == "postgresql"
        self.since, self.known = 0, self._known() if self.enabled else 0

    def _known(self) -> float:
        main = "crm_contact" if self.entity == "contact" else "crm_company"
        return max(self.session.scalar(sql("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                                       {"t": main}) or 0, 0)

    def written(self, done: int) -> None:
        if self.enabled and done - self.since >= max(BATCH_SIZE, self.known):
            self.session.execute(sql(f"ANALYZE {self.TABLES[self.entity]}"))
            self.since, self.known = done, self._known()
            self.session.commit()


def _inserted_ids(session: Session, table, rows: list[dict]) -> list[int]:
    """SQLite: insert the contacts in one go and read their ids back. Each new row's id is one above the
    highest, and no other connection writes while this transaction holds the write lock, so the new ids are
    the last len(rows) ones; they are checked against the names written. (An INSERT … RETURNING of many rows
    that keeps their order runs them one at a time on SQLite.)"""
    session.execute(insert(table), rows)
    first = session.scalar(select(func.max(table.c.id))) - len(rows) + 1
    written = session.execute(select(table.c.id, table.c.full_name).where(table.c.id >= first)
                              .order_by(table.c.id)).all()
    if [name for _id, name in written] != [row["full_name"] for row in rows]:
        raise RuntimeError("the contacts just written are not the last ones in the table")
    return [contact_id for contact_id, _name in written]


class _Importer:
    """Parses, matches and writes rows of one file for one entity."""

    def __init__(self, session: Session, entity: str, columns: dict[str, str], owner_id: int | None,
                 user=None):
        self.session = session
        # a user importing on the screen only updates records they may see (None: the CLI sees all)
        self.scope = visibility_clause(Contact if entity == "contact" else Company, user, session) \
            if user is not None else None
        self.entity = entity
        self.model = Contact if entity == "contact" else Company
        self.columns = {header: target for header, target in columns.items() if target != "ignore"}
        self.headers_of: dict[str, list[str]] = {}
        for header, target in self.columns.items():
            self.headers_of.setdefault(target, []).append(header)
        self.owner_id = owner_id
        self.fields = {f.key: f for f in custom_fields(session, entity)}
        self.statuses = _statuses() if "status" in self.headers_of else {}
        self.roles: dict[str, int] = {}
        if "role" in self.headers_of:
            for role in session.scalars(select(ContactRole)):
                for text in (role.code, role.name, role.name_en):
                    if text:
                        self.roles.setdefault(normalize_name(text), role.id)
        self.users: dict[str, int | None] = {}
        self._companies: dict[str, int | Company] | None = None
        self._batch_companies: list[str] = []
        self._new_contacts: list[_NewContact] = []

    # -- parsing ------------------------------------------------------------------------------------

    def parse(self, number: int, cells: dict[str, str]) -> _Row:
        row = _Row(number, cells)
        for header, target in self.columns.items():
            raw = _ESCAPED.sub("", cells.get(header, "").strip())
            if raw:
                self._parse_value(row, header, target, raw)
        values = row.values
        if self.model is Contact:
            names = (values.get("full_name") or display_name(values.get("family_name"), values.get("given_name")),
                     values.get("name_en"), values.get("company"))
        else:
            names = (values.get("name"), values.get("name_en"), values.get("legal_name"), values.get("parent"))
        row.pinyin = pinyin_of(names)
        return row

    def _parse_value(self, row: _Row, header: str, target: str, raw: str) -> None:
        kind, _, sub = target.partition(":")
        if kind == "phone":
            for part in _SPLIT.split(raw):
                if not part.strip():
                    continue
                try:
                    text, e164 = clean_phone(part, header)
                except CrmValidationError as exc:
                    row.refuse(header, part.strip(), exc.problems[0].message)
                    continue
                if len(text) > _PHONE_LENGTH:
                    row.refuse(header, text, gettext("is longer than %(count)s characters", count=_PHONE_LENGTH))
                    continue
                if all(e164 != known[2] for known in row.phones):
                    row.phones.append((sub or _phone_kind(e164), text, e164, header))
        elif kind == "email":
            for part in _SPLIT.split(raw):
                if not part.strip():
                    continue
                try:
                    address = clean_email(part, header)
                except CrmValidationError as exc:
                    row.refuse(header, part.strip(), exc.problems[0].message)
                    continue
                if all(address != known[1] for known in row.emails):
                    row.emails.append((sub or "work", address))
        elif target == "tags":
            for name in _SPLIT.split(raw):
                name = name.strip()
                if len(name) > 100:
                    row.refuse(header, name, gettext("is longer than %(count)s characters", count=100))
                elif name and name not in row.tags:
                    row.tags.append(name)
        elif kind == "custom":
            row.custom[sub] = raw
        elif target == "employees":
            try:
                count = int(float(raw.replace(",", "")))
                if not 0 <= count < 2**31:
                    raise ValueError
            except ValueError:
                row.refuse(header, raw, gettext("%(value)s is not a number of employees", value=raw))
            else:
                row.values[target] = count
        elif target == "status":
            code = self.statuses.get(normalize_name(raw))
            if code is None:
                choices = ", ".join(str(STATUS_LABELS[c]) for c in COMPANY_STATUSES)
                row.refuse(header, raw, gettext("%(value)s is not a status (one of: %(choices)s)", value=raw,
                                                choices=choices))
            else:
                row.values[target] = code
        elif target == "country":
            code = _countries().get(normalize_name(raw))
            if code is None:
                row.refuse(header, raw, gettext("%(value)s is not a country", value=raw))
            else:
                row.values[target] = code
        elif target == "role":
            role_id = self.roles.get(normalize_name(raw))
            if role_id is None:
                row.refuse(header, raw, gettext("%(value)s is not a contact role", value=raw))
            else:
                row.values[target] = role_id
        else:
            model = Address if target in _ADDRESS_COLUMNS else self.model
            limit = _length(model, target) if target not in {"company", "parent", "owner"} else 200
            if limit and len(raw) > limit:
                row.refuse(header, raw, gettext("is longer than %(count)s characters", count=limit))
            else:
                row.values[target] = raw

    # -- lookups ------------------------------------------------------------------------------------

    def prepare(self, rows: list[_Row]) -> None:
        """Resolve what does not depend on the database state the batch creates (owners by username)."""
        self._resolve_owners(rows)
        for row in rows:
            row.settled = len(row.errors)
            learn_pinyin(row.pinyin)

    def _resolve_owners(self, rows: list[_Row]) -> None:
        wanted = {row.values["owner"] for row in rows if "owner" in row.values} - set(self.users)
        if wanted:
            found = dict(self.session.execute(select(User.username, User.id).where(User.username.in_(wanted))).all())
            for name in wanted:
                self.users[name] = found.get(name)
        for row in rows:
            name = row.values.pop("owner", None)
            if name is None:
                continue
            if self.users.get(name) is None:
                row.refuse(self.headers_of["owner"][0], name, gettext("there is no user %(name)s", name=name))
            else:
                row.values["owner_id"] = self.users[name]

    def _company_cache(self) -> dict[str, int | Company]:
        if self._companies is None:
            self._companies = {}
            query = select(Company.id, Company.name).where(Company.merged_into_id.is_(None)).order_by(Company.id)
            for company_id, name in self.session.execute(query):
                self._companies.setdefault(normalize_name(name), company_id)
        return self._companies

    def _company(self, name: str) -> Company | int:
        """The company of that name (id when stored, object when new in this batch); made when missing."""
        cache_ = self._company_cache()
        key = normalize_name(name)
        found = cache_.get(key)
        if found is None:
            found = Company(name=name, owner_id=self.owner_id)
            self.session.add(found)
            self._remember_company(key, found)
        return found

    def _remember_company(self, key: str, company: Company | int) -> None:
        self._company_cache()[key] = company
        self._batch_companies.append(key)

    def flush(self) -> None:
        """Send the batch to the database: the ORM's changes, then the new contacts set-based."""
        new, self._new_contacts = self._new_contacts, []
        self.session.flush()
        _insert_contacts(self.session, new)

    def batch_done(self) -> None:
        """After a successful flush: keep ids, not objects, for companies made in the batch."""
        cache_ = self._company_cache() if self._batch_companies else {}
        for key in self._batch_companies:
            value = cache_.get(key)
            if isinstance(value, Company):
                cache_[key] = value.id
        self._batch_companies.clear()

    def batch_failed(self) -> None:
        """After a rolled-back batch: forget the records that were made in it."""
        self._new_contacts = []
        cache_ = self._companies or {}
        for key in self._batch_companies:
            value = cache_.get(key)
            if isinstance(value, Company) and value.id is None:
                cache_.pop(key, None)
        self._batch_companies.clear()

    def _tags(self, rows: list[_Row]) -> dict[str, Tag]:
        names = {name for row in rows for name in row.tags}
        if not names:
            return {}
        return {tag.name: tag for tag in self.session.scalars(select(Tag).where(Tag.name.in_(names)))}

    def _candidates(self, rows: list[_Row]) -> tuple[dict, dict[str, int], dict[str, int], dict[int, Any]]:
        """Existing records the rows may match: by external id, e-mail and phone, loaded with their details."""
        model = self.model
        ext_ids = {row.values["external_id"] for row in rows if "external_id" in row.values}
        by_ext: dict[str, int | None] = {}  # None: the id belongs to a merged record
        if ext_ids:
            query = select(model.id, model.external_id, model.merged_into_id).where(model.external_id.in_(ext_ids))
            for record_id, ext, merged in self.session.execute(query):
                by_ext[ext] = None if merged else record_id
        # E-mails and phones are looked up alone (a join with the merge column can make SQLite scan every
        # contact); merged contacts are left out once loaded.
        email_hits: list[tuple[str, int]] = []
        phone_hits: list[tuple[str, int]] = []
        names: set[int] = set()
        if model is Contact:
            emails = {address for row in rows for _kind, address in row.emails}
            if emails:
                email_hits = list(self.session.execute(select(Email.address, Email.contact_id).where(
                    in_ids(self.session, Email.address, emails), Email.contact_id.is_not(None))).tuples())
            phones = {phone[2] for row in rows for phone in row.phones}
            if phones:
                phone_hits = list(self.session.execute(select(Phone.e164, Phone.contact_id).where(
                    in_ids(self.session, Phone.e164, phones), Phone.contact_id.is_not(None))).tuples())
        else:
            cache_ = self._company_cache()
            names = {v for row in rows if "name" in row.values
                     if isinstance(v := cache_.get(normalize_name(row.values["name"])), int)}
        ids = {i for i in by_ext.values() if i} | {i for _, i in email_hits} | {i for _, i in phone_hits} | names
        records: dict[int, Any] = {}
        if ids:
            query = select(model).where(model.id.in_(ids)).options(*self._details_needed())
            if self.scope is not None:
                query = query.where(self.scope)
            records = {r.id: r for r in self.session.scalars(query) if r.merged_into_id is None}
        by_email: dict[str, int] = {}
        by_phone: dict[str, int] = {}
        for hits, found in ((email_hits, by_email), (phone_hits, by_phone)):
            for key, record_id in sorted(hits, key=lambda hit: hit[1]):  # the oldest record wins
                if record_id in records:
                    found.setdefault(key, record_id)
        return by_ext, by_email, by_phone, records

    def _details_needed(self) -> list:
        """Load options for the details the file's columns can change (phones only if it has a phone column…)."""
        targets = {target.partition(":")[0] for target in self.headers_of}
        wanted = [("phone", self.model.phones), ("email", self.model.emails), ("tags", self.model.tags)]
        options = [selectinload(relation) for key, relation in wanted if key in targets]
        if targets & set(_ADDRESS_COLUMNS):
            options.append(selectinload(self.model.addresses))
        if self.model is Contact and targets & {"company", "role"}:
            options.append(selectinload(Contact.links))
        return options

    # -- writing ------------------------------------------------------------------------------------

    def apply(self, rows: list[_Row]) -> list[tuple[_Row, str]]:
        """Match, validate and write (unflushed) each row; returns (row, "created"|"updated"|"rejected")."""
        outcomes: list[tuple[_Row, str]] = []
        with self.session.no_autoflush:
            by_ext, by_email, by_phone, records = self._candidates(rows)
            tags = self._tags(rows)
            new_keys: dict[str, Any] = {}  # keys of records written earlier in this batch
            for row in rows:
                del row.errors[row.settled:]
                record = self._match(row, by_ext, by_email, by_phone, records, new_keys)
                creating = record is None
                cleaned = self._check(row, record, by_ext)
                if row.errors:
                    outcomes.append((row, "rejected"))
                    continue
                if creating and self.model is Contact:
                    record = _NewContact(owner_id=self.owner_id)
                    self._new_contacts.append(record)
                elif creating:
                    record = Company(owner_id=self.owner_id, custom={})
                    self.session.add(record)
                if self.model is Contact:
                    self._fill_contact(record, row, creating)
                else:
                    self._fill_company(record, row, creating)
                self._fill_details(record, row, cleaned, tags)
                self._remember(record, row, new_keys)
                outcomes.append((row, "created" if creating else "updated"))
        return outcomes

    def _match(self, row: _Row, by_ext, by_email, by_phone, records, new_keys):
        keys = []
        if "external_id" in row.values:
            keys.append(("ext", row.values["external_id"], by_ext))
        if self.model is Contact:
            keys += [("email", address, by_email) for _kind, address in row.emails]
            keys += [("phone", phone[2], by_phone) for phone in row.phones]
        elif "name" in row.values:
            keys.append(("name", normalize_name(row.values["name"]), None))
        for kind, value, stored in keys:
            if (kind, value) in new_keys:
                return new_keys[(kind, value)]
            if kind == "name":
                found = self._company_cache().get(value)
                if isinstance(found, Company):
                    return found
                if found in records:
                    return records[found]
            elif stored.get(value) in records:
                return records[stored[value]]
        return None

    def _remember(self, record, row: _Row, new_keys: dict) -> None:
        if "external_id" in row.values:
            new_keys[("ext", row.values["external_id"])] = record
        for _kind, address in row.emails:
            new_keys.setdefault(("email", address), record)
        for phone in row.phones:
            new_keys.setdefault(("phone", phone[2]), record)

    def _check(self, row: _Row, record, by_ext: dict) -> dict:
        """Problems that depend on the record the row updates (None: it creates one); returns custom values."""
        creating = record is None
        ext = row.values.get("external_id")
        if ext is not None and ext in by_ext and by_ext[ext] is None:
            row.refuse(self.headers_of["external_id"][0], ext,
                       gettext("this external id belongs to a record that was merged into another"))
        if creating:
            if self.model is Contact and not any(row.values.get(k) for k in ("full_name", "family_name", "given_name")):
                header = next((self.headers_of[k][0] for k in ("full_name", "family_name", "given_name")
                               if k in self.headers_of), str(TARGETS["contact"][0].header))
                row.refuse(header, "", gettext("a name is required (full name, or family and given name)"))
            if self.model is Company and not row.values.get("name"):
                header = self.headers_of.get("name", [str(TARGETS["company"][0].header)])[0]
                row.refuse(header, "", gettext("a company name is required"))
        if self.model is Contact and "role" in row.values and "company" not in row.values \
                and (creating or not record.links):
            row.refuse(self.headers_of["role"][0], "", gettext("a role needs a company in the same row"))
        if self.model is Company and "parent" in row.values and "name" in row.values \
                and normalize_name(row.values["parent"]) == normalize_name(row.values["name"]):
            row.refuse(self.headers_of["parent"][0], row.values["parent"],
                       gettext("a company cannot be its own parent"))
        cleaned: dict = {}
        if self.fields and (row.custom or creating):
            try:
                cleaned = clean_custom(self.session, self.entity, row.custom, partial=not creating)
            except CrmValidationError as exc:
                labels = {field_label(f): key for key, f in self.fields.items()}
                for problem in exc.problems:
                    key = labels.get(problem.field, problem.field)
                    header = self.headers_of.get(f"custom:{key}", [problem.field])[0]
                    row.refuse(header, row.custom.get(key, ""), problem.message)
        return cleaned

    def _fill_contact(self, contact: Contact | _NewContact, row: _Row, creating: bool) -> None:
        values = row.values
        names = {k: values[k] for k in ("full_name", "family_name", "given_name") if k in values}
        if not creating and "full_name" in names and names["full_name"] != contact.full_name \
                and "family_name" not in names and "given_name" not in names:
            contact.family_name = contact.given_name = None  # derived again from the new full name
        for key in ("family_name", "given_name", "full_name", "name_en", "title", "external_id"):
            if key in values:
                _set(contact, key, values[key])
        if not creating and "full_name" not in names and names:
            contact.full_name = ""
            complete_contact_name(contact)
        if "company" in values:
            self._link(contact, self._company(values["company"]), values.get("role"))
        elif "role" in values:  # _check made sure the contact has a company
            primary = next((link for link in contact.links if link.is_primary), contact.links[0])
            _set(primary, "role_id", values["role"])

    def _link(self, contact: Contact | _NewContact, company: Company | int, role_id: int | None) -> None:
        company_id = company if isinstance(company, int) else company.id
        for link in contact.links:
            # A stored link is compared by id, so that its company is not loaded.
            same = link.company_id == company_id if link.company_id is not None else link.company is company
            if same:
                if role_id is not None:
                    _set(link, "role_id", role_id)
                return
        primary = not any(link.is_primary for link in contact.links)
        if isinstance(contact, _NewContact):
            contact.links.append(_NewLink(company, role_id, primary))
            return
        link = ContactCompany(role_id=role_id, is_primary=primary)
        if isinstance(company, Company):
            link.company = company
        else:
            link.company_id = company
        contact.links.append(link)

    def _fill_company(self, company: Company, row: _Row, creating: bool) -> None:
        values = row.values
        if "name" in values:
            key = normalize_name(values["name"])
            if not creating and normalize_name(company.name) != key and \
                    self._company_cache().get(normalize_name(company.name)) == company.id:
                self._company_cache().pop(normalize_name(company.name))
            _set(company, "name", values["name"])
            if self._company_cache().get(key) is None:
                self._remember_company(key, company if company.id is None else company.id)
        for key in ("name_en", "legal_name", "industry", "employees", "region", "website", "status", "external_id"):
            if key in values:
                _set(company, key, values[key])
        if "parent" in values:
            parent = self._company(values["parent"])
            if isinstance(parent, Company):
                company.parent = parent
            else:
                _set(company, "parent_id", parent)

    def _fill_details(self, record, row: _Row, custom: dict, tags: dict[str, Tag]) -> None:
        values = row.values
        if "owner_id" in values:
            _set(record, "owner_id", values["owner_id"])
        if custom:
            _set(record, "custom", {**(record.custom or {}), **custom})
        known_phones = {phone.e164 for phone in record.phones} if row.phones else set()
        for kind, raw, e164, _header in row.phones:
            if e164 not in known_phones:
                record.phones.append(_detail(record, Phone, kind=kind, raw=raw, e164=e164,
                                             is_primary=not record.phones))
                known_phones.add(e164)
        known_emails = {email.address for email in record.emails} if row.emails else set()
        for kind, address in row.emails:
            if address not in known_emails:
                record.emails.append(_detail(record, Email, kind=kind, address=address, is_primary=not record.emails))
                known_emails.add(address)
        known_tags = {tag.name for tag in record.tags} if row.tags else set()
        for name in row.tags:
            if name not in known_tags:
                tag = tags.get(name)
                if tag is None:
                    tag = tags[name] = Tag(name=name)
                    self.session.add(tag)
                record.tags.append(tag)
                known_tags.add(name)
        address = {key: values[key] for key in _ADDRESS_COLUMNS if key in values}
        if address:
            current = next((a for a in record.addresses if a.is_primary), None) or next(iter(record.addresses), None)
            if current is None:
                current = _detail(record, Address, kind="office", is_primary=True,
                                  **dict.fromkeys(_ADDRESS_COLUMNS))
                record.addresses.append(current)
            for key, value in address.items():
                _set(current, key, value)


def _set(record, key: str, value) -> None:
    """Set a value only when it differs: a record the file leaves as it was is not written, audited or
    announced again (re-importing an unchanged file writes nothing)."""
    if getattr(record, key) != value:
        setattr(record, key, value)


def _phone_kind(e164: str) -> str:
    """Mobile or work, from the number itself (for a column that does not say)."""
    number = phonenumbers.parse(e164)
    mobile = phonenumbers.number_type(number) in {phonenumbers.PhoneNumberType.MOBILE,
                                                   phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
    return "mobile" if mobile else "work"


# -- the import -----------------------------------------------------------------------------------------

_REFUSED = (IntegrityError, DataError, StaleDataError, CrmValidationError)


def _begin(session: Session) -> None:
    """Make SQLite open a real transaction, so that releasing a SAVEPOINT does not commit it."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        raw = connection.connection.driver_connection
        if not getattr(raw, "in_transaction", True):
            raw.execute("BEGIN")


def _database_problem(row: _Row, importer: _Importer, exc: Exception) -> None:
    if isinstance(exc, CrmValidationError):
        for problem in exc.problems:
            header = importer.headers_of.get(problem.field, [problem.field])[0]
            row.refuse(header, row.cells.get(header, ""), problem.message)
        return
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    row.refuse("", "", gettext("the database refused this row: %(reason)s", reason=reason))


def _write(session: Session, importer: _Importer, rows: list[_Row]) -> list[tuple[_Row, str]]:
    """Write a batch in one SAVEPOINT; if the database refuses it, again row by row to find the culprits."""
    _begin(session)
    try:
        with session.begin_nested():
            outcomes = importer.apply(rows)
            importer.flush()
        importer.batch_done()
        return outcomes
    except _REFUSED:
        importer.batch_failed()
    outcomes = []
    for row in rows:
        try:
            with session.begin_nested():
                outcome = importer.apply([row])
                importer.flush()
            importer.batch_done()
        except _REFUSED as exc:
            importer.batch_failed()
            _database_problem(row, importer, exc)
            outcome = [(row, "rejected")]
        outcomes.extend(outcome)
    return outcomes


def _batches(importer: _Importer, table: Table) -> Iterator[list[_Row]]:
    """The file's non-empty rows, parsed, in batches of BATCH_SIZE."""
    rows = (importer.parse(number, cells) for number, cells in table if any(cells.values()))
    while batch := list(itertools.islice(rows, BATCH_SIZE)):
        yield batch


class ImportInterrupted(BigLedgerError):
    """The process reading the file stopped before the end of the file (killed, or a fault of the program);
    the batches written before stay written. The reading process's traceback, if any, is logged."""

    @classmethod
    def ended(cls, code: int | None) -> ImportInterrupted:
        return cls(gettext("The process reading the file stopped (exit code %(code)s) before the end of the file. "
                           "The rows written before stay imported; import the file again to finish (it updates "
                           "what is already there).", code=code))


def _read(importer: _Importer, table: Table, sender) -> None:
    """In the reading process: send each batch, then None (or the error that stopped it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the writing process's to handle
    try:
        for batch in _batches(importer, table):
            sender.send(batch)
        sender.send(None)
    except ImportFileError as exc:
        sender.send(exc)
    except Exception as exc:  # a fault of the program: the writing process logs where it happened
        failure = ImportInterrupted(gettext("Reading the file failed: %(reason)s", reason=exc))
        failure.details = traceback.format_exc()
        sender.send(failure)


def _read_elsewhere(importer: _Importer, table: Table) -> Iterator[list[_Row]]:
    """The same batches as `_batches`, read and checked by a forked process while this one writes the batch
    before. Parsing (phone numbers, e-mail addresses, names) takes about half as long as writing, so on a
    machine with two cores or more an import takes little more than the time of the writing alone. The
    reader waits while a batch is in the pipe, so memory does not grow with the file."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    reader = context.Process(target=_read, args=(importer, table, sender), name="bigledger-import-reader",
                             daemon=True)
    reader.start()
    sender.close()  # the reader holds the only writing end: if it dies, reading ends instead of waiting
    try:
        while True:
            while not receiver.poll(1):
                if not reader.is_alive() and not receiver.poll(0):
                    raise ImportInterrupted.ended(reader.exitcode)
            try:
                item = receiver.recv()
            except EOFError:
                reader.join()
                raise ImportInterrupted.ended(reader.exitcode) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                if getattr(item, "details", None):
                    log.error("the process reading the import file failed:\n%s", item.details)
                raise item
            yield item
    finally:
        receiver.close()
        if reader.is_alive():
            reader.terminate()
        reader.join()


def import_records(session: Session, entity: str, path: str | Path, *, mapping: dict[str, str] | None = None,
                   dry_run: bool = False, owner_id: int | None = None,
                   progress: Callable[[int], None] | None = None, user=None,
                   read_ahead: bool = False) -> ImportResult:
    """Import contacts or companies from a file; valid rows are written, every refused value is reported.

    Commits every 500 rows (a dry run writes inside one transaction and rolls it back). `owner_id` owns
    the records created when the file has no owner column; with `user`, only records that user may see
    are matched and updated. `progress(rows_done)` is called after each batch. With `read_ahead` (for a
    command, not a web worker), a forked process reads and checks the next rows while this one writes.
    Raises ImportFileError, before writing anything, when the file cannot be opened or its columns cannot
    be mapped; damage found further down a file stops the import there (ImportInterrupted: the reading
    process stopped).
    """
    if entity not in ENTITIES:
        raise ValueError(f"entity must be one of {ENTITIES}, not {entity!r}")
    table = open_table(path)
    columns = detect_mapping(session, entity, table.headers, mapping)
    importer = _Importer(session, entity, columns, owner_id, user)
    result = ImportResult(dry_run=dry_run,
                          ignored_columns=[header for header, target in columns.items() if target == "ignore"])
    done = 0
    statistics = _Statistics(session, entity) if not dry_run else None
    batches = _read_elsewhere(importer, table) if read_ahead else _batches(importer, table)
    try:
        for batch in batches:
            importer.prepare(batch)
            for row, outcome in _write(session, importer, batch):
                if outcome == "rejected":
                    result.rejected += 1
                    result.errors.extend(row.errors)
                elif outcome == "created":
                    result.created += 1
                else:
                    result.updated += 1
            if not dry_run:
                session.commit()
            done += len(batch)
            if statistics is not None:
                statistics.written(done)
            if progress is not None:
                progress(done)
    except BaseException:
        session.rollback()
        raise
    finally:
        batches.close()
    if dry_run:
        session.rollback()
    return result
