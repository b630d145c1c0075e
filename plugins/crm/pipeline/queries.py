"""Pipeline reads for other parts of the CRM: a customer's deals for the 360° view and the open deal value
of each company of a tree (rolled up by the hierarchy)."""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from functools import cache

from sqlalchemy import Integer, bindparam, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from bigledger_core.db import ids_param
from bigledger_core.security import visibility_shape, visible_where

from .models import Deal, DealContact, Stage

CENT = Decimal("0.01")


@cache
def _deal_statements(dialect: str, kind: str, visibility: str):
    """Built once per dialect, customer kind and form of the user's visibility (`visible_where`): the newest
    `:limit` open and closed deals of the customer in one statement (each list numbered in its own order), and
    the deals counted and summed by company, status and currency."""
    if kind == "company":
        customer = ids_param(dialect, Deal.company_id, "companies")
    else:
        contact_id = bindparam("contact_id", type_=Integer)
        customer = or_(Deal.contact_id == contact_id,
                       Deal.id.in_(select(DealContact.deal_id).where(DealContact.contact_id == contact_id)))
    where = [customer, *visible_where(Deal, visibility, dialect)]
    columns = (Deal.id, Deal.name, Deal.status, Deal.amount, Deal.currency, Deal.probability, Deal.expected_close,
               Deal.closed_at, Deal.close_reason, Deal.company_id, Stage.name.label("stage"))
    branches = []
    for key, statuses, order in (("open", ("open",), Deal.expected_close.asc()),
                                 ("closed", ("won", "lost"), Deal.closed_at.desc())):
        newest = select(*columns, literal(key).label("list"),
                        func.row_number().over(order_by=(order, Deal.id.desc())).label("position")) \
            .join(Stage, Stage.id == Deal.stage_id).where(*where, Deal.status.in_(statuses)) \
            .order_by(order, Deal.id.desc()).limit(bindparam("limit", type_=Integer)).subquery()
        branches.append(select(newest))
    totals = select(Deal.company_id, Deal.status, Deal.currency, func.count(), func.sum(Deal.amount)) \
        .where(*where).group_by(Deal.company_id, Deal.status, Deal.currency)
    return union_all(*branches), totals


def customer_deals(session: Session, customer, user, *, limit: int = 20) -> tuple[dict, dict[int, dict[str, Decimal]]]:
    """Open and closed deals of a company (with its subsidiaries) or a contact that `user` may see:
    the newest `limit` of each, with counts and open totals per currency; and the open value of each company
    by currency (for a company's tree), from the same statement as the totals."""
    visibility, params = visibility_shape(user, session)
    params["limit"] = limit
    if customer.kind == "company":
        params["companies"] = list(customer.company_ids)
    else:
        params["contact_id"] = customer.id
    lists, totals = _deal_statements(session.get_bind().dialect.name, customer.kind, visibility)
    result: dict = {"open": [], "closed": []}
    for r in sorted(session.execute(lists, params), key=lambda r: (r.list, r.position)):
        result[r.list].append({"id": r.id, "name": r.name, "status": r.status, "amount": str(r.amount),
                               "currency": r.currency, "probability": str(r.probability), "stage": r.stage,
                               "company_id": r.company_id,
                               "expected_close": r.expected_close.isoformat() if r.expected_close else None,
                               "closed_at": r.closed_at.isoformat() if r.closed_at else None,
                               "reason": r.close_reason})
    totals = session.execute(totals, params).all()
    result["counts"] = {status: 0 for status in ("open", "won", "lost")}
    values: dict[str, dict[str, Decimal]] = {"open": defaultdict(Decimal), "won": defaultdict(Decimal)}
    by_company: dict[int, dict[str, Decimal]] = defaultdict(dict)
    for company_id, status, currency, count, amount in totals:
        result["counts"][status] = result["counts"].get(status, 0) + count
        if status in values:
            values[status][currency] += Decimal(amount or 0)
        if status == "open" and company_id is not None:
            by_company[company_id][currency] = Decimal(amount or 0).quantize(CENT)
    for status, per_currency in values.items():
        result[f"{status}_value"] = {currency: str(amount.quantize(CENT)) for currency, amount in per_currency.items()}
    return result, by_company


def roll_up(tree: list[tuple[int, int, int]], root: int, own: dict[int, dict[str, Decimal]]) -> dict:
    """Each company's value plus everything below it. `tree` is `descendants(root)`: (id, depth, parent)."""
    total = {cid: dict(own.get(cid, {})) for cid in [root, *[c for c, _d, _p in tree]]}
    for cid, _depth, parent in sorted(tree, key=lambda node: -node[1]):  # deepest first
        for currency, amount in total[cid].items():
            total[parent][currency] = total[parent].get(currency, Decimal(0)) + amount
    return total
