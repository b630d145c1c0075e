"""The bridge's standalone answers to the `pos_` hooks, from its own tables (each one query)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import cache

from sqlalchemy import Integer, bindparam, case, func, select
from sqlalchemy.orm import Session

from bigledger_core.db import ids_param

from .customers import PosCustomer
from .models import LoyaltyCard, PosSale, PosSaleLine


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite gives back naive datetimes; they were stored in UTC
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@cache
def _statements(dialect: str):
    """The three reads of a customer's `:contacts`, built once per dialect: the newest `:limit` sales, the count
    and amount by currency (all time and since `:since`), and the card with the most points."""
    of_customer = ids_param(dialect, PosSale.contact_id, "contacts")
    items = select(func.count()).where(PosSaleLine.sale_id == PosSale.id).scalar_subquery()
    history = select(PosSale.id, PosSale.sold_at, PosSale.store, PosSale.receipt, PosSale.total, PosSale.currency,
                     items.label("items")).where(of_customer) \
        .order_by(PosSale.sold_at.desc(), PosSale.id.desc()).limit(bindparam("limit", type_=Integer))
    recent = PosSale.sold_at >= bindparam("since", type_=PosSale.sold_at.type)
    totals = select(PosSale.currency, func.count(), func.sum(PosSale.total), func.sum(case((recent, 1), else_=0)),
                    func.sum(case((recent, PosSale.total), else_=0))) \
        .where(of_customer).group_by(PosSale.currency).order_by(PosSale.currency)
    card = select(LoyaltyCard.number, LoyaltyCard.tier, LoyaltyCard.points) \
        .where(ids_param(dialect, LoyaltyCard.contact_id, "contacts")) \
        .order_by(LoyaltyCard.points.desc(), LoyaltyCard.id).limit(1)
    return history, totals, card


def _run(session: Session, which: int, customer: PosCustomer, **params):
    statement = _statements(session.get_bind().dialect.name)[which]
    return session.execute(statement, {"contacts": list(customer.contact_ids), **params})


def purchase_history(session: Session, customer: PosCustomer, limit: int) -> list[dict]:
    """The customer's newest `limit` sales, newest first."""
    if not customer.contact_ids or limit < 1:
        return []
    return [{"at": _utc(r.sold_at), "store": r.store, "receipt": r.receipt, "total": Decimal(r.total),
             "currency": r.currency, "items": r.items} for r in _run(session, 0, customer, limit=limit)]


def purchase_totals(session: Session, customer: PosCustomer, since: dt.datetime) -> dict:
    """Count and amount by currency, all time and since `since`."""
    result = {"count": 0, "spent": {}, "count_since": 0, "spent_since": {}}
    if not customer.contact_ids:
        return result
    for currency, count, spent, count_since, spent_since in _run(session, 1, customer, since=since):
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
    row = _run(session, 2, customer).first()
    if row is None:
        return {}
    return {"card": row.number, "tier": row.tier, "points": row.points}
