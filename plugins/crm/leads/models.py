"""Leads: people and companies not yet qualified, with where they came from, what they did (facts), their
score and why, who they are assigned to, and what they became when converted.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask_appbuilder import Model
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from bigledger_core.db import utcnow
from bigledger_core.models import OwnedMixin

from ..models import CustomJSON

LEAD_STATUSES = ("new", "working", "nurturing", "qualified", "converted", "disqualified")
LEAD_SOURCES = ("form", "email", "api", "import", "manual", "referral", "event", "campaign", "other")


class Lead(OwnedMixin, Model):
    """A prospective customer: a person (and perhaps their company) before qualification."""

    __tablename__ = "crm_lead"
    __table_args__ = (
        Index("ix_crm_lead_status", "status"),
        Index("ix_crm_lead_company_name_lower", func.lower(text("company_name"))),
        Index("ix_crm_lead_channel_created", "channel", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    title: Mapped[str | None] = mapped_column(String(200))
    company_name: Mapped[str | None] = mapped_column(String(200))
    company_size: Mapped[int | None] = mapped_column(Integer)
    industry: Mapped[str | None] = mapped_column(String(100), index=True)
    website: Mapped[str | None] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(50))
    phone_e164: Mapped[str | None] = mapped_column(String(20), index=True)
    country: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(100))
    address: Mapped[str | None] = mapped_column(String(300))
    language: Mapped[str | None] = mapped_column(String(10))
    timezone: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="new")
    score: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rule_set_version: Mapped[int | None] = mapped_column(Integer)
    qualified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    email_opens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    email_clicks: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    source: Mapped[str] = mapped_column(String(20), nullable=False, default="manual", index=True)
    channel: Mapped[str | None] = mapped_column(String(100))
    campaign: Mapped[str | None] = mapped_column(String(200), index=True)
    utm_source: Mapped[str | None] = mapped_column(String(200))
    utm_medium: Mapped[str | None] = mapped_column(String(200))
    utm_campaign: Mapped[str | None] = mapped_column(String(200))
    utm_term: Mapped[str | None] = mapped_column(String(200))
    utm_content: Mapped[str | None] = mapped_column(String(200))
    referrer: Mapped[str | None] = mapped_column(String(1000))
    consent: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    consent_text: Mapped[str | None] = mapped_column(Text)
    consent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    disqualify_reason: Mapped[str | None] = mapped_column(String(500))
    converted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    conversion: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    form_id: Mapped[int | None] = mapped_column(ForeignKey("crm_lead_form.id", ondelete="SET NULL"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="SET NULL"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="SET NULL"), index=True)
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("crm_deal.id", ondelete="SET NULL"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    search_text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    custom: Mapped[dict] = mapped_column(CustomJSON, nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr.directive
    def __mapper_args__(cls):  # optimistic locking: a stale save raises StaleDataError
        return {"version_id_col": cls.__table__.c.version}

    contact = relationship("Contact")
    company = relationship("Company")
    deal = relationship("Deal")
    facts = relationship("LeadFact", back_populates="lead", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return self.name


class LeadFact(Model):
    """Something a lead did (visited the pricing page, downloaded the white paper…): a key, how often,
    first and last time. Scoring rules test facts by name."""

    __tablename__ = "crm_lead_fact"
    __table_args__ = (UniqueConstraint("lead_id", "fact", name="uq_crm_lead_fact"),
                      Index("ix_crm_lead_fact_fact", "fact", "lead_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("crm_lead.id", ondelete="CASCADE"), nullable=False)
    fact: Mapped[str] = mapped_column(String(100), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    source: Mapped[str | None] = mapped_column(String(50))
    first_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    lead = relationship(Lead, back_populates="facts")


class ScoringRuleSet(Model):
    """One version of the scoring rules as loaded (the newest active one applies)."""

    __tablename__ = "crm_scoring_rule_set"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    document: Mapped[dict] = mapped_column(JSON, nullable=False)
    threshold: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))
    rescored_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    rescored_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Assignment(Model):
    """Who a lead was assigned to, by whom or which rule, and when."""

    __tablename__ = "crm_lead_assignment"
    __table_args__ = (Index("ix_crm_lead_assignment_lead", "lead_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("crm_lead.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("bl_team.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(String(300), nullable=False)
    by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class ChannelCost(Model):
    """What a channel (and campaign) cost in a period, for source ROI."""

    __tablename__ = "crm_channel_cost"
    __table_args__ = (UniqueConstraint("channel", "campaign", "period_start", name="uq_crm_channel_cost"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(100), nullable=False)
    campaign: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    period_start: Mapped[dt.date] = mapped_column(Date, nullable=False)
    period_end: Mapped[dt.date] = mapped_column(Date, nullable=False)
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="CNY")


class LeadForm(Model):
    """A web form that captures leads: its public address, fields, consent text, thank-you and target team."""

    __tablename__ = "crm_lead_form"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    slug: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    title: Mapped[str | None] = mapped_column(String(200))
    title_en: Mapped[str | None] = mapped_column(String(200))
    fields: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    consent_required: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    consent_text: Mapped[str | None] = mapped_column(Text)
    consent_text_en: Mapped[str | None] = mapped_column(Text)
    thank_you: Mapped[str | None] = mapped_column(Text)
    thank_you_en: Mapped[str | None] = mapped_column(Text)
    redirect_url: Mapped[str | None] = mapped_column(String(1000))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("bl_team.id", ondelete="SET NULL"), index=True)
    channel: Mapped[str | None] = mapped_column(String(100))
    campaign: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    team = relationship("Team")

    def __repr__(self) -> str:
        return self.name


class FormToken(Model):
    """A form token that was used once: a second submission with it is a replay."""

    __tablename__ = "crm_form_token"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    form_id: Mapped[int] = mapped_column(ForeignKey("crm_lead_form.id", ondelete="CASCADE"), nullable=False,
                                         index=True)
    used_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                 index=True)


class RepSetting(Model):
    """How leads reach a sales rep: weight in round robin, capacity (open leads at most), availability."""

    __tablename__ = "crm_rep_setting"

    user_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), primary_key=True)
    weight: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    max_open_leads: Mapped[int | None] = mapped_column(Integer)
    available: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    away_until: Mapped[dt.date | None] = mapped_column(Date)

    user = relationship("User")


class AssignmentRule(Model):
    """Leads matching a criterion (the rule language) go to a team or a user; rules are tried in order."""

    __tablename__ = "crm_assignment_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    criterion: Mapped[str] = mapped_column(Text, nullable=False)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("bl_team.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    team = relationship("Team")
    user = relationship("User")

    def __repr__(self) -> str:
        return self.name


class RoundRobin(Model):
    """Where round robin stands in a team: the row is locked while a lead is assigned (race-free)."""

    __tablename__ = "crm_round_robin"

    team_id: Mapped[int] = mapped_column(ForeignKey("bl_team.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_user_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))


class DuplicateCandidate(Model):
    """A likely duplicate pair (lead/contact with lead/contact) for review: merge, or not a duplicate
    (remembered, so the pair is not proposed again)."""

    __tablename__ = "crm_duplicate_candidate"
    __table_args__ = (UniqueConstraint("kind_a", "id_a", "kind_b", "id_b", name="uq_crm_duplicate_pair"),
                      Index("ix_crm_duplicate_status", "status", "score"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind_a: Mapped[str] = mapped_column(String(10), nullable=False)
    id_a: Mapped[int] = mapped_column(Integer, nullable=False)
    kind_b: Mapped[str] = mapped_column(String(10), nullable=False)
    id_b: Mapped[int] = mapped_column(Integer, nullable=False)
    score: Mapped[Decimal] = mapped_column(Numeric(6, 4), nullable=False)
    reasons: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="open")
    found_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))


class ConsentRecord(Model):
    """Consent given or withdrawn by a person: what they agreed to (the text shown), when and how."""

    __tablename__ = "crm_consent_record"
    __table_args__ = (Index("ix_crm_consent_record_address", "address_hash", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address_hash: Mapped[str | None] = mapped_column(String(64))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("crm_lead.id", ondelete="SET NULL"), index=True)
    action: Mapped[str] = mapped_column(String(20), nullable=False)  # given, withdrawn
    source: Mapped[str] = mapped_column(String(100), nullable=False)  # form:<slug>, unsubscribe link, …
    text: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
