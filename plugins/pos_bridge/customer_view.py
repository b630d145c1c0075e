"""The POS panel and purchases of the 360° view (`crm_customer_panels`, `crm_timeline_entries`), asked of the
POS through the `pos_` hooks."""
from __future__ import annotations

from decimal import Decimal

from flask_babel import format_decimal, gettext

from bigledger_core.db import db, utcnow

from .customers import RECENT_DAYS, ask, pos_customer, recent_since


def money(amounts: dict[str, Decimal]) -> str:
    """`CNY 12,800.00; MYR 50.00`, or `—` when there is none."""
    if not amounts:
        return "—"
    return "; ".join(f"{currency} {Decimal(amount):,.2f}" for currency, amount in sorted(amounts.items()))


def panels(customer) -> list[dict]:
    """The POS panel of a CRM `CustomerRef`: loyalty card, tier, points, purchases and spending (recent and all
    time); none for a customer with no card and no purchases."""
    who = pos_customer(db.session, customer)
    loyalty = ask("pos_loyalty_status", customer=who) or {}
    totals = ask("pos_purchase_totals", customer=who, since=recent_since(utcnow())) or {}
    if not loyalty and not totals.get("count"):
        return []  # a customer who never bought in a store (or a business customer) has no POS panel
    dash = "—"
    rows = [
        [gettext("Loyalty card"), loyalty.get("card") or dash],
        [gettext("Tier"), loyalty.get("tier") or dash],
        [gettext("Loyalty points"), format_decimal(loyalty["points"]) if loyalty.get("points") is not None else dash],
        [gettext("Purchases in the last %(days)s days", days=RECENT_DAYS), str(totals.get("count_since", 0))],
        [gettext("Spent in the last %(days)s days", days=RECENT_DAYS), money(totals.get("spent_since") or {})],
        [gettext("Purchases, all time"), str(totals.get("count", 0))],
        [gettext("Spent, all time"), money(totals.get("spent") or {})],
    ]
    return [{"title": {"zh": "门店消费与会员", "en": "Store purchases and loyalty"}, "rows": rows}]


def timeline_entries(customer, limit: int) -> list[dict]:
    """The customer's newest `limit` purchases as `purchase` timeline entries."""
    who = pos_customer(db.session, customer)
    purchases = ask("pos_purchase_history", customer=who, limit=limit) or []
    entries = []
    for purchase in purchases[:limit]:
        items = purchase.get("items")
        detail = money({purchase["currency"]: purchase["total"]})
        if items:
            detail = gettext("%(amount)s (lines: %(items)s)", amount=detail, items=items)
        entries.append({"at": purchase["at"].isoformat(), "kind": "purchase",
                        "title": gettext("Purchase at %(store)s, receipt %(receipt)s", store=purchase["store"],
                                         receipt=purchase["receipt"]),
                        "detail": detail})
    return entries
