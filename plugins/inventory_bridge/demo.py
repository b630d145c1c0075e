"""Demo data of the inventory bridge: bilingual products with the codes of the CRM demo's line items, stock in two
warehouses (the ERP licences are short for the ERP upgrade deal, the WMS licence is out of stock), a default price
list per currency with quantity tiers, and a contract price list for 华夏零售 (demo-co-1)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from .models import CustomerPriceList, PriceList, PriceListItem, Product, Stock
from .services import ask_inventory, today

# code, name (zh), English name, unit, stocked, active
PRODUCTS = [
    ("ERP-LIC-STD", "ERP 标准版许可", "ERP standard licence", "套 / seat", True, True),
    ("SVC-IMPL-DAY", "实施服务（人天）", "Implementation (person-day)", "人天 / day", False, True),
    ("POS-CLOUD-M", "POS 云订阅（月）", "POS cloud subscription (month)", "店·月 / store-month", False, True),
    ("WMS-LIC", "仓储管理系统许可", "WMS licence", "套 / licence", True, True),
    ("BI-MOD", "BI 报表模块", "BI reports module", "套 / module", False, True),
    ("KIOSK-SC", "自助收银机", "Self-checkout kiosk", "台 / unit", True, True),
    ("POS-TERM", "POS 收银终端", "POS terminal", "台 / unit", True, True),
    ("SCAN-01", "仓库扫描枪（旧款）", "Warehouse scanner (old model)", "把 / unit", True, False),
]
# code, warehouse, on hand, reserved
STOCK = [
    ("ERP-LIC-STD", "SH-01", "40", "8"), ("WMS-LIC", "SH-01", "0", "0"), ("KIOSK-SC", "SH-01", "9", "2"),
    ("KIOSK-SC", "KL-01", "5", "0"), ("POS-TERM", "SH-01", "120", "20"), ("POS-TERM", "KL-01", "35", "0"),
    ("SCAN-01", "KL-01", "3", "0"),
]
# name, currency, default, valid from (days ago), prices [(code, from quantity, unit price)], companies
PRICE_LISTS = [
    ("标准价目表 / Standard prices (CNY)", "CNY", True, 365,
     [("ERP-LIC-STD", "1", "3200.00"), ("ERP-LIC-STD", "20", "2980.00"), ("SVC-IMPL-DAY", "1", "2500.00"),
      ("POS-CLOUD-M", "1", "199.00"), ("POS-CLOUD-M", "50", "179.00"), ("WMS-LIC", "1", "88000.00"),
      ("BI-MOD", "1", "36000.00"), ("KIOSK-SC", "1", "15800.00"), ("POS-TERM", "1", "2600.00"),
      ("POS-TERM", "10", "2450.00")], []),
    ("Standard prices (MYR) 标准价目表", "MYR", True, 365,
     [("WMS-LIC", "1", "56000.00"), ("KIOSK-SC", "1", "10200.00"), ("POS-TERM", "1", "1680.00")], []),
    ("华夏零售协议价 / Huaxia Retail contract prices", "CNY", False, 90,
     [("ERP-LIC-STD", "1", "2900.00"), ("ERP-LIC-STD", "50", "2750.00"), ("SVC-IMPL-DAY", "1", "2300.00")],
     ["demo-co-1"]),
]


def load(session, users) -> None:
    """Add the demo products, stock, price lists and the contract list once (each known by code or name)."""
    products = {p.code: p for p in session.scalars(select(Product).where(Product.code.in_([r[0] for r in PRODUCTS])))}
    for code, name, name_en, unit, stocked, active in PRODUCTS:
        if code not in products:
            products[code] = Product(code=code, name=name, name_en=name_en, unit=unit, stocked=stocked, active=active)
            session.add(products[code])
    session.flush()
    held = set(session.execute(select(Stock.product_id, Stock.warehouse)).tuples())
    for code, warehouse, on_hand, reserved in STOCK:
        if (products[code].id, warehouse) not in held:
            session.add(Stock(product_id=products[code].id, warehouse=warehouse, on_hand=Decimal(on_hand),
                              reserved=Decimal(reserved)))
    known = set(session.scalars(select(PriceList.name).where(PriceList.name.in_([r[0] for r in PRICE_LISTS]))))
    external = sorted({ext for row in PRICE_LISTS for ext in row[5]})
    found = ask_inventory("crm_customers", company_ids=[], contact_ids=[], external_ids=external) or {}
    companies = {c["external_id"]: c["id"] for c in (found.get("companies") or {}).values()}
    for name, currency, default, days_ago, items, customers in PRICE_LISTS:
        if name in known:
            continue
        price_list = PriceList(name=name, currency=currency, is_default=default,
                               valid_from=today() - dt.timedelta(days=days_ago))
        price_list.items = [PriceListItem(product_id=products[code].id, min_quantity=Decimal(quantity),
                                          price=Decimal(price)) for code, quantity, price in items]
        session.add(price_list)
        session.flush()
        session.add_all([CustomerPriceList(company_id=companies[ext], price_list_id=price_list.id)
                         for ext in customers if ext in companies])
