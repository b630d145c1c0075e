"""How a customer's finance account reads in the 360° view: the panel rows and the timeline entries."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from flask_babel import gettext

from .services import status_label


def amount(currency: str, value: Decimal) -> str:
    return f"{currency} {Decimal(value):,.2f}"


def _date(value: dt.date | dt.datetime | None) -> str:
    if value is None:
        return "—"
    return value.date().isoformat() if isinstance(value, dt.datetime) else value.isoformat()


def panel(account: dict[str, Any]) -> dict[str, Any]:
    """The Finance panel: outstanding and overdue per currency, credit hold, last payment."""
    rows: list[list[str]] = []
    for balance in account.get("balances") or []:
        rows.append([gettext("Outstanding (%(currency)s)", currency=balance["currency"]),
                     f"{Decimal(balance['outstanding']):,.2f}"])
        rows.append([gettext("Overdue (%(currency)s)", currency=balance["currency"]),
                     f"{Decimal(balance['overdue']):,.2f}"])
    if not rows:
        rows.append([gettext("Outstanding"), gettext("Nothing owed")])
    if account.get("credit_hold"):
        reason = account.get("credit_hold_reason")
        rows.append([gettext("Credit hold"),
                     gettext("Yes: %(reason)s", reason=reason) if reason else gettext("Yes")])
    else:
        rows.append([gettext("Credit hold"), gettext("No")])
    payments = account.get("payments") or []
    if payments:
        last = payments[0]
        rows.append([gettext("Last payment"), f"{_date(last['received_at'])} · {amount(last['currency'], last['amount'])}"
                     + (f" · {last['invoice_number']}" if last.get("invoice_number") else "")])
    else:
        rows.append([gettext("Last payment"), "—"])
    return {"title": {"zh": "财务", "en": "Finance"}, "rows": rows}


def _at(value: dt.date | dt.datetime | None) -> str:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC).isoformat()
    return ""


def timeline(account: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Invoices (when made) and payments (when received), newest first, at most `limit`."""
    entries = []
    for invoice in account.get("invoices") or []:
        entries.append({"at": _at(invoice.get("created_at") or invoice.get("issued_on")), "kind": "invoice",
                        "title": gettext("Invoice %(number)s (%(status)s)", number=invoice["number"],
                                         status=status_label(invoice["status"])),
                        "detail": gettext("%(total)s, %(outstanding)s outstanding",
                                          total=amount(invoice["currency"], invoice["total"]),
                                          outstanding=amount(invoice["currency"], invoice["outstanding"]))})
    for payment in account.get("payments") or []:
        entries.append({"at": _at(payment["received_at"]), "kind": "payment",
                        "title": gettext("Payment received for %(number)s",
                                         number=payment.get("invoice_number") or "—"),
                        "detail": amount(payment["currency"], payment["amount"])
                        + (f" · {payment['reference']}" if payment.get("reference") else "")})
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[:limit]
