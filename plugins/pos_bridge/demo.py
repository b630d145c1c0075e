"""Bilingual demo purchases and loyalty cards for a few demo contacts, through the same command a POS
terminal uses (`record_sale`), so they are matched by phone and e-mail like real sales."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from bigledger_core.db import utcnow

from .services import record_sale

SH = "上海南京路店 / Shanghai Nanjing Rd"
SZ = "苏州观前街店 / Suzhou Guanqian St"
KL = "吉隆坡柏威年店 / KL Pavilion"
TEA = ("TEA-01", "有机绿茶礼盒 / Organic green tea gift box", "268.00")
RICE = ("RICE-05", "五常大米 5kg / Wuchang rice 5 kg", "89.90")
OIL = ("OIL-02", "压榨花生油 / Pressed peanut oil", "129.00")
WINE = ("WINE-12", "宁夏红酒 / Ningxia red wine", "3200.00")
# receipt, store, days ago, currency, lines [(product, quantity)], customer, loyalty
SALES = [
    ("DEMO-SH-0001", SH, 3, "CNY", [(WINE, 3), (TEA, 2)],
     {"phone": "138 0013 8000", "card": "8800 0001"}, {"tier": "金卡 Gold", "points": 12860}),
    ("DEMO-SH-0002", SH, 41, "CNY", [(TEA, 4), (OIL, 2)], {"card": "8800 0001"}, None),
    ("DEMO-SH-0003", SH, 200, "CNY", [(RICE, 6)], {"card": "8800 0001"}, None),
    ("DEMO-SZ-0001", SZ, 12, "CNY", [(RICE, 2), (OIL, 1)],
     {"email": "li.na@huaxia-retail.example.com", "card": "8800 0002"}, {"tier": "银卡 Silver", "points": 2310}),
    ("DEMO-KL-0001", KL, 25, "MYR", [(("TEA-01", "有机绿茶礼盒 / Organic green tea gift box", "158.00"), 1)],
     {"phone": "+60 12-345 6789"}, None),
]


def load(session, users) -> None:
    now = utcnow()
    for receipt, store, days_ago, currency, lines, customer, loyalty in SALES:
        sold_at = (now - dt.timedelta(days=days_ago)).replace(hour=10, minute=30, second=0, microsecond=0)
        items = [{"sku": sku, "name": name, "quantity": str(quantity), "unit_price": price}
                 for (sku, name, price), quantity in lines]
        total = sum(quantity * Decimal(price) for (_s, _n, price), quantity in lines)
        data = {"receipt": receipt, "store": store, "sold_at": sold_at.isoformat(), "currency": currency,
                "total": str(total), "lines": items, "customer": customer}
        if loyalty:
            data["loyalty"] = loyalty
        record_sale(session, data, create_contacts=False)
