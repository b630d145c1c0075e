"""Nurturing: e-mail templates, sequences of steps, enrollments of leads in them, the record of every step
run (with the message it queued and what the recipient did with it), and the suppression list.

A step runs at most once per enrollment: `crm_enrollment_step` has a unique key on (enrollment, step), and
the scheduler inserts that row in the same transaction as the message it queues.
"""
from __future__ import annotations

import datetime as dt

from flask_appbuilder import Model
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from bigledger_core.db import utcnow

from ..leads.models import ConsentRecord  # noqa: F401  (consent is kept with leads; here for nurturing's use)

SEQUENCE_STATUSES = ("draft", "active", "paused", "archived")
STEP_KINDS = ("email", "task", "wait", "branch", "set_status", "set_owner", "enroll", "end")
ENROLLMENT_STATUSES = ("active", "paused", "completed", "exited")
EXIT_REASONS = ("replied", "converted", "qualified", "disqualified", "unsubscribed", "bounced",
                "enrolled_elsewhere", "manual", "erased", "no_email")
ENROLLMENT_SOURCES = ("manual", "form", "rule", "sequence", "api")
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "complaint", "manual", "erased")


class EmailTemplate(Model):
    """An e-mail in Chinese and English: subject and HTML body with merge fields (`{{ lead.name }}`).
    The recipient's language picks the version; the plain-text part is generated from the HTML."""

    __tablename__ = "crm_email_template"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    subject_zh: Mapped[str | None] = mapped_column(String(300))
    html_zh: Mapped[str | None] = mapped_column(Text)
    subject_en: Mapped[str | None] = mapped_column(String(300))
    html_en: Mapped[str | None] = mapped_column(Text)
    marketing: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr.directive
    def __mapper_args__(cls):
        return {"version_id_col": cls.__table__.c.version}

    def __repr__(self) -> str:
        return self.name


class Sequence(Model):
    """An ordered list of steps that leads are enrolled in, by hand, from a web form or by a rule."""

    __tablename__ = "crm_sequence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="draft")
    # automatic enrollment: leads matching the rule, and/or leads captured by the form
    enroll_rule: Mapped[str | None] = mapped_column(Text)
    enroll_form_id: Mapped[int | None] = mapped_column(ForeignKey("crm_lead_form.id", ondelete="SET NULL"),
                                                       index=True)
    # exit conditions (replies, unsubscribes and bounces always end an enrollment)
    exit_on_qualified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    exit_on_converted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # local time of the recipient in which no e-mail is sent ("21:00"–"08:00"); empty: the default
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    activated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr.directive
    def __mapper_args__(cls):
        return {"version_id_col": cls.__table__.c.version}

    enroll_form = relationship("LeadForm")
    steps = relationship("SequenceStep", back_populates="sequence", order_by="SequenceStep.position",
                         primaryjoin="and_(Sequence.id == SequenceStep.sequence_id, SequenceStep.active)",
                         viewonly=True)

    def __repr__(self) -> str:
        return self.name


class SequenceStep(Model):
    """One step of a sequence. Steps are never deleted while a sequence has run: a removed step is
    deactivated, and an enrollment waiting on it goes on with the next active step."""

    __tablename__ = "crm_sequence_step"
    __table_args__ = (Index("ix_crm_sequence_step_sequence", "sequence_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("crm_sequence.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    template_id: Mapped[int | None] = mapped_column(ForeignKey("crm_email_template.id", ondelete="RESTRICT"),
                                                    index=True)
    # wait: days (business_days: Monday to Friday, holidays excluded); task: due in days
    days: Mapped[int | None] = mapped_column(Integer)
    business_days: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # branch: a criterion in the rule language; then/else jump to a later step (empty: the next one)
    condition: Mapped[str | None] = mapped_column(Text)
    then_step_id: Mapped[int | None] = mapped_column(ForeignKey("crm_sequence_step.id", ondelete="SET NULL"))
    else_step_id: Mapped[int | None] = mapped_column(ForeignKey("crm_sequence_step.id", ondelete="SET NULL"))
    # task: subject; set_status: status; set_owner: owner; enroll: the other sequence
    subject: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str | None] = mapped_column(String(20))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))
    target_sequence_id: Mapped[int | None] = mapped_column(ForeignKey("crm_sequence.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    sequence = relationship(Sequence, back_populates="steps", foreign_keys=[sequence_id])
    template = relationship(EmailTemplate)
    owner = relationship("User", foreign_keys=[owner_id])
    target_sequence = relationship(Sequence, foreign_keys=[target_sequence_id])
    then_step = relationship("SequenceStep", foreign_keys=[then_step_id], remote_side=[id])
    else_step = relationship("SequenceStep", foreign_keys=[else_step_id], remote_side=[id])

    def __repr__(self) -> str:
        return f"{self.position}. {self.name or self.kind}"


class Enrollment(Model):
    """A lead going through a sequence: where it is (`step_id`, the next step to run) and when that step
    is due (`next_run_at`), or how it ended."""

    __tablename__ = "crm_enrollment"
    __table_args__ = (
        Index("ix_crm_enrollment_due", "status", "next_run_at"),
        Index("ix_crm_enrollment_sequence", "sequence_id", "status"),
        # one running enrollment per lead and sequence
        Index("uq_crm_enrollment_running", "sequence_id", "lead_id", unique=True,
              postgresql_where=text("status IN ('active', 'paused')"),
              sqlite_where=text("status IN ('active', 'paused')")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("crm_sequence.id", ondelete="CASCADE"), nullable=False)
    lead_id: Mapped[int] = mapped_column(ForeignKey("crm_lead.id", ondelete="CASCADE"), nullable=False,
                                         index=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="active")
    step_id: Mapped[int | None] = mapped_column(ForeignKey("crm_sequence_step.id", ondelete="SET NULL"))
    next_run_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(20), nullable=False, default="manual")
    enrolled_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))
    enrolled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    exit_reason: Mapped[str | None] = mapped_column(String(30))
    last_error: Mapped[str | None] = mapped_column(Text)

    sequence = relationship(Sequence)
    lead = relationship("Lead")
    step = relationship(SequenceStep)
    enrolled_by = relationship("User", foreign_keys=[enrolled_by_id])

    def __repr__(self) -> str:
        return f"{self.sequence_id}:{self.lead_id}"


class EnrollmentStep(Model):
    """A step run for an enrollment: once, by the unique key. For an e-mail step it keeps the message
    queued, the tracked links, and when the recipient opened, clicked, replied or unsubscribed."""

    __tablename__ = "crm_enrollment_step"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", name="uq_crm_enrollment_step"),
        Index("ix_crm_enrollment_step_stats", "sequence_id", "step_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("crm_enrollment.id", ondelete="CASCADE"),
                                               nullable=False)
    step_id: Mapped[int] = mapped_column(ForeignKey("crm_sequence_step.id", ondelete="CASCADE"), nullable=False)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("crm_sequence.id", ondelete="CASCADE"), nullable=False)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("crm_email_template.id", ondelete="SET NULL"),
                                                    index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("bl_message.id", ondelete="SET NULL"), index=True)
    # sent, skipped (suppressed, no consent, no address), done (task, wait, status…), then, else
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    detail: Mapped[str | None] = mapped_column(String(300))
    links: Mapped[list | None] = mapped_column(JSON)
    ran_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    opened_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    opens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    clicked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    clicks: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    replied_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    enrollment = relationship(Enrollment)
    step = relationship(SequenceStep)
    message = relationship("Message")


class Suppression(Model):
    """An address no marketing e-mail goes to: unsubscribed, bounced, complained, added by hand or erased.
    Checked by the digest of the normalized address, so that an erased person stays suppressed without
    their address being kept."""

    __tablename__ = "crm_suppression"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    address: Mapped[str | None] = mapped_column(String(320), index=True)
    reason: Mapped[str] = mapped_column(String(20), nullable=False)
    source: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(String(500))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("crm_lead.id", ondelete="SET NULL"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    def __repr__(self) -> str:
        return self.address or self.address_hash[:12]
