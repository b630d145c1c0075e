"""Demo pipelines and deals for `bigledger demo` (idempotent: pipelines by name, deals by name)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from bigledger_core.db import utcnow

from ..models import Activity, Company, Contact
from . import config
from .models import Competitor, Deal, DealCompetitor, DealLine, Pipeline
from .services import create_deal, load_pipeline, lose_deal, move_deal, win_deal

SEED = Path(__file__).with_name("seed.yaml")
RENEWALS = """pipeline:
  name: 续约 Renewals
  stages:
    - name: 续约提醒 Renewal due
      probability: 60%
      activities: ["续约提醒电话 Renewal call"]
    - name: 报价 Quote sent
      probability: 80%
      activities: ["发送续约报价 Send renewal quote"]
    - name: 已续约 Renewed
      probability: 100%
      activities: ["开具发票 Issue invoice"]
"""
COMPETITORS = [("用友 Yonyou", "https://www.yonyou.com"), ("金蝶 Kingdee", "https://www.kingdee.com"),
               ("SAP Business One", "https://www.sap.com")]
# name, company external id, contact external id, owner, stage, outcome, close in days, lines, competitor
DEALS = [
    ("华夏零售 ERP 升级 / ERP upgrade", "demo-co-1", "demo-ct-1", "demo_rep", "谈判", None, 20,
     [("ERP 标准版许可 / ERP licence", 50, "3200", "0.1", "once", None),
      ("实施服务 / Implementation (days)", 40, "2500", "0", "once", None)], 0),
    ("苏州门店 POS 推广 / POS roll-out", "demo-co-2", "demo-ct-2", "demo_rep2", "提案", None, 45,
     [("POS 云订阅 / POS cloud subscription", 30, "199", "0", "month", 24)], 1),
    ("Maju Jaya 仓储系统 / Warehouse system", "demo-co-3", "demo-ct-3", "demo_rep3", "资质认定", None, 60,
     [("WMS licence 仓储许可", 1, "88000", "0.05", "once", None)], 2),
    ("狮城物流年度服务 / Annual support", "demo-co-4", "demo-ct-4", "demo_rep3", "寻找客户", None, 90, [], None),
    ("华夏零售 BI 报表 / BI reports", "demo-co-1", "demo-ct-1", "demo_rep", "成交", "won", -10,
     [("BI 报表模块 / BI module", 1, "36000", "0", "once", None)], None),
    ("苏州门店自助收银 / Self-checkout", "demo-co-2", "demo-ct-2", "demo_rep2", "提案", "lost", -5,
     [("自助收银机 / Self-checkout kiosk", 6, "15800", "0", "once", None)], 1),
]

# the product codes of the demo's line items (the inventory bridge's demo stocks and prices them)
PRODUCT_CODES = {"ERP 标准版许可 / ERP licence": "ERP-LIC-STD", "实施服务 / Implementation (days)": "SVC-IMPL-DAY",
                 "POS 云订阅 / POS cloud subscription": "POS-CLOUD-M", "WMS licence 仓储许可": "WMS-LIC",
                 "BI 报表模块 / BI module": "BI-MOD", "自助收银机 / Self-checkout kiosk": "KIOSK-SC"}


def load(session, users) -> None:
    """Load the product page's pipeline (default) and a renewals pipeline, and demo deals in both."""
    if session.scalar(select(Pipeline).where(Pipeline.name == "销售管道")) is None:
        load_pipeline(session, config.parse(SEED.read_text(encoding="utf-8")), make_default=True)
    if session.scalar(select(Pipeline).where(Pipeline.name == "续约 Renewals")) is None:
        load_pipeline(session, config.parse(RENEWALS))
    competitors = []
    for name, website in COMPETITORS:
        competitor = session.scalar(select(Competitor).where(Competitor.name == name))
        if competitor is None:
            competitor = Competitor(name=name, website=website)
            session.add(competitor)
        competitors.append(competitor)
    session.flush()
    existing = set(session.scalars(select(Deal.name).where(Deal.name.in_([d[0] for d in DEALS]))))
    companies = {c.external_id: c for c in session.scalars(select(Company).where(Company.external_id.like("demo-%")))}
    contacts = {c.external_id: c for c in session.scalars(select(Contact).where(Contact.external_id.like("demo-%")))}
    today = utcnow().date()
    for name, company, contact, owner, stage, outcome, days, lines, competitor in DEALS:
        if name in existing or company not in companies:
            continue
        user = users.get(owner)
        deal = Deal(name=name, company_id=companies[company].id, owner_id=user.id if user else None,
                    contact_id=contacts[contact].id if contact in contacts else None, currency="CNY",
                    expected_close=today + dt.timedelta(days=days), source="demo", amount=Decimal(120000),
                    lines=[DealLine(product=p, product_code=PRODUCT_CODES.get(p), quantity=Decimal(q),
                                    unit_price=Decimal(u), discount=Decimal(d),
                                    billing_period=b, term_months=t, position=i)
                           for i, (p, q, u, d, b, t) in enumerate(lines)])
        if user is not None and user.teams:
            deal.team_id = user.teams[0].id
        create_deal(session, deal, user_id=deal.owner_id)
        if competitor is not None:
            session.add(DealCompetitor(deal_id=deal.id, competitor_id=competitors[competitor].id,
                                       strengths="价格低 / Lower price", weaknesses="实施周期长 / Slow roll-out"))
        target = stage if outcome != "won" else None
        if target and target != deal.stage.name:
            for step in deal.pipeline.stages[1:]:
                _finish_tasks(session, deal)
                move_deal(session, deal, step, user_id=deal.owner_id)
                if step.name == target:
                    break
        if outcome == "won":
            _finish_tasks(session, deal)
            win_deal(session, deal, reason="方案与服务最优 / Best solution and service", user_id=deal.owner_id)
        elif outcome == "lost":
            lose_deal(session, deal, reason="价格高于竞品 / Priced above the competitor",
                      lost_to_id=competitors[competitor].id, user_id=deal.owner_id)


def _finish_tasks(session, deal) -> None:
    session.flush()
    for task in session.scalars(select(Activity).where(Activity.deal_id == deal.id, Activity.done.is_(False))):
        task.done = True
