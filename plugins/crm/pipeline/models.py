"""Sales pipeline records: pipelines and their stages, opportunities (deals) with line items, contacts,
competitors and the stage history every analytic reads.

A deal is `open` while it moves through its pipeline's stages; winning moves it into the won stage (the
last one, 100 %); losing keeps the stage it was lost in and sets status `lost` — the lost outcome that
exists besides the configured stages. Money is Numeric with an ISO currency; probabilities are fractions
(0.25 = 25 %).
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask_appbuilder import Model
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from bigledger_core.db import utcnow
from bigledger_core.models import OwnedMixin

from ..models import CustomJSON

DEAL_STATUSES = ("open", "won", "lost")
BILLING_PERIODS = {"once": 0, "month": 1, "quarter": 3, "year": 12}
MONEY = Numeric(18, 2)


class Pipeline(Model):
    """A sales process: an ordered list of stages. Exactly one pipeline is the default."""

    __tablename__ = "crm_pipeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    name_en: Mapped[str | None] = mapped_column(String(100))
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    key_language: Mapped[str] = mapped_column(String(2), nullable=False, default="zh")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    stages = relationship("Stage", back_populates="pipeline", order_by="Stage.position",
                          cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return self.name


class Stage(Model):
    """A step of a pipeline with its default probability and the activities entering it creates."""

    __tablename__ = "crm_stage"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "name", name="uq_crm_stage_pipeline_name"),
        CheckConstraint("probability >= 0 AND probability <= 1", name="ck_crm_stage_probability"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("crm_pipeline.id", ondelete="CASCADE"), nullable=False,
                                             index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    name_en: Mapped[str | None] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    probability: Mapped[Decimal] = mapped_column(Numeric(5, 4), nullable=False)
    activities: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    activities_required: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    task_due_days: Mapped[int] = mapped_column(Integer, nullable=False, default=3)

    pipeline = relationship(Pipeline, back_populates="stages")

    @property
    def is_won(self) -> bool:
        """The last stage of a pipeline is where won deals go."""
        return self.pipeline is not None and self.pipeline.stages and self.pipeline.stages[-1] is self

    def __repr__(self) -> str:
        return self.name


class Competitor(Model):
    """A company we compete with for deals."""

    __tablename__ = "crm_competitor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    website: Mapped[str | None] = mapped_column(String(300))
    notes: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return self.name


class Deal(OwnedMixin, Model):
    """An opportunity: what we hope to sell to a company (and its people), moving through a pipeline."""

    __tablename__ = "crm_deal"
    __table_args__ = (
        CheckConstraint("company_id IS NOT NULL OR contact_id IS NOT NULL", name="ck_crm_deal_has_customer"),
        CheckConstraint("probability >= 0 AND probability <= 1", name="ck_crm_deal_probability"),
        Index("ix_crm_deal_board", "pipeline_id", "stage_id", "status"),
        Index("ix_crm_deal_stage_cards", "stage_id", "status", "expected_close", "id"),
        Index("ix_crm_deal_close", "status", "expected_close"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="RESTRICT"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="SET NULL"), index=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("crm_pipeline.id", ondelete="RESTRICT"), nullable=False)
    stage_id: Mapped[int] = mapped_column(ForeignKey("crm_stage.id", ondelete="RESTRICT"), nullable=False,
                                          index=True)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="open")
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="CNY")
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    mrr: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    probability: Mapped[Decimal] = mapped_column(Numeric(5, 4), nullable=False, default=Decimal(0))
    probability_reason: Mapped[str | None] = mapped_column(String(300))
    forecast_category: Mapped[str | None] = mapped_column(String(20))
    expected_close: Mapped[dt.date | None] = mapped_column(Date)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    close_reason: Mapped[str | None] = mapped_column(String(500))
    lost_to_id: Mapped[int | None] = mapped_column(ForeignKey("crm_competitor.id", ondelete="SET NULL"), index=True)
    stage_entered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    source: Mapped[str | None] = mapped_column(String(50), index=True)
    channel: Mapped[str | None] = mapped_column(String(100))
    campaign: Mapped[str | None] = mapped_column(String(200))
    lead_id: Mapped[int | None] = mapped_column(Integer, index=True)
    description: Mapped[str | None] = mapped_column(Text)
    custom: Mapped[dict] = mapped_column(CustomJSON, nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr.directive
    def __mapper_args__(cls):  # optimistic locking: a stale save raises StaleDataError
        return {"version_id_col": cls.__table__.c.version}

    company = relationship("Company")
    contact = relationship("Contact")
    pipeline = relationship(Pipeline)
    stage = relationship(Stage)
    lost_to = relationship(Competitor)
    lines = relationship("DealLine", back_populates="deal", cascade="all, delete-orphan", order_by="DealLine.position")
    contacts = relationship("DealContact", back_populates="deal", cascade="all, delete-orphan")
    competitors = relationship("DealCompetitor", back_populates="deal", cascade="all, delete-orphan")
    history = relationship("StageHistory", back_populates="deal", cascade="all, delete-orphan",
                           order_by="StageHistory.entered_at")

    @property
    def weighted_amount(self) -> Decimal:
        return (Decimal(self.amount or 0) * Decimal(self.probability or 0)).quantize(Decimal("0.01"))

    @property
    def arr(self) -> Decimal:
        return Decimal(self.mrr or 0) * 12

    def __repr__(self) -> str:
        return self.name


class DealLine(Model):
    """A product or service on a deal. Recurring lines bill every `billing_period` for `term_months`."""

    __tablename__ = "crm_deal_line"
    __table_args__ = (
        CheckConstraint("quantity >= 0", name="ck_crm_deal_line_quantity"),
        CheckConstraint("discount >= 0 AND discount <= 1", name="ck_crm_deal_line_discount"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("crm_deal.id", ondelete="CASCADE"), nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    product: Mapped[str] = mapped_column(String(200), nullable=False)
    product_code: Mapped[str | None] = mapped_column(String(100), index=True)
    quantity: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False, default=Decimal(1))
    unit_price: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    discount: Mapped[Decimal] = mapped_column(Numeric(5, 4), nullable=False, default=Decimal(0))
    billing_period: Mapped[str] = mapped_column(String(10), nullable=False, default="once")
    term_months: Mapped[int | None] = mapped_column(Integer)

    deal = relationship(Deal, back_populates="lines")

    @property
    def net(self) -> Decimal:
        """Price of one billing of this line after discount."""
        value = Decimal(self.quantity or 0) * Decimal(self.unit_price or 0) * (1 - Decimal(self.discount or 0))
        return value.quantize(Decimal("0.01"))

    @property
    def mrr(self) -> Decimal:
        months = BILLING_PERIODS.get(self.billing_period, 0)
        return (self.net / months).quantize(Decimal("0.01")) if months else Decimal("0.00")

    @property
    def total(self) -> Decimal:
        """Total contract value of the line: one billing, or every billing over the term."""
        months = BILLING_PERIODS.get(self.billing_period, 0)
        if not months:
            return self.net
        billings = max(1, -(-(self.term_months or months) // months))
        return self.net * billings


class DealContact(Model):
    """A person on a deal, with their role in it (decision maker, influencer, user…)."""

    __tablename__ = "crm_deal_contact"
    __table_args__ = (UniqueConstraint("deal_id", "contact_id", name="uq_crm_deal_contact"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("crm_deal.id", ondelete="CASCADE"), nullable=False, index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("crm_contact.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    role_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact_role.id", ondelete="SET NULL"), index=True)

    deal = relationship(Deal, back_populates="contacts")
    contact = relationship("Contact")
    role = relationship("ContactRole")


class DealCompetitor(Model):
    """A competitor on a deal, with what we know about their offer."""

    __tablename__ = "crm_deal_competitor"
    __table_args__ = (UniqueConstraint("deal_id", "competitor_id", name="uq_crm_deal_competitor"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("crm_deal.id", ondelete="CASCADE"), nullable=False, index=True)
    competitor_id: Mapped[int] = mapped_column(ForeignKey("crm_competitor.id", ondelete="CASCADE"), nullable=False,
                                               index=True)
    notes: Mapped[str | None] = mapped_column(Text)
    strengths: Mapped[str | None] = mapped_column(Text)
    weaknesses: Mapped[str | None] = mapped_column(Text)

    deal = relationship(Deal, back_populates="competitors")
    competitor = relationship(Competitor)


class StageHistory(Model):
    """A deal's stay in one stage (or its close): when it entered and left, and who moved it."""

    __tablename__ = "crm_stage_history"
    __table_args__ = (
        Index("ix_crm_stage_history_deal", "deal_id", "entered_at"),
        Index("ix_crm_stage_history_stage", "stage_id", "entered_at"),
        # stage conversion reads every row of a deal by deal_id: an index-only scan on PostgreSQL
        Index("ix_crm_stage_history_conversion", "deal_id",
              postgresql_include=["stage_id", "status", "entered_at"]).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("crm_deal.id", ondelete="CASCADE"), nullable=False)
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("crm_stage.id", ondelete="SET NULL"))
    stage_name: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="open")
    entered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    left_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    entered_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))
    left_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))

    deal = relationship(Deal, back_populates="history")
    stage = relationship(Stage)
    entered_by = relationship("User", foreign_keys=[entered_by_id])


NO_MONTH = dt.date(1, 1, 1)  # the month of a deal without an expected close (open) or a close date (closed)


class DealSummary(Model):
    """Deals added up by pipeline, stage, status, currency, owner, team, month and forecast category: what the
    board's column totals and the forecast read instead of every deal. Kept up to date in the transaction of
    every deal change (`plugins.crm.pipeline.summary`); `summary.rebuild` recomputes it from the deals.

    `month` is the first day of the month of the expected close (open deals) or of the close date in UTC
    (won and lost deals). Key parts a deal may lack are stored as sentinels so that the primary key (and
    with it INSERT … ON CONFLICT) works alike on SQLite and PostgreSQL: owner and team 0, month `NO_MONTH`.
    """

    __tablename__ = "crm_deal_summary"
    __table_args__ = (
        PrimaryKeyConstraint("pipeline_id", "stage_id", "status", "currency", "owner_id", "team_id", "month",
                             "category", name="pk_crm_deal_summary"),
    )

    pipeline_id: Mapped[int] = mapped_column(Integer, nullable=False)
    stage_id: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    owner_id: Mapped[int] = mapped_column(Integer, nullable=False)
    team_id: Mapped[int] = mapped_column(Integer, nullable=False)
    month: Mapped[dt.date] = mapped_column(Date, nullable=False)
    category: Mapped[str] = mapped_column(String(20), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 2), nullable=False, default=Decimal(0))
    weighted: Mapped[Decimal] = mapped_column(Numeric(30, 6), nullable=False, default=Decimal(0))
