"""Commands of the POS bridge: record a sale (validate, match the customer, store it once) and import sales.

The REST API, the CSV import and the demo all call `record_sale`; nothing else writes sales.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import current_app, has_app_context
from flask_babel import gettext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bigledger_core.errors import BigLedgerError
from bigledger_core.modules import ask_service
from bigledger_core.normalize import InvalidValue, normalize_email, parse_phone

from .models import LoyaltyCard, PosSale, PosSaleLine

MAX_LINES = 500
MAX_TEXT = {"receipt": 64, "store": 50, "card": 40, "name": 200, "tier": 40, "sku": 64}
MAX_AMOUNT = Decimal("999999999999.99")
MAX_QUANTITY = Decimal("999999999.999")
CSV_COLUMNS = ("receipt", "store", "sold_at", "total", "currency", "card", "phone", "email", "name", "tier",
               "points")
CSV_REQUIRED = ("receipt", "store", "sold_at", "total")


@dataclass(frozen=True)
class Problem:
    """One refused value: the field (e.g. `lines[2].quantity`) and why, translated."""

    field: str
    message: str


class SaleError(BigLedgerError):
    """A sale that cannot be recorded; `problems` name each bad field."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


class SaleConflict(BigLedgerError):
    """The store's receipt is already recorded with another total or currency."""


@dataclass
class SaleInput:
    """A validated sale, ready to store."""

    receipt: str
    store: str
    sold_at: dt.datetime
    total: Decimal
    currency: str
    lines: list[dict] = field(default_factory=list)
    card: str | None = None
    phone: str | None = None
    email: str | None = None
    name: str | None = None
    tier: str | None = None
    points: int | None = None


@dataclass(frozen=True)
class SaleResult:
    """What happened to a posted sale: `created` False when the receipt was already recorded."""

    sale_id: int
    contact_id: int | None
    matched_by: str | None
    created: bool


def _setting(name: str, default: Any) -> Any:
    return current_app.config.get(name, default) if has_app_context() else default


def default_currency() -> str:
    """The currency of a sale that names none (BIGLEDGER_POS_CURRENCY)."""
    return str(_setting("BIGLEDGER_POS_CURRENCY", "CNY")).upper()


# -- validation ----------------------------------------------------------------------------------------

def _text(data: dict, key: str, problems: list[Problem], where: str = "", required: bool = False) -> str | None:
    value = data.get(key)
    name = f"{where}{key}"
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.append(Problem(name, gettext("is required")))
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.append(Problem(name, gettext("must be text")))
        return None
    text = str(value).strip()
    if len(text) > MAX_TEXT.get(key, 200):
        problems.append(Problem(name, gettext("at most %(count)s characters", count=MAX_TEXT.get(key, 200))))
        return None
    return text


def _decimal(value: Any, name: str, problems: list[Problem], *, places: int, limit: Decimal,
             required: bool = True) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.append(Problem(name, gettext("is required")))
        return None
    if isinstance(value, bool):
        problems.append(Problem(name, gettext("%(value)s is not an amount", value=value)))
        return None
    try:
        number = Decimal(str(value).replace(",", "").strip())
    except InvalidOperation:
        problems.append(Problem(name, gettext("%(value)s is not an amount", value=value)))
        return None
    if not number.is_finite() or abs(number) > limit:
        problems.append(Problem(name, gettext("%(value)s is too large", value=value)))
        return None
    if number != number.quantize(Decimal(1).scaleb(-places)):
        problems.append(Problem(name, gettext("at most %(count)s decimal places", count=places)))
        return None
    return number


def _moment(value: Any, name: str, problems: list[Problem]) -> dt.datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(Problem(name, gettext("is required")))
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        problems.append(Problem(name, gettext(
            "%(value)s is not a date and time (ISO 8601, e.g. 2026-11-20T10:15:00+08:00)", value=value)))
        return None
    # a time without an offset is taken as UTC
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _lines(raw: Any, problems: list[Problem]) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(Problem("lines", gettext("must be a list of lines")))
        return []
    if len(raw) > MAX_LINES:
        problems.append(Problem("lines", gettext("at most %(count)s lines", count=MAX_LINES)))
        return []
    lines = []
    for position, line in enumerate(raw):
        where = f"lines[{position}]."
        if not isinstance(line, dict):
            problems.append(Problem(f"lines[{position}]", gettext("must be an object with name, quantity and "
                                                                  "unit_price")))
            continue
        name = _text(line, "name", problems, where, required=True)
        sku = _text(line, "sku", problems, where)
        quantity = _decimal(line.get("quantity", 1), f"{where}quantity", problems, places=3, limit=MAX_QUANTITY)
        price = _decimal(line.get("unit_price"), f"{where}unit_price", problems, places=2, limit=MAX_AMOUNT)
        amount = _decimal(line.get("amount"), f"{where}amount", problems, places=2, limit=MAX_AMOUNT,
                          required=False)
        if None in (name, quantity, price):
            continue
        if amount is None:
            amount = (quantity * price).quantize(Decimal("0.01"))
        lines.append({"position": position + 1, "sku": sku, "name": name, "quantity": quantity,
                      "unit_price": price, "amount": amount})
    return lines


def clean_sale(data: Any) -> SaleInput:
    """A posted sale checked field by field; SaleError names every bad field.

    `data`: `receipt`, `store`, `sold_at` (ISO 8601; UTC when it has no offset), `total`, `currency`
    (ISO 4217, default BIGLEDGER_POS_CURRENCY), `lines` ([{`sku`, `name`, `quantity`, `unit_price`,
    `amount`}]), `customer` ({`card`, `phone`, `email`, `name`}) and `loyalty` ({`tier`, `points`}).
    """
    if not isinstance(data, dict):
        raise SaleError([Problem("sale", gettext("Send the sale as a JSON object."))])
    problems: list[Problem] = []
    known = {"receipt", "store", "sold_at", "total", "currency", "lines", "customer", "loyalty"}
    problems += [Problem(str(key), gettext("unknown field")) for key in data if key not in known]
    receipt = _text(data, "receipt", problems, required=True)
    store = _text(data, "store", problems, required=True)
    sold_at = _moment(data.get("sold_at"), "sold_at", problems)
    total = _decimal(data.get("total"), "total", problems, places=2, limit=MAX_AMOUNT)
    currency = data.get("currency") or default_currency()
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency.strip()):
        problems.append(Problem("currency", gettext("%(value)s is not a currency code (e.g. CNY, MYR)",
                                                    value=currency)))
        currency = None
    lines = _lines(data.get("lines"), problems)
    customer = data.get("customer") or {}
    if not isinstance(customer, dict):
        problems.append(Problem("customer", gettext("must be an object with card, phone, email and name")))
        customer = {}
    card = _text(customer, "card", problems, "customer.")
    name = _text(customer, "name", problems, "customer.")
    phone = email = None
    if customer.get("phone"):
        try:
            phone = parse_phone(str(customer["phone"]), _setting("BIGLEDGER_PHONE_REGION", "CN"))
        except InvalidValue:
            problems.append(Problem("customer.phone", gettext("%(value)s is not a valid phone number",
                                                              value=customer["phone"])))
    if customer.get("email"):
        try:
            email = normalize_email(str(customer["email"]))
        except InvalidValue:
            problems.append(Problem("customer.email", gettext("%(value)s is not a valid e-mail address",
                                                              value=customer["email"])))
    loyalty = data.get("loyalty") or {}
    if not isinstance(loyalty, dict):
        problems.append(Problem("loyalty", gettext("must be an object with tier and points")))
        loyalty = {}
    tier = _text(loyalty, "tier", problems, "loyalty.")
    points = loyalty.get("points")
    if points is not None and points != "":
        if isinstance(points, bool) or not re.fullmatch(r"\d{1,9}", str(points).strip()):
            problems.append(Problem("loyalty.points", gettext("must be a whole number of points, 0 or more")))
            points = None
        else:
            points = int(str(points).strip())
    else:
        points = None
    if (tier is not None or points is not None) and not card:
        problems.append(Problem("loyalty", gettext("give customer.card: tier and points belong to a card")))
    if problems:
        raise SaleError(problems)
    return SaleInput(receipt=receipt, store=store, sold_at=sold_at, total=total, currency=currency.strip().upper(),
                     lines=lines, card=card, phone=phone, email=email, name=name, tier=tier, points=points)


# -- matching ------------------------------------------------------------------------------------------

_crm = ask_service  # the CRM's `crm_` services: the bridge reads and writes no CRM table itself


def _survivor(contact_id: int | None) -> int | None:
    """The contact itself, or the one it was merged into (None when it no longer exists)."""
    seen = set()
    while contact_id is not None and contact_id not in seen:
        seen.add(contact_id)
        found = (_crm("crm_customers", company_ids=[], contact_ids=[contact_id], external_ids=[]) or {}) \
            .get("contacts", {}).get(contact_id)
        if found is None:
            return None
        if found["merged_into"] is None:
            return contact_id
        contact_id = found["merged_into"]
    return contact_id


def match_contact(session: Session, sale: SaleInput) -> tuple[int | None, str | None]:
    """(contact id, how it was found): by loyalty card, then phone (E.164), then e-mail; (None, None) if none."""
    if sale.card:
        holder = session.scalar(select(LoyaltyCard.contact_id).where(LoyaltyCard.number == sale.card))
        if holder is not None:
            survivor = _survivor(holder)
            if survivor is not None:
                return survivor, "card"
    if sale.phone:
        found = _crm("crm_find_contact", phone=sale.phone, email=None)
        if found is not None:
            return found, "phone"
    if sale.email:
        found = _crm("crm_find_contact", phone=None, email=sale.email)
        if found is not None:
            return found, "email"
    return None, None


def _new_contact(sale: SaleInput) -> int:
    who = sale.name or gettext("POS customer %(id)s", id=sale.card or sale.phone or sale.email)
    return _crm("crm_create_contact", data={"full_name": who[:200], "phone": sale.phone, "email": sale.email})


def _update_card(session: Session, sale: SaleInput, contact_id: int | None) -> None:
    card = session.scalar(select(LoyaltyCard).where(LoyaltyCard.number == sale.card))
    if card is None:
        card = LoyaltyCard(number=sale.card, points=0)
        session.add(card)
    if card.contact_id is None:
        card.contact_id = contact_id
    if sale.tier is not None:
        card.tier = sale.tier
    if sale.points is not None:
        card.points = sale.points


# -- recording -----------------------------------------------------------------------------------------

def record_sale(session: Session, data: Any, *, create_contacts: bool | None = None) -> SaleResult:
    """Record one sale once per (store, receipt): validated, matched to a contact (created when unknown and
    BIGLEDGER_POS_CREATE_CONTACTS allows), its loyalty card updated. Flushes; the caller commits.

    Raises SaleError (bad fields) or SaleConflict (the receipt is recorded with another total or currency).
    """
    sale = clean_sale(data)
    if create_contacts is None:
        create_contacts = bool(_setting("BIGLEDGER_POS_CREATE_CONTACTS", True))
    existing = _existing(session, sale)
    if existing is not None:
        return existing
    try:
        with session.begin_nested():
            contact_id, matched_by = match_contact(session, sale)
            if contact_id is None and create_contacts and (sale.card or sale.phone or sale.email):
                contact_id, matched_by = _new_contact(sale), "created"
            row = PosSale(store=sale.store, receipt=sale.receipt, sold_at=sale.sold_at, total=sale.total,
                          currency=sale.currency, card=sale.card, phone=sale.phone, email=sale.email,
                          contact_id=contact_id, matched_by=matched_by,
                          lines=[PosSaleLine(**line) for line in sale.lines])
            session.add(row)
            if sale.card:
                _update_card(session, sale, contact_id)
            session.flush()
    except IntegrityError:  # the same receipt posted twice at once: the other request stored it
        existing = _existing(session, sale)
        if existing is None:
            raise
        return existing
    return SaleResult(row.id, contact_id, matched_by, True)


def _existing(session: Session, sale: SaleInput) -> SaleResult | None:
    row = session.execute(select(PosSale.id, PosSale.contact_id, PosSale.matched_by, PosSale.total,
                                 PosSale.currency)
                          .where(PosSale.store == sale.store, PosSale.receipt == sale.receipt)).first()
    if row is None:
        return None
    if row.total != sale.total or row.currency != sale.currency:
        raise SaleConflict(gettext(
            "Receipt %(receipt)s of store %(store)s is already recorded with %(currency)s %(total)s; a corrected "
            "sale needs a new receipt number.", receipt=sale.receipt, store=sale.store, currency=row.currency,
            total=row.total))
    return SaleResult(row.id, row.contact_id, row.matched_by, False)


# -- CSV import ----------------------------------------------------------------------------------------

@dataclass
class ImportReport:
    """How an import went: counts, and each refused row as (row number, column, message)."""

    created: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)


def import_sales(session: Session, stream: io.TextIOBase, *, create_contacts: bool | None = None) -> ImportReport:
    """Import sales from CSV (one row per receipt; columns `CSV_COLUMNS`, header required). Each row is
    stored whole or not at all; refused rows are reported and the others kept. Commits every row."""
    report = ImportReport()
    reader = csv.DictReader(stream)
    header = [(name or "").strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in CSV_REQUIRED if name not in header]
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if missing or unknown:
        for name in missing:
            report.errors.append((1, name, gettext("column missing from the header")))
        for name in unknown:
            report.errors.append((1, name, gettext("unknown column (use %(columns)s)",
                                                   columns=", ".join(CSV_COLUMNS))))
        return report
    reader.fieldnames = header
    for number, row in enumerate(reader, start=2):
        values = {key: (value or "").strip() for key, value in row.items() if key}
        data = {"receipt": values.get("receipt"), "store": values.get("store"), "sold_at": values.get("sold_at"),
                "total": values.get("total"), "currency": values.get("currency") or None,
                "customer": {key: values.get(key) or None for key in ("card", "phone", "email", "name")}}
        if values.get("tier") or values.get("points"):
            data["loyalty"] = {"tier": values.get("tier") or None, "points": values.get("points") or None}
        try:
            result = record_sale(session, data, create_contacts=create_contacts)
            session.commit()
        except SaleError as exc:
            session.rollback()
            report.errors.extend((number, _column(p.field), p.message) for p in exc.problems)
            continue
        except SaleConflict as exc:
            session.rollback()
            report.errors.append((number, "total", str(exc)))
            continue
        if result.created:
            report.created += 1
        else:
            report.duplicates += 1
    return report


def _column(name: str) -> str:
    """The CSV column of a field of the posted form (`customer.phone` -> `phone`)."""
    return name.split(".", 1)[1] if name.startswith(("customer.", "loyalty.")) else name
