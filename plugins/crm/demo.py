"""Bilingual demo customers for `bigledger demo` (idempotent: rows are found by external id)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from bigledger_core.db import utcnow

from .models import (
    Activity,
    Company,
    Contact,
    ContactCompany,
    ContactRole,
    CustomField,
    Email,
    Phone,
    Tag,
)

TAGS = [("重点客户 / Key account", "#d9534f"), ("展会线索 / Trade fair", "#5bc0de"), ("东南亚 / SEA", "#5cb85c")]
# external id, name, English name, industry, region, status, parent, owner, tags
COMPANIES = [
    ("demo-co-1", "华夏零售集团", "Huaxia Retail Group", "零售 Retail", "华东 East China", "customer", None,
     "demo_rep", [0]),
    ("demo-co-2", "华夏零售（苏州）有限公司", "Huaxia Retail Suzhou", "零售 Retail", "华东 East China", "customer",
     "demo-co-1", "demo_rep", []),
    ("demo-co-3", "Maju Jaya Sdn Bhd", "Maju Jaya Sdn Bhd", "制造 Manufacturing", "马来西亚 Malaysia", "prospect",
     None, "demo_rep3", [2]),
    ("demo-co-4", "狮城物流私人有限公司", "Lion City Logistics Pte Ltd", "物流 Logistics", "新加坡 Singapore",
     "partner", None, "demo_rep3", [2]),
]
# external id, full name, English name, title, company, role code, phone, email, owner, tags
CONTACTS = [
    ("demo-ct-1", "张伟", "Zhang Wei", "采购总监 Purchasing Director", "demo-co-1", "decision_maker",
     "138 0013 8000", "zhang.wei@huaxia-retail.example.com", "demo_rep", [0]),
    ("demo-ct-2", "李娜", "Li Na", "门店运营经理 Store Operations Manager", "demo-co-2", "user",
     "0512-6288 1234", "li.na@huaxia-retail.example.com", "demo_rep2", []),
    ("demo-ct-3", "Ahmad bin Ismail", None, "Operations Manager 运营经理", "demo-co-3", "influencer",
     "+60 12-345 6789", "ahmad@majujaya.example.com", "demo_rep3", [1]),
    ("demo-ct-4", "陈美玲", "Tan Mei Ling", "财务经理 Finance Manager", "demo-co-4", "decision_maker",
     "+65 9123 4567", "meiling.tan@lioncity.example.com", "demo_rep3", [2]),
]
ACTIVITIES = [
    ("demo-ct-1", "call", "电话确认第四季度订单 / Call: Q4 order confirmed", "下单意向强 / Strong intent", 15, 2),
    ("demo-ct-1", "meeting", "上海总部拜访 / Visit at Shanghai HQ", "同意试点 / Agreed to a pilot", 90, 10),
    ("demo-ct-3", "email", "发送产品目录 / Sent the product catalogue", None, None, 5),
    ("demo-ct-4", "note", "偏好英文合同 / Prefers contracts in English", None, None, 20),
]


def load(session, users) -> None:
    tags = {}
    for name, color in TAGS:
        tag = session.scalar(select(Tag).where(Tag.name == name)) or Tag(name=name, color=color)
        session.add(tag)
        tags[len(tags)] = tag
    if session.scalar(select(CustomField).where(CustomField.entity == "contact", CustomField.key == "wechat")) is None:
        session.add(CustomField(entity="contact", key="wechat", label="微信号", label_en="WeChat ID", type="text",
                                pattern=r"[A-Za-z][-_A-Za-z0-9]{5,19}", position=1))
    companies: dict[str, Company] = {}
    for ext, name, name_en, industry, region, status, parent, owner, tag_ids in COMPANIES:
        company = session.scalar(select(Company).where(Company.external_id == ext))
        if company is None:
            company = Company(external_id=ext, name=name)
            session.add(company)
        company.name_en, company.industry, company.region, company.status = name_en, industry, region, status
        company.parent = companies.get(parent) if parent else None
        company.owner = users.get(owner)
        company.tags = [tags[i] for i in tag_ids]
        companies[ext] = company
    session.flush()
    roles = {role.code: role for role in session.scalars(select(ContactRole))}
    contacts: dict[str, Contact] = {}
    for ext, full, name_en, title, company, role, phone, email, owner, tag_ids in CONTACTS:
        contact = session.scalar(select(Contact).where(Contact.external_id == ext))
        if contact is None:
            contact = Contact(external_id=ext, full_name=full)
            session.add(contact)
            session.flush()
            session.add_all([
                ContactCompany(contact_id=contact.id, company_id=companies[company].id, role=roles.get(role),
                               is_primary=True),
                Phone(contact_id=contact.id, kind="mobile", raw=phone, is_primary=True),
                Email(contact_id=contact.id, kind="work", address=email, is_primary=True)])
        contact.name_en, contact.title, contact.owner = name_en, title, users.get(owner)
        contact.tags = [tags[i] for i in tag_ids]
        contacts[ext] = contact
    session.flush()
    if session.scalar(select(Activity.id).where(Activity.subject == ACTIVITIES[0][2])) is None:
        now = utcnow()
        for ext, kind, subject, outcome, minutes, days_ago in ACTIVITIES:
            session.add(Activity(kind=kind, subject=subject, outcome=outcome, duration_minutes=minutes,
                                 contact_id=contacts[ext].id, occurred_at=now - dt.timedelta(days=days_ago),
                                 user=contacts[ext].owner))
