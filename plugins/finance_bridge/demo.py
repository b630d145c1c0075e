"""Demo data of the finance bridge: bilingual invoices and payments for a few demo customers (so their 360°
view shows balances, overdue amounts and a last payment), a credit hold and exchange rates for the reports."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from .models import Invoice
from .services import (
    create_invoice,
    crm_customers,
    issue_invoice,
    record_payment,
    set_credit_hold,
    set_rate,
    today,
)

# key, company external id, currency, lines [(description, quantity, unit price)], issued days ago (None: draft),
# payments [(days ago, amount, reference)]
INVOICES = [
    ("demo-inv-1", "demo-co-1", "CNY", [("门店收银系统年度维护 / POS system annual maintenance", "1", "48000.00")],
     75, [(40, "20000.00", "招商银行转账 / CMB transfer 0091")]),
    ("demo-inv-2", "demo-co-1", "CNY", [("会员积分模块 / Loyalty points module", "2", "15000.00"),
                                        ("实施服务（人天）/ Implementation (person-days)", "10", "1800.00")],
     10, []),
    ("demo-inv-3", "demo-co-3", "MYR", [("Warehouse scanners 仓库扫描枪", "12", "950.00")],
     50, [(20, "11400.00", "Maybank ref MJ-2231")]),
    ("demo-inv-4", "demo-co-4", "SGD", [("Fleet tracking subscription 车队追踪订阅", "12", "420.00")],
     95, []),
    ("demo-inv-5", "demo-co-4", "SGD", [("Route planning add-on 路线规划附加模块", "1", "3600.00")], None, []),
]
HOLDS = [("demo-co-4", "逾期超过 60 天 / More than 60 days overdue")]
RATES = [("USD", "CNY", "7.1000"), ("MYR", "CNY", "1.5500"), ("SGD", "CNY", "5.3000"), ("EUR", "CNY", "7.7000")]


def load(session, users) -> None:
    """Add the demo invoices, payments, credit hold and rates once (an invoice is known by its key)."""
    found = crm_customers(external_ids={row[1] for row in INVOICES} | {h[0] for h in HOLDS})["companies"]
    companies = {c["external_id"]: (c["id"], c["name"]) for c in found.values()}
    done = set(session.scalars(select(Invoice.idempotency_key).where(
        Invoice.idempotency_key.in_([row[0] for row in INVOICES]))))
    now = dt.datetime.now(dt.UTC)
    recorder = users.get("demo_manager")
    for key, company, currency, lines, issued_days_ago, payments in INVOICES:
        if key in done or company not in companies:
            continue
        company_id, name = companies[company]
        answer = create_invoice(session, {
            "idempotency_key": key, "customer": {"company_id": company_id, "contact_id": None, "name": name},
            "currency": currency, "payment_terms_days": 30, "reference": "演示 / Demo",
            "lines": [{"description": text, "quantity": Decimal(qty), "unit_price": Decimal(price),
                       "amount": Decimal(qty) * Decimal(price)} for text, qty, price in lines]})
        invoice = session.get(Invoice, int(answer["id"]))
        invoice.created_at = now - dt.timedelta(days=(issued_days_ago or 0) + 2)
        if issued_days_ago is None:
            continue
        issue_invoice(session, invoice, on=today() - dt.timedelta(days=issued_days_ago))
        for days_ago, amount, reference in payments:
            record_payment(session, invoice, Decimal(amount), received_at=now - dt.timedelta(days=days_ago),
                           reference=reference, user_id=recorder.id if recorder is not None else None)
    for company, reason in HOLDS:
        if company in companies:
            set_credit_hold(session, companies[company][0], True, reason)
    for source, target, rate in RATES:
        set_rate(session, source, target, dt.date(2024, 1, 1), Decimal(rate))
