"""Demo leads for `bigledger demo` (idempotent by idempotency key): the product page's scoring rules and
bilingual leads from several channels, some qualified by their facts."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from .models import Lead, ScoringRuleSet
from .services import create_lead, load_rule_set, record_fact

RULES = Path(__file__).with_name("scoring_seed.json")
# key, name, company, size, industry, e-mail, phone, source, channel, campaign, utm_source, facts, owner
LEADS = [
    ("demo-lead-1", "王强", "深圳云启科技有限公司 Cloudstart Tech", 320, "科技", "wang.qiang@cloudstart.example.com",
     "139 2233 4455", "form", "官网 Website", "2026 春季展会 Spring Expo", "baidu",
     ["访问了定价页", "下载了白皮书"], "demo_rep"),
    ("demo-lead-2", "Nurul Huda", "Borneo Foods Sdn Bhd", 150, "食品 Food", "nurul@borneofoods.example.com",
     "+60 13-222 3344", "event", "展会 Trade fair", "2026 春季展会 Spring Expo", None, ["email_open"] * 4,
     "demo_rep3"),
    ("demo-lead-3", "陈晓婷", "杭州明阳贸易有限公司 Mingyang Trading", 60, "贸易", "chen.xt@mingyang.example.com",
     "0571-8765 4321", "email", "邮件 E-mail", None, None, ["visited_website"], "demo_rep2"),
    ("demo-lead-4", "David Lim", "Straits Engineering Pte Ltd", 1200, "科技", "david.lim@straits-eng.example.com",
     "+65 8123 4567", "api", "合作伙伴 Partner", None, "partner-portal", ["requested_demo"], "demo_rep3"),
    ("demo-lead-5", "刘洋", None, None, None, "liu.yang@example.com", None, "manual", "电话 Phone", None, None, [],
     "demo_rep"),
]


def load(session, users) -> None:
    if session.scalar(select(ScoringRuleSet.id).limit(1)) is None:
        load_rule_set(session, RULES.read_text(encoding="utf-8"))
    for key, name, company, size, industry, email, phone, source, channel, campaign, utm, facts, owner in LEADS:
        if session.scalar(select(Lead.id).where(Lead.idempotency_key == key)) is not None:
            continue
        user = users.get(owner)
        lead, _created = create_lead(session, Lead(
            name=name, company_name=company, company_size=size, industry=industry, email=email, phone=phone,
            source=source, channel=channel, campaign=campaign, utm_source=utm, owner_id=user.id if user else None,
            consent=source == "form", consent_text="同意接收产品资讯 / I agree to receive product news"
            if source == "form" else None), idempotency_key=key)
        for fact in facts:
            record_fact(session, lead, fact, source="demo")
