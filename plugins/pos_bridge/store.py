"""The bridge's standalone answers to the `pos_` hooks, from its own tables (each one query)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from bigledger_core.db import in_ids

from .customers import PosCustomer
from .models import LoyaltyCard, PosSale, PosSaleLine


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite gives back naive datetimes; they were stored in UTC
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def purchase_history(session: Session, customer: PosCustomer, limit: int) -> list[dict]:
    """The customer's newest `limit` sales, newest first."""
    if not customer.contact_ids or limit < 1:
        return []
    items = select(func.count()).where(PosSaleLine.sale_id == PosSale.id).scalar_subquery()
    rows = session.execute(
        select(PosSale.id, PosSale.sold_at, PosSale.store, PosSale.receipt, PosSale.total, PosSale.currency,
               items.label("items"))
        .where(in_ids(session, PosSale.contact_id, customer.contact_ids))
        .order_by(PosSale.sold_at.desc(), PosSale.id.desc()).limit(limit))
    return [{"at": _utc(r.sold_at), "store": r.store, "receipt": r.receipt, "total": Decimal(r.total),
             "currency": r.currency, "items": r.items} for r in rows]


def purchase_totals(session: Session, customer: PosCustomer, since: dt.datetime) -> dict:
    """Count and amount by currency, all time and since `since`."""
    result = {"count": 0, "spent": {}, "count_since": 0, "spent_since": {}}
    if not customer.contact_ids:
        return result
    recent = PosSale.sold_at >= since
    rows = session.execute(
        select(PosSale.currency, func.count(), func.sum(PosSale.total),
               func.sum(case((recent, 1), else_=0)), func.sum(case((recent, PosSale.total), else_=0)))
        .where(in_ids(session, PosSale.contact_id, customer.contact_ids)).group_by(PosSale.currency)
        .order_by(PosSale.currency))
    for currency, count, spent, count_since, spent_since in rows:
        result["count"] += count
        result["count_since"] += int(count_since or 0)
        result["spent"][currency] = Decimal(spent or 0).quantize(Decimal("0.01"))
        if count_since:
            result["spent_since"][currency] = Decimal(spent_since or 0).quantize(Decimal("0.01"))
    return result


def loyalty_status(session: Session, customer: PosCustomer) -> dict:
    """The customer's card with the most points ({} when they hold none)."""
    if not customer.contact_ids:
        return {}
    row = session.execute(
        select(LoyaltyCard.number, LoyaltyCard.tier, LoyaltyCard.points)
        .where(in_ids(session, LoyaltyCard.contact_id, customer.contact_ids))
        .order_by(LoyaltyCard.points.desc(), LoyaltyCard.id).limit(1)).first()
    if row is None:
        return {}
    return {"card": row.number, "tier": row.tier, "points": row.points}
