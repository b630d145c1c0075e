"""The finance bridge's commands: ask the finance module (whichever plugin answers the `finance_*` hooks),
invoice a won deal exactly once, and the standalone answers from the bridge's own tables (invoices, payments,
exchange rates, credit holds) used when no finance module is installed.

No Flask request is needed: the event subscriber, the screens, the API and the demo call the same functions.
"""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from typing import Any

from flask import current_app, g, has_app_context, has_request_context
from flask_babel import gettext
from sqlalchemy import (
    Date,
    Integer,
    Numeric,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bigledger_core.db import ids_param, utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.events import emit
from bigledger_core.modules import ask_service

from .models import CreditHold, ExchangeRate, Invoice, InvoiceLine, InvoiceLink, Payment

CENT = Decimal("0.01")
DEFAULT_PAYMENT_TERMS_DAYS = 30  # without an app (BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS sets it)


def payment_terms(session: Session, company_id: int | None) -> int:
    """Days a customer has to pay: the company's own terms, else BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS."""
    own = session.scalar(select(CreditHold.payment_terms_days).where(CreditHold.company_id == company_id)) \
        if company_id is not None else None
    if own is not None:
        return own
    return int(current_app.config.get("BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS", DEFAULT_PAYMENT_TERMS_DAYS)) \
        if has_app_context() else DEFAULT_PAYMENT_TERMS_DAYS


class FinanceError(BigLedgerError):
    """A finance command refused: the message says what and what to do."""


class NoFinanceAnswer(BigLedgerError):
    """No plugin answered a finance service hook."""


def money(value: Any) -> Decimal:
    """`value` as a Decimal with two places (from a Decimal, int or decimal string, never a float)."""
    if isinstance(value, float):
        raise TypeError("money is never a float")
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def today() -> dt.date:
    return utcnow().date()


# -- asking the finance module ----------------------------------------------------------------------------

ask_finance = ask_service  # `finance_*` hooks: the deployment's finance module first, else this bridge


def account_for_view(customer, limit: int) -> dict[str, Any] | None:
    """`finance_customer_account` for a CRM customer, asked once per request for its 360° view: the timeline
    asks for a page of invoices and payments, and the panel (balances, hold, the last payment) reuses that."""
    memo = g.setdefault("finance_bridge_accounts", {}) if has_request_context() else {}
    known = memo.get((customer.kind, customer.id))
    if known is not None and known[0] >= limit:
        return known[1]
    account = ask_finance("finance_customer_account", customer=customer_dict(customer), limit=limit)
    memo[(customer.kind, customer.id)] = (limit, account)
    return account


def customer_dict(customer) -> dict[str, Any]:
    """A CRM customer reference (`crm_customer_panels`' `customer`) as the dict the finance hooks take."""
    return {"kind": customer.kind, "id": customer.id, "name": customer.name,
            "company_ids": list(customer.company_ids), "contact_ids": list(customer.contact_ids)}


def crm_customers(company_ids=(), contact_ids=(), external_ids=()) -> dict[str, dict]:
    """Who CRM companies and contacts are (`crm_customers`, answered by the CRM): the bridge reads no CRM table."""
    return ask_finance("crm_customers", company_ids=list(company_ids), contact_ids=list(contact_ids),
                       external_ids=list(external_ids)) or {"companies": {}, "contacts": {}}


def _customer(company_id: int | None, contact_id: int | None) -> dict[str, Any]:
    """Who a deal is invoiced to: its company (else its contact), by CRM id, name and external id."""
    name = external_id = None
    if company_id is not None:
        record = crm_customers(company_ids=[company_id])["companies"].get(company_id)
    elif contact_id is not None:
        record = crm_customers(contact_ids=[contact_id])["contacts"].get(contact_id)
    else:
        record = None
    if record is not None:
        name, external_id = record["name"], record["external_id"]
    return {"company_id": company_id, "contact_id": contact_id, "name": name, "external_id": external_id}


def invoice_request(session: Session, payload: dict[str, Any], *, kind: str = "deal") -> dict[str, Any]:
    """The `finance_create_invoice` request for a won deal's event payload."""
    lines = []
    for item in payload.get("lines") or []:
        lines.append({"description": item["product"], "product_code": item.get("product_code"),
                      "quantity": Decimal(item["quantity"]), "unit_price": money(item["unit_price"]),
                      "discount": Decimal(item.get("discount") or 0), "amount": money(item["total"])})
    if not lines:  # a deal without line items is invoiced for its amount
        lines.append({"description": payload["name"], "product_code": None, "quantity": Decimal(1),
                      "unit_price": money(payload["amount"]), "discount": Decimal(0),
                      "amount": money(payload["amount"])})
    return {"idempotency_key": f"crm-{kind}-{payload['id']}",
            "customer": _customer(payload.get("company_id"), payload.get("contact_id")),
            "currency": payload["currency"], "payment_terms_days": payment_terms(session, payload.get("company_id")),
            "lines": lines,
            "reference": payload["name"], "source": {"kind": kind, "id": payload["id"]}}


def invoice_won_deal(session: Session, event) -> InvoiceLink | None:
    """Have the finance module draft the invoice for a won deal, once per deal: a repeated delivery (or the
    deal won again after reopening) finds the link and does nothing. A failure of the module raises, so the
    outbox retries the event later; the idempotency key keeps the module from invoicing twice."""
    payload = event.payload
    link = session.scalar(select(InvoiceLink).where(InvoiceLink.source_kind == "deal",
                                                    InvoiceLink.source_id == payload["id"]))
    if link is not None:
        return None
    answer = ask_finance("finance_create_invoice", request=invoice_request(session, payload))
    if not answer:
        raise NoFinanceAnswer(f"no finance module drafted an invoice for deal {payload['id']}")
    link = InvoiceLink(source_kind="deal", source_id=payload["id"], invoice_ref=str(answer["id"]),
                       invoice_number=answer.get("number"), invoice_status=answer.get("status"), event_id=event.id)
    session.add(link)
    try:
        session.commit()
    except IntegrityError:  # another delivery of the same deal got there first
        session.rollback()
        return None
    return link


def credit_hold_warnings(deal) -> list[str]:
    """The warning for a new deal whose company finance holds credit for (none without a company)."""
    company = getattr(deal, "company", None)
    if deal.company_id is None and company is None:
        return []
    company_id = deal.company_id if deal.company_id is not None else company.id
    name = company.name if company is not None else str(company_id)
    account = ask_finance("finance_customer_account",
                          customer={"kind": "company", "id": company_id, "name": name,
                                    "company_ids": [company_id], "contact_ids": []}, limit=0)
    if not account or not account.get("credit_hold"):
        return []
    reason = account.get("credit_hold_reason")
    if reason:
        return [gettext("%(company)s is on credit hold (%(reason)s): check with finance before promising delivery.",
                        company=name, reason=reason)]
    return [gettext("%(company)s is on credit hold: check with finance before promising delivery.", company=name)]


# -- standalone storage: the answers when no finance module is installed -----------------------------------

def _invoice_answer(invoice: Invoice) -> dict[str, Any]:
    return {"id": str(invoice.id), "number": invoice.number, "status": invoice.status}


def create_invoice(session: Session, request: dict[str, Any]) -> dict[str, Any]:
    """Draft an invoice from a `finance_create_invoice` request; a known idempotency key returns the invoice made
    for it before."""
    key = request.get("idempotency_key")
    if key:
        found = session.scalar(select(Invoice).where(Invoice.idempotency_key == key))
        if found is not None:
            return _invoice_answer(found)
    customer = request.get("customer") or {}
    if customer.get("company_id") is None and customer.get("contact_id") is None:
        raise FinanceError(gettext("An invoice needs a customer: a company or a contact."))
    currency = _currency(request.get("currency"))
    invoice = Invoice(idempotency_key=key, company_id=customer.get("company_id"),
                      contact_id=customer.get("contact_id"),
                      customer_name=(customer.get("name") or "")[:200] or "—", currency=currency, status="draft",
                      payment_terms_days=int(DEFAULT_PAYMENT_TERMS_DAYS if request.get("payment_terms_days") is None
                                             else request["payment_terms_days"]),
                      reference=(request.get("reference") or None), created_at=utcnow())
    for position, line in enumerate(request.get("lines") or []):
        invoice.lines.append(InvoiceLine(position=position, description=str(line["description"])[:300],
                                         product_code=line.get("product_code"),
                                         quantity=Decimal(str(line.get("quantity", 1))),
                                         unit_price=money(line.get("unit_price", 0)),
                                         discount=Decimal(str(line.get("discount") or 0)),
                                         amount=money(line["amount"])))
    invoice.total = sum((line.amount for line in invoice.lines), Decimal("0.00"))
    session.add(invoice)
    session.flush()
    invoice.number = f"INV-{invoice.id:06d}"
    session.flush()
    return _invoice_answer(invoice)


def issue_invoice(session: Session, invoice: Invoice, on: dt.date | None = None) -> Invoice:
    """Issue a draft: from now on it is owed, and due after its payment terms."""
    if invoice.status != "draft":
        raise FinanceError(gettext("Invoice %(number)s is %(status)s: only a draft can be issued.",
                                   number=invoice.number, status=status_label(invoice.status)))
    on = on or today()
    invoice.status, invoice.issued_on = "issued", on
    invoice.due_on = on + dt.timedelta(days=invoice.payment_terms_days)
    return invoice


def record_payment(session: Session, invoice: Invoice, amount: Any, *, received_at: dt.datetime | None = None,
                   reference: str | None = None, user_id: int | None = None) -> Payment:
    """Record money received against an issued invoice (at most what is still owed) and emit
    `finance_payment_received`. FinanceError says what is wrong."""
    return apply_payment(session, Payment(invoice=invoice, amount=amount, received_at=received_at,
                                          reference=reference, recorded_by_id=user_id))


def apply_payment(session: Session, payment: Payment) -> Payment:
    """Check a new payment (from `record_payment`, the screen or the API), book it on its invoice and emit
    `finance_payment_received`."""
    invoice = payment.invoice or (session.get(Invoice, payment.invoice_id) if payment.invoice_id else None)
    if invoice is None:
        raise FinanceError(gettext("invoice_id: there is no invoice %(id)s.", id=payment.invoice_id))
    if invoice.status != "issued":
        raise FinanceError(gettext("Invoice %(number)s is %(status)s: payments are recorded against issued invoices.",
                                   number=invoice.number, status=status_label(invoice.status)))
    try:
        amount = money(payment.amount)
    except (InvalidOperation, TypeError, ValueError):
        raise FinanceError(gettext("amount: give an amount such as 1200.00, not “%(value)s”.",
                                   value=str(payment.amount)[:30])) from None
    if amount <= 0:
        raise FinanceError(gettext("amount: a payment must be more than zero."))
    if amount > invoice.outstanding:
        raise FinanceError(gettext("amount: %(amount)s is more than the %(outstanding)s still owed on invoice "
                                   "%(number)s.", amount=f"{amount:,.2f}", outstanding=f"{invoice.outstanding:,.2f}",
                                   number=invoice.number))
    received_at = payment.received_at or utcnow()
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=dt.UTC)
    payment.invoice, payment.invoice_id, payment.amount = invoice, invoice.id, amount
    payment.company_id, payment.contact_id, payment.currency = invoice.company_id, invoice.contact_id, invoice.currency
    payment.received_at = received_at.astimezone(dt.UTC)
    payment.reference = (payment.reference or "").strip()[:100] or None
    invoice.paid = money(invoice.paid) + amount
    if invoice.outstanding <= 0:
        invoice.status = "paid"
    session.add(payment)
    session.flush()
    emit(session, "finance_payment_received", {
        "id": payment.id, "invoice_id": invoice.id, "invoice_number": invoice.number,
        "company_id": invoice.company_id, "contact_id": invoice.contact_id, "currency": invoice.currency,
        "amount": str(amount), "invoice_outstanding": str(money(invoice.outstanding)),
        "received_at": payment.received_at.isoformat(), "reference": payment.reference,
        "user_id": payment.recorded_by_id})
    return payment


def set_credit_hold(session: Session, company_id: int, on_hold: bool, reason: str | None = None) -> CreditHold:
    """Put a company on credit hold (or release it)."""
    hold = session.scalar(select(CreditHold).where(CreditHold.company_id == company_id))
    if hold is None:
        hold = CreditHold(company_id=company_id)
        session.add(hold)
    hold.on_hold, hold.reason, hold.updated_at = on_hold, (reason or None), utcnow()
    session.flush()
    return hold


def move_company(session: Session, merged_id: int, survivor_id: int) -> None:
    """After the CRM merged company `merged_id` into `survivor_id`: its invoices, payments and credit hold
    belong to the survivor (a hold of the survivor's own wins over the merged company's)."""
    session.execute(update(Invoice).where(Invoice.company_id == merged_id).values(company_id=survivor_id))
    session.execute(update(Payment).where(Payment.company_id == merged_id).values(company_id=survivor_id))
    if session.scalar(select(CreditHold.id).where(CreditHold.company_id == survivor_id)) is None:
        session.execute(update(CreditHold).where(CreditHold.company_id == merged_id).values(company_id=survivor_id))
    else:
        session.execute(delete(CreditHold).where(CreditHold.company_id == merged_id))


def _currency(value: Any) -> str:
    text = str(value or "").strip().upper()
    if len(text) != 3 or not text.isalpha():
        raise FinanceError(gettext("currency: give a three-letter currency code such as CNY, not “%(value)s”.",
                                   value=str(value or "")[:20]))
    return text


def set_rate(session: Session, from_currency: str, to_currency: str, valid_from: dt.date, rate: Any) -> ExchangeRate:
    """Record (or correct) the rate from one currency to another from a day on."""
    source, target = _currency(from_currency), _currency(to_currency)
    if source == target:
        raise FinanceError(gettext("to_currency: a rate converts between two different currencies."))
    try:
        value = Decimal(str(rate))
    except InvalidOperation:
        value = Decimal(0)
    if not value.is_finite() or value <= 0:
        raise FinanceError(gettext("rate: give a positive number such as 7.1234, not “%(value)s”.",
                                   value=str(rate)[:30]))
    row = session.scalar(select(ExchangeRate).where(ExchangeRate.from_currency == source,
                                                    ExchangeRate.to_currency == target,
                                                    ExchangeRate.valid_from == valid_from))
    if row is None:
        row = ExchangeRate(from_currency=source, to_currency=target, valid_from=valid_from)
        session.add(row)
    row.rate = value
    session.flush()
    return row


def exchange_rate(session: Session, from_currency: str, to_currency: str, on: dt.date) -> Decimal | None:
    """The latest rate valid on `on`, from the pair itself or from the inverse pair; None when neither exists."""
    if from_currency == to_currency:
        return Decimal(1)
    rows = session.execute(
        select(ExchangeRate.from_currency, ExchangeRate.rate)
        .where(or_(and_(ExchangeRate.from_currency == from_currency, ExchangeRate.to_currency == to_currency),
                   and_(ExchangeRate.from_currency == to_currency, ExchangeRate.to_currency == from_currency)),
               ExchangeRate.valid_from <= on)
        .order_by(case((ExchangeRate.from_currency == from_currency, 0), else_=1), ExchangeRate.valid_from.desc())
        .limit(1)).first()
    if rows is None:
        return None
    source, rate = rows
    rate = Decimal(rate)
    return rate if source == from_currency else (Decimal(1) / rate).quantize(Decimal("1E-10"))


@cache
def _account_statements(dialect: str, by_company: bool, holds: bool):
    """Built once per dialect and shape (a customer's invoices found by company or by contact; whether credit
    holds are looked up): the balances by currency with the credit holds of `:companies`, and the newest
    `:limit` invoices with the newest `:limit` payments, each one UNION ALL. `:ids` are the customer's companies
    or contacts, `:today` the date after which an invoice is overdue."""
    owed = Invoice.total - Invoice.paid

    def of_customer(model):
        return ids_param(dialect, model.company_id if by_company else model.contact_id, "ids")

    figures = [select(literal("balance").label("part"), Invoice.currency.label("currency"),
                      func.sum(owed).label("outstanding"),
                      func.sum(case((Invoice.due_on < bindparam("today", type_=Date), owed), else_=0))
                      .label("overdue"),
                      cast(null(), String).label("reason"))  # typed: PostgreSQL types a union's NULLs early
               .where(of_customer(Invoice), Invoice.status == "issued").group_by(Invoice.currency)]
    if holds:
        figures.append(select(literal("hold"), null(), null(), null(), CreditHold.reason)
                       .where(ids_param(dialect, CreditHold.company_id, "companies"), CreditHold.on_hold.is_(True)))
    limit = bindparam("limit", type_=Integer)
    invoices = select(literal("invoice").label("part"), Invoice.id, Invoice.number, Invoice.status,
                      Invoice.issued_on, Invoice.due_on, Invoice.currency, Invoice.total.label("amount"),
                      owed.label("outstanding"), Invoice.created_at.label("at"),
                      cast(null(), String).label("reference")) \
        .where(of_customer(Invoice)).order_by(Invoice.created_at.desc(), Invoice.id.desc()).limit(limit).subquery()
    payments = select(literal("payment"), Payment.id, Invoice.number, cast(null(), String).label("status"),
                      cast(null(), Date).label("issued_on"), cast(null(), Date).label("due_on"), Payment.currency,
                      Payment.amount, cast(null(), Numeric).label("outstanding"), Payment.received_at,
                      Payment.reference) \
        .join(Invoice, Invoice.id == Payment.invoice_id) \
        .where(of_customer(Payment)).order_by(Payment.received_at.desc(), Payment.id.desc()).limit(limit).subquery()
    return union_all(*figures), union_all(select(invoices), select(payments))


def customer_account(session: Session, customer: dict[str, Any], limit: int) -> dict[str, Any]:
    """Balances per currency (issued invoices: outstanding, and overdue past their due date), the credit
    hold, and the newest `limit` invoices and payments of a customer: two statements, each a UNION ALL."""
    by_company = customer.get("kind") == "company"
    company_ids = list(customer.get("company_ids") or [])
    ids = (company_ids or [customer["id"]]) if by_company else list(customer.get("contact_ids") or [customer["id"]])
    figures, newest_rows = _account_statements(session.get_bind().dialect.name, by_company, bool(company_ids))
    params = {"ids": ids, "companies": company_ids, "today": today(), "limit": max(limit, 0)}
    rows = session.execute(figures, params).all()
    holds = [r.reason for r in rows if r.part == "hold"]
    account = {"balances": [{"currency": r.currency, "outstanding": money(r.outstanding or 0),
                             "overdue": money(r.overdue or 0)}
                            for r in sorted((r for r in rows if r.part == "balance"), key=lambda r: r.currency)],
               "credit_hold": bool(holds), "credit_hold_reason": holds[0] if holds else None,
               "invoices": [], "payments": []}
    if limit <= 0:
        return account
    newest = sorted(session.execute(newest_rows, params), key=lambda r: (r.at, r.id), reverse=True)
    account["invoices"] = [{"id": str(i.id), "number": i.number, "status": i.status, "issued_on": i.issued_on,
                            "due_on": i.due_on, "currency": i.currency, "total": money(i.amount),
                            "outstanding": money(i.outstanding), "created_at": _utc(i.at)}
                           for i in newest if i.part == "invoice"]
    account["payments"] = [{"id": str(p.id), "invoice_number": p.number, "received_at": _utc(p.at),
                            "currency": p.currency, "amount": money(p.amount), "reference": p.reference}
                           for p in newest if p.part == "payment"]
    return account


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def status_label(status: str) -> str:
    return {"draft": gettext("draft"), "issued": gettext("issued"), "paid": gettext("paid"),
            "void": gettext("void")}.get(status, status)
