"""What scoring (and assignment) rules may name about a lead: its fields, its custom fields and its facts,
in Chinese and English. The product page's names — 公司规模, 行业, 邮件开启, 访问了定价页, 下载了白皮书 — are
here exactly as written."""
from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from ..common.rules import FactSpec, FieldSpec, Vocabulary, custom_field
from ..models import CustomField
from .models import Lead, LeadFact

# canonical name, type, Chinese, English, more aliases
FIELDS = [
    ("company_size", "number", "公司规模", "company size", ("employees", "员工人数", "员工数")),
    ("industry", "text", "行业", "industry", ()),
    ("email_opens", "number", "邮件开启", "email opens", ("邮件打开", "opens")),
    ("email_clicks", "number", "邮件点击", "email clicks", ("clicks",)),
    ("title", "text", "职位", "title", ("job title",)),
    ("company_name", "text", "公司名称", "company name", ("公司", "company")),
    ("country", "text", "国家", "country", ()),
    ("city", "text", "城市", "city", ()),
    ("source", "text", "来源", "source", ()),
    ("channel", "text", "渠道", "channel", ()),
    ("campaign", "text", "营销活动", "campaign", ()),
    ("utm_source", "text", "UTM来源", "utm source", ()),
    ("utm_medium", "text", "UTM媒介", "utm medium", ()),
    ("utm_campaign", "text", "UTM活动", "utm campaign", ()),
    ("language", "text", "语言", "language", ()),
    ("status", "text", "状态", "status", ()),
    ("consent", "boolean", "同意营销", "consent", ("marketing consent",)),
    ("created_at", "date", "创建日期", "created", ("created on",)),
]
# key, Chinese, English, more aliases
FACTS = [
    ("visited_pricing_page", "访问了定价页", "visited the pricing page", ("visited pricing page",)),
    ("downloaded_whitepaper", "下载了白皮书", "downloaded the white paper", ("downloaded whitepaper",)),
    ("requested_demo", "申请了演示", "requested a demo", ("requested demo",)),
    ("attended_event", "参加了活动", "attended an event", ("attended event",)),
    ("replied_email", "回复了邮件", "replied to an e-mail", ("replied",)),
    ("visited_website", "访问了网站", "visited the website", ()),
]
KNOWN_FACTS = {key for key, *_ in FACTS}


def fact_key(text: str) -> str | None:
    """The canonical key of a fact named in Chinese, English or by key; None when it is not a known fact."""
    folded = " ".join((text or "").replace("_", " ").split()).casefold()
    for key, zh, en, aliases in FACTS:
        if folded in {key.replace("_", " "), zh.casefold(), en.casefold(), *(a.casefold() for a in aliases)}:
            return key
    return None


def _has(key: str):
    return lambda: exists().where(LeadFact.lead_id == Lead.id, LeadFact.fact == key)


# what nurturing rules may name besides: the score scoring gave (scoring rules cannot name it)
NURTURE_FIELDS = [("score", "number", "分数", "score", ("评分", "得分", "lead score"))]


def lead_vocabulary(session: Session, *, extra: list = ()) -> Vocabulary:
    """The vocabulary of leads: fields, known facts, and the active custom fields of leads."""
    fields = [FieldSpec(name, type_, zh, en, getattr(Lead, name), aliases)
              for name, type_, zh, en, aliases in [*FIELDS, *extra]]
    for field in session.scalars(select(CustomField).where(CustomField.entity == "lead",
                                                           CustomField.active.is_(True))):
        type_ = {"number": "number", "boolean": "boolean"}.get(field.type, "text")
        fields.append(custom_field(Lead.custom, field.key, type_, field.label, field.label_en or field.key,
                                   aliases=(field.key,)))
    facts = [FactSpec(key, zh, en, _has(key), aliases) for key, zh, en, aliases in FACTS]
    return Vocabulary(fields, facts)


def nurture_vocabulary(session: Session) -> Vocabulary:
    """The lead vocabulary of sequence enrollment rules and branches: with the lead's score."""
    return lead_vocabulary(session, extra=NURTURE_FIELDS)


def record_of(lead: Lead, facts: set[str]) -> dict:
    """The lead as `rules.evaluate` reads it."""
    record = {name: getattr(lead, name) for name, *_ in FIELDS}
    record["custom"] = dict(lead.custom or {})
    record["facts"] = facts
    return record
