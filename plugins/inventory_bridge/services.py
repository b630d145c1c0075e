"""The inventory bridge's commands: ask the inventory module (whichever plugin answers the `inventory_*` hooks)
about a deal's line items, judge each line (available, short, unavailable, unknown) with its price for the
customer, and the standalone answers from the bridge's own tables when no inventory module is installed.

The deal page, the line-item screen and API, the availability API and the demo call the same functions; none
needs a Flask request.
"""
from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import has_app_context
from flask_babel import format_decimal, gettext
from sqlalchemy import and_, false, func, or_, select, true
from sqlalchemy.orm import Session

from bigledger_core.db import db, in_ids, utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.i18n import current_locale
from bigledger_core.modules import ask_service

from .models import CustomerPriceList, PriceList, PriceListItem, Product, Stock

log = logging.getLogger(__name__)

AVAILABLE, SHORT, UNAVAILABLE, UNKNOWN = "available", "short", "unavailable", "unknown"
MAX_CODES = 200
MAX_QUANTITY = Decimal(99999999999999)


class InventoryError(BigLedgerError):
    """An inventory command refused: the message says which field, what is wrong and what to do."""


def today() -> dt.date:
    return utcnow().date()


# -- asking the inventory module ------------------------------------------------------------------------------

ask_inventory = ask_service  # `inventory_*` hooks: the deployment's inventory module first, else this bridge


def _ask(hook: str, **kwargs) -> Any:
    """`ask_inventory`, but a module that fails leaves the answer unknown instead of breaking the deal's page.
    No pending CRM change is flushed by the lookups (a line being saved is not complete yet)."""
    try:
        with db.session.no_autoflush:
            return ask_inventory(hook, **kwargs)
    except Exception:
        log.exception("the inventory module failed to answer %s", hook)
        return None


def customer_of(deal) -> dict[str, Any]:
    """Who a deal is for, as the inventory hooks take it: CRM ids, the name and the id another system gave it."""
    company, contact = getattr(deal, "company", None), getattr(deal, "contact", None)
    who = company if company is not None else contact
    return {"company_id": deal.company_id, "contact_id": deal.contact_id,
            "name": getattr(who, "name", None) or getattr(who, "full_name", None),
            "external_id": getattr(who, "external_id", None)}


def _quantity(value: Any) -> Decimal:
    """A line's quantity (a line being added may have none yet: the column's default is 1)."""
    return Decimal(1) if value is None else Decimal(value)


def _number(value: Decimal) -> str:
    """A quantity as people write it: `3`, `2.5`, `1,200` (in the user's language)."""
    return format_decimal(Decimal(value))


def judge(code: str, quantity: Decimal, stock: dict | None) -> dict[str, Any]:
    """The status and translated message of `quantity` of product `code`, given an `inventory_availability`
    answer (None: the module gave none). Adds `available` when the stock is known."""
    if stock is None:
        return {"status": UNKNOWN, "message": gettext("%(code)s: stock not checked, the inventory module did not "
                                                      "answer.", code=code)}
    entry = stock.get(code)
    if entry is None:
        return {"status": UNAVAILABLE, "message": gettext("%(code)s is not in the product list.", code=code)}
    if entry.get("active") is False:
        return {"status": UNAVAILABLE, "message": gettext("%(code)s is no longer sold.", code=code)}
    if entry.get("stocked") is False:
        return {"status": AVAILABLE, "message": gettext("%(code)s is not kept in stock: always available.",
                                                        code=code)}
    if entry.get("available") is None:
        return {"status": UNKNOWN, "message": gettext("%(code)s: stock not known.", code=code)}
    available = max(Decimal(entry["available"]), Decimal(0))
    check: dict[str, Any] = {"available": available}
    if available <= 0:
        check.update(status=UNAVAILABLE, message=gettext("%(code)s: none in stock, %(wanted)s wanted.", code=code,
                                                         wanted=_number(quantity)))
    elif available < quantity:
        check.update(status=SHORT, message=gettext("%(code)s: only %(available)s of %(wanted)s in stock.", code=code,
                                                   available=_number(available), wanted=_number(quantity)))
    else:
        check.update(status=AVAILABLE, message=gettext("%(code)s: %(available)s in stock.", code=code,
                                                       available=_number(available)))
    return check


def _price(answer: Any, index: int) -> dict[str, Any]:
    """The price fields of item `index` of an `inventory_prices` answer ({} when it has none)."""
    if not isinstance(answer, list) or index >= len(answer) or not isinstance(answer[index], dict):
        return {}
    offer = answer[index]
    if offer.get("price") is None:
        return {}
    return {"price": Decimal(offer["price"]), "currency": offer.get("currency"), "price_list": offer.get("price_list")}


def line_checks(deal, lines: list) -> list[dict]:
    """The `crm_deal_line_checks` answer: for every line with a product code, its availability and the price for
    the deal's customer, with one `inventory_availability` and one `inventory_prices` call for all lines."""
    wanted = [(index, line.product_code.strip(), _quantity(line.quantity)) for index, line in enumerate(lines)
              if (line.product_code or "").strip()]
    if not wanted:
        return []
    stock = _ask("inventory_availability", product_codes=sorted({code for _i, code, _q in wanted}), warehouse=None)
    prices = _ask("inventory_prices", request={
        "customer": customer_of(deal), "currency": deal.currency, "on": today(),
        "items": [{"product_code": code, "quantity": quantity} for _i, code, quantity in wanted]})
    return [{"line": index, **judge(code, quantity, stock), **_price(prices, n)}
            for n, (index, code, quantity) in enumerate(wanted)]


def check_products(codes: list[str], quantity: Decimal, *, warehouse: str | None = None,
                   company_id: int | None = None, currency: str | None = None) -> list[dict]:
    """What a sales rep asks before promising: for each code, the stock (in `warehouse`, or all) against
    `quantity`, and with a `currency` the unit price for that quantity (for `company_id`'s price lists)."""
    stock = _ask("inventory_availability", product_codes=list(codes), warehouse=warehouse)
    prices = None
    if currency:
        prices = _ask("inventory_prices", request={
            "customer": {"company_id": company_id, "contact_id": None, "name": None, "external_id": None},
            "currency": currency, "on": today(),
            "items": [{"product_code": code, "quantity": quantity} for code in codes]})
    result = []
    for n, code in enumerate(codes):
        entry, check = (stock or {}).get(code) or {}, judge(code, quantity, stock)
        result.append({"code": code, "known": bool(entry), "name": entry.get("name"), "unit": entry.get("unit"),
                       "active": entry.get("active"), "stocked": entry.get("stocked"),
                       "on_hand": entry.get("on_hand"), "reserved": entry.get("reserved"),
                       "available": entry.get("available"), "quantity": quantity, "status": check["status"],
                       "message": check["message"], "price": None, "currency": None, "price_list": None,
                       **_price(prices, n)})
    return result


# -- input from the screens and the API -------------------------------------------------------------------------

def parse_quantity(value: Any, field: str = "quantity") -> Decimal:
    """A positive quantity such as 5 or 2.5; InventoryError names the field otherwise."""
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        number = None
    if number is None or not number.is_finite() or number <= 0 or number > MAX_QUANTITY:
        raise InventoryError(gettext("%(field)s: give a quantity above zero such as 5 or 2.5, not “%(value)s”.",
                                     field=field, value=str(value)[:30]))
    return number


def parse_currency(value: Any) -> str:
    text = str(value or "").strip().upper()
    if len(text) != 3 or not text.isalpha():
        raise InventoryError(gettext("currency: give a three-letter currency code such as CNY, not “%(value)s”.",
                                     value=str(value or "")[:20]))
    return text


def parse_codes(value: Any) -> list[str]:
    """Comma-separated product codes, each once, in the order given."""
    codes = list(dict.fromkeys(part.strip() for part in str(value or "").split(",") if part.strip()))
    if not codes:
        raise InventoryError(gettext("codes: give one or more product codes separated by commas, e.g. "
                                     "?codes=KIOSK-01,ERP-LIC"))
    if len(codes) > MAX_CODES:
        raise InventoryError(gettext("codes: at most %(count)s product codes at a time.", count=MAX_CODES))
    too_long = [code for code in codes if len(code) > 100]
    if too_long:
        raise InventoryError(gettext("codes: “%(code)s…” is longer than a product code (100 characters).",
                                     code=too_long[0][:20]))
    return codes


def _text(value: Any, field: str, limit: int, *, required: bool = True) -> str | None:
    text = str(value or "").strip()
    if not text:
        if required:
            raise InventoryError(gettext("%(field)s: this is required.", field=field))
        return None
    if len(text) > limit:
        raise InventoryError(gettext("%(field)s: at most %(count)s characters.", field=field, count=limit))
    return text


def _not_negative(value: Any, field: str, default: Decimal | None = None) -> Decimal:
    if value is None and default is not None:
        return default
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        number = Decimal(-1)
    if not number.is_finite() or number < 0 or number > MAX_QUANTITY:
        raise InventoryError(gettext("%(field)s: give zero or a positive number such as 12, not “%(value)s”.",
                                     field=field, value=str(value)[:30]))
    return number


def _taken(session: Session, model, item, *conditions) -> bool:
    """Whether another row than `item` already matches `conditions`."""
    query = select(model.id).where(*conditions)
    if item.id is not None:
        query = query.where(model.id != item.id)
    with session.no_autoflush:
        return session.scalar(query.limit(1)) is not None


def clean_product(session: Session, item: Product) -> Product:
    """Check a product added or changed on the screen or through the API."""
    item.code = _text(item.code, "code", 100)
    if any(ch.isspace() for ch in item.code) or "," in item.code:
        raise InventoryError(gettext("code: a product code has no spaces or commas, e.g. KIOSK-01 (not "
                                     "“%(value)s”).", value=item.code[:30]))
    item.name = _text(item.name, "name", 200)
    item.name_en = _text(item.name_en, "name_en", 200, required=False)
    item.unit = _text(item.unit, "unit", 30, required=False)
    item.stocked = True if item.stocked is None else bool(item.stocked)
    item.active = True if item.active is None else bool(item.active)
    if _taken(session, Product, item, Product.code == item.code):
        raise InventoryError(gettext("code: %(code)s is already the code of another product.", code=item.code))
    return item


def clean_stock(session: Session, item: Stock) -> Stock:
    """Check a stock row: a product, a warehouse, on hand and reserved (at most what is on hand), once per
    product and warehouse."""
    if item.product_id is None and item.product is None:
        raise InventoryError(gettext("product: choose the product this stock is of."))
    product_id = item.product_id if item.product_id is not None else item.product.id
    item.warehouse = _text(item.warehouse, "warehouse", 50)
    item.on_hand = _not_negative(item.on_hand, "on_hand")
    item.reserved = _not_negative(item.reserved, "reserved", Decimal(0))
    if item.reserved > item.on_hand:
        raise InventoryError(gettext("reserved: at most what is on hand (%(on_hand)s).",
                                     on_hand=_number(item.on_hand)))
    if _taken(session, Stock, item, Stock.product_id == product_id, Stock.warehouse == item.warehouse):
        raise InventoryError(gettext("warehouse: this product already has stock in %(warehouse)s; change that "
                                     "row instead.", warehouse=item.warehouse))
    item.updated_at = utcnow()
    return item


def clean_price_list(session: Session, item: PriceList) -> PriceList:
    item.name = _text(item.name, "name", 100)
    item.currency = parse_currency(item.currency)
    item.is_default = bool(item.is_default)
    if item.valid_from and item.valid_to and item.valid_to < item.valid_from:
        raise InventoryError(gettext("valid_to: the list cannot end (%(to)s) before it starts (%(from)s).",
                                     to=item.valid_to.isoformat(), **{"from": item.valid_from.isoformat()}))
    if _taken(session, PriceList, item, PriceList.name == item.name):
        raise InventoryError(gettext("name: there is already a price list called %(name)s.", name=item.name))
    return item


def clean_price_list_item(session: Session, item: PriceListItem) -> PriceListItem:
    """Check a price of a list: a product, a price of zero or more, a tier (from quantity) once per product."""
    list_id = item.price_list_id if item.price_list_id is not None else getattr(item.price_list, "id", None)
    product_id = item.product_id if item.product_id is not None else getattr(item.product, "id", None)
    if list_id is None:
        raise InventoryError(gettext("price_list: choose the price list this price belongs to."))
    if product_id is None:
        raise InventoryError(gettext("product: choose the product this price is for."))
    item.min_quantity = _not_negative(item.min_quantity, "min_quantity", Decimal(1))
    if item.price is None:
        raise InventoryError(gettext("price: give the unit price, e.g. 3200.00."))
    item.price = _not_negative(item.price, "price").quantize(Decimal("0.01"))
    if _taken(session, PriceListItem, item, PriceListItem.price_list_id == list_id,
              PriceListItem.product_id == product_id, PriceListItem.min_quantity == item.min_quantity):
        raise InventoryError(gettext("min_quantity: this list already prices the product from %(quantity)s on; "
                                     "change that price instead.", quantity=_number(item.min_quantity)))
    return item


def clean_customer_price_list(session: Session, item: CustomerPriceList) -> CustomerPriceList:
    list_id = item.price_list_id if item.price_list_id is not None else getattr(item.price_list, "id", None)
    if list_id is None:
        raise InventoryError(gettext("price_list: choose the price list the company buys from."))
    if isinstance(item.company_id, bool) or not isinstance(item.company_id, int) or item.company_id <= 0:
        raise InventoryError(gettext("company_id: give the CRM id of the company, a whole number such as 42."))
    company = (ask_inventory("crm_customers", company_ids=[item.company_id], contact_ids=[], external_ids=[])
               or {}).get("companies", {}).get(item.company_id)
    if company is None:
        raise InventoryError(gettext("company_id: there is no company %(id)s in the CRM", id=item.company_id))
    if company["merged_into"] is not None:
        raise InventoryError(gettext("company_id: company %(id)s was merged into %(survivor)s; use that one",
                                     id=item.company_id, survivor=company["merged_into"]))
    if _taken(session, CustomerPriceList, item, CustomerPriceList.company_id == item.company_id,
              CustomerPriceList.price_list_id == list_id):
        raise InventoryError(gettext("price_list: company %(company)s already buys from this list.",
                                     company=item.company_id))
    return item


# -- standalone storage: the answers when no inventory module is installed -----------------------------------

def _name(name: str, name_en: str | None) -> str:
    return (name_en or name) if has_app_context() and current_locale() == "en" else name


def availability(session: Session, codes: list[str], warehouse: str | None) -> dict[str, dict]:
    """Stock of the products `codes` (summed over every warehouse, or in `warehouse`), in one query."""
    if not codes:
        return {}
    in_warehouse = Stock.warehouse == warehouse if warehouse else true()
    rows = session.execute(
        select(Product.code, Product.name, Product.name_en, Product.unit, Product.active, Product.stocked,
               func.coalesce(func.sum(Stock.on_hand), 0), func.coalesce(func.sum(Stock.reserved), 0))
        .outerjoin(Stock, and_(Stock.product_id == Product.id, in_warehouse))
        .where(in_ids(session, Product.code, codes))
        .group_by(Product.id, Product.code, Product.name, Product.name_en, Product.unit, Product.active,
                  Product.stocked))
    answer = {}
    for code, name, name_en, unit, active, stocked, on_hand, reserved in rows:
        on_hand, reserved = Decimal(on_hand), Decimal(reserved)
        answer[code] = {"name": _name(name, name_en), "unit": unit, "active": bool(active), "stocked": bool(stocked),
                        "on_hand": on_hand, "reserved": reserved,
                        "available": on_hand - reserved if stocked else None}
    return answer


def prices(session: Session, request: dict[str, Any]) -> list[dict | None]:
    """Unit prices for `request["items"]` in the request's currency: from the customer's own price lists valid
    that day, else the default list of that currency; on each list the highest tier the quantity reaches. Two
    queries whatever the number of items."""
    items = request.get("items") or []
    if not items:
        return []
    currency, on = str(request.get("currency") or "").upper(), request.get("on") or today()
    company_id = (request.get("customer") or {}).get("company_id")
    theirs = PriceList.id.in_(select(CustomerPriceList.price_list_id).where(
        CustomerPriceList.company_id == company_id)) if company_id is not None else false()
    lists = session.execute(
        select(PriceList.id, PriceList.name, theirs.label("theirs"))
        .where(PriceList.currency == currency, or_(PriceList.is_default, theirs),
               or_(PriceList.valid_from.is_(None), PriceList.valid_from <= on),
               or_(PriceList.valid_to.is_(None), PriceList.valid_to >= on))
        # the customer's lists first, then the newest list of each kind
        .order_by(theirs.desc(), PriceList.valid_from.desc().nulls_last(), PriceList.id.desc())).all()
    if not lists:
        return [None for _ in items]
    codes = sorted({str(item["product_code"]) for item in items})
    tiers: dict[tuple[int, str], list[tuple[Decimal, Decimal]]] = {}
    for list_id, code, min_quantity, price in session.execute(
            select(PriceListItem.price_list_id, Product.code, PriceListItem.min_quantity, PriceListItem.price)
            .join(Product, Product.id == PriceListItem.product_id)
            .where(PriceListItem.price_list_id.in_([row.id for row in lists]), in_ids(session, Product.code, codes),
                   Product.active.is_(True))):
        tiers.setdefault((list_id, code), []).append((Decimal(min_quantity), Decimal(price)))
    answer: list[dict | None] = []
    for item in items:
        quantity, offer = _quantity(item.get("quantity")), None
        for row in lists:
            reached = [tier for tier in tiers.get((row.id, str(item["product_code"])), []) if tier[0] <= quantity]
            if reached:
                offer = {"price": max(reached)[1], "currency": currency, "price_list": row.name}
                break
        answer.append(offer)
    return answer
