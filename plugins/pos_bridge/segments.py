"""Segment conditions on purchases (`crm_segment_conditions`): "spent more than 10,000 in 90 days",
"bought at least 3 times in 30 days". Each is one grouped query over the bridge's sales, set-based."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from flask_babel import gettext
from sqlalchemy import func, select

from bigledger_core.db import utcnow

from .models import PosSale
from .services import default_currency

OPS = ("gt", "gte", "lt", "lte", "eq")
MAX_DAYS = 36500
KEYS = {"金额": "amount", "天数": "days", "币种": "currency", "次数": "count"}


def _object(value: Any, keys: tuple[str, ...], example: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(gettext("give an object such as %(example)s", example=example))
    data = {KEYS.get(key, key): item for key, item in value.items()}
    unknown = [str(key) for key in data if key not in keys]
    if unknown:
        raise ValueError(gettext("unknown key %(key)s (use %(keys)s)", key=", ".join(unknown), keys=", ".join(keys)))
    return data


def _days(value: Any) -> int:
    if isinstance(value, bool) or not re.fullmatch(r"\d{1,5}", str(value).strip()) or not 1 <= int(value) <= MAX_DAYS:
        raise ValueError(gettext("days: give a whole number of days from 1 to %(max)s", max=MAX_DAYS))
    return int(value)


def check_spent(_op: str, value: Any) -> dict:
    """{"amount": 10000, "days": 90, "currency": "CNY"} (currency defaults to BIGLEDGER_POS_CURRENCY)."""
    data = _object(value, ("amount", "days", "currency"), '{"amount": 10000, "days": 90, "currency": "CNY"}')
    try:
        amount = Decimal(str(data.get("amount")).replace(",", "").strip())
        if isinstance(data.get("amount"), bool) or not amount.is_finite() or amount < 0:
            raise InvalidOperation
    except InvalidOperation:
        raise ValueError(gettext("amount: give an amount of 0 or more")) from None
    currency = str(data.get("currency") or default_currency()).strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise ValueError(gettext("currency: %(value)s is not a currency code (e.g. CNY, MYR)", value=currency))
    return {"amount": str(amount), "days": _days(data.get("days")), "currency": currency}


def check_purchases(_op: str, value: Any) -> dict:
    """{"count": 3, "days": 30}."""
    data = _object(value, ("count", "days"), '{"count": 3, "days": 30}')
    count = data.get("count")
    if isinstance(count, bool) or not re.fullmatch(r"\d{1,9}", str(count).strip()):
        raise ValueError(gettext("count: give a whole number of purchases, 0 or more"))
    return {"count": int(count), "days": _days(data.get("days"))}


def _compare(expression, op: str, value):
    return {"gt": expression > value, "gte": expression >= value, "lt": expression < value,
            "lte": expression <= value, "eq": expression == value}[op]


def _clause(op: str, ids, grouped, measure, threshold):
    """`ids` whose measure over their sales compares to `threshold`; contacts without sales count as 0."""
    if _compare(0, op, threshold):  # those without sales are in too: everyone but the contacts that fail
        opposite = {"gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt", "eq": None}[op]
        if opposite is None:  # "exactly 0": everyone except those who bought at all
            return ids.not_in(grouped)
        return ids.not_in(grouped.having(_compare(measure, opposite, threshold)))
    return ids.in_(grouped.having(_compare(measure, op, threshold)))


def _sales_since(days: int):
    since = utcnow() - dt.timedelta(days=days)
    return select(PosSale.contact_id).where(PosSale.contact_id.is_not(None), PosSale.sold_at >= since) \
        .group_by(PosSale.contact_id)


def spent_clause(op: str, value: dict, ids):
    """`ids` whose spending in `value["currency"]` over the last `value["days"]` days compares to the amount."""
    grouped = _sales_since(value["days"]).where(PosSale.currency == value["currency"])
    return _clause(op, ids, grouped, func.sum(PosSale.total), Decimal(value["amount"]))


def purchases_clause(op: str, value: dict, ids):
    """`ids` whose number of purchases over the last `value["days"]` days compares to `value["count"]`."""
    return _clause(op, ids, _sales_since(value["days"]), func.count(PosSale.id), value["count"])


def conditions() -> list[dict]:
    """The segment fields `pos_spent` and `pos_purchases` (see `crm_segment_conditions`)."""
    return [
        {"field": "pos_spent", "entity": "contact", "ops": OPS,
         "label": {"zh": "最近 N 天门店消费金额", "en": "Spent in stores in the last N days"},
         "check": check_spent, "clause": spent_clause},
        {"field": "pos_purchases", "entity": "contact", "ops": OPS,
         "label": {"zh": "最近 N 天门店购买次数", "en": "Store purchases in the last N days"},
         "check": check_purchases, "clause": purchases_clause},
    ]
