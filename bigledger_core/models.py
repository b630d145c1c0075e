"""The host's own tables: module state, teams, the ownership mixin every business record uses, and the
runtime: the event outbox and its deliveries, scheduled jobs and their runs, the message log."""
from __future__ import annotations

import datetime as dt

from flask_appbuilder import Model
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from .db import utcnow

team_member = Table(
    "bl_team_member",
    Model.metadata,
    Column("team_id", Integer, ForeignKey("bl_team.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class ModuleState(Model):
    """An admin's choice to switch a module on or off; no row means 'on' (the deployment default)."""

    __tablename__ = "bl_module"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    changed_by: Mapped[str | None] = mapped_column(String(256))


class Team(Model):
    """A sales (or support, marketing…) team. Managers of a team see its records and its sub-teams'."""

    __tablename__ = "bl_team"
    __table_args__ = (UniqueConstraint("name", name="uq_bl_team_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    name_en: Mapped[str | None] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("bl_team.id", ondelete="SET NULL"), index=True)
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), index=True)

    parent = relationship("Team", remote_side=[id], backref="children")
    manager = relationship("User", foreign_keys=[manager_id])
    members = relationship("User", secondary=team_member, backref="teams")

    def __repr__(self) -> str:
        return self.name


class OwnedMixin:
    """Gives a business record an owner (a user) and a team.

    Views built with `bigledger_core.security.OwnedRecordsMixin` show a user only the records they
    may see: their own, their teams', the teams they manage (and those teams' sub-teams); everything
    for roles whose record scope is "all".
    """

    @declared_attr
    def owner_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), index=True)

    @declared_attr
    def team_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("bl_team.id", ondelete="SET NULL"), index=True)

    @declared_attr
    def owner(cls):
        return relationship("User", foreign_keys=[cls.owner_id])

    @declared_attr
    def team(cls):
        return relationship("Team", foreign_keys=[cls.team_id])


# -- events: the transactional outbox ---------------------------------------------------------------

class OutboxEvent(Model):
    """A domain event, written in the transaction of the change it reports."""

    __tablename__ = "bl_outbox_event"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(150), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    payload: Mapped[dict] = mapped_column(JSON, nullable=False)
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)

    deliveries = relationship("EventDelivery", back_populates="event", passive_deletes=True)

    def __repr__(self) -> str:
        return f"{self.name} {self.id}"


class EventDelivery(Model):
    """One event for one subscriber: pending, delivered, failed (to be retried) or dead (given up)."""

    __tablename__ = "bl_event_delivery"
    __table_args__ = (
        UniqueConstraint("event_id", "subscriber", name="uq_bl_event_delivery_event_subscriber"),
        Index("ix_bl_event_delivery_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("bl_outbox_event.id", ondelete="CASCADE"), nullable=False,
                                          index=True)
    subscriber: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    claim: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    event = relationship("OutboxEvent", back_populates="deliveries")


# -- scheduler ----------------------------------------------------------------------------------------

class ScheduledJob(Model):
    """A job contributed by a module: what admins see and steer (pause, resume, run now)."""

    __tablename__ = "bl_job"

    id: Mapped[str] = mapped_column(String(191), primary_key=True)
    module: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    label: Mapped[str | None] = mapped_column(String(200))
    label_en: Mapped[str | None] = mapped_column(String(200))
    trigger: Mapped[str | None] = mapped_column(String(200))
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    run_requested_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_outcome: Mapped[str | None] = mapped_column(String(20))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)


class JobRun(Model):
    """One run of a job at one scheduled time; the unique key stops a scheduled run from running twice."""

    __tablename__ = "bl_job_run"
    __table_args__ = (UniqueConstraint("job_id", "scheduled_at", name="uq_bl_job_run_job_scheduled"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(191), nullable=False, index=True)
    scheduled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(200))


class SchedulerNode(Model):
    """A running `bigledger scheduler` process and whether it is the active one."""

    __tablename__ = "bl_scheduler_node"

    node: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)


# -- messages -----------------------------------------------------------------------------------------

class Message(Model):
    """An outgoing message (e-mail, SMS…) and its delivery: queued, sending, sent or failed."""

    __tablename__ = "bl_message"
    __table_args__ = (Index("ix_bl_message_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), nullable=False, default="email", index=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued")
    to_address: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    to_name: Mapped[str | None] = mapped_column(String(200))
    from_address: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(998), nullable=False, default="")
    body_text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    body_html: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict | None] = mapped_column(JSON)
    message_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    source: Mapped[str | None] = mapped_column(String(100), index=True)
    provider: Mapped[str | None] = mapped_column(String(50), index=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    claim: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class InboundMessage(Model):
    """A received e-mail (IMAP or `bigledger mail ingest`), kept once per Message-ID."""

    __tablename__ = "bl_inbound_message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    message_id: Mapped[str] = mapped_column(Text, nullable=False)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[list | None] = mapped_column(JSON)
    sender_address: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    sender_name: Mapped[str | None] = mapped_column(String(200))
    recipients: Mapped[dict | None] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(Text, nullable=False, default="")
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    body_text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    body_html: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(200), nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    attachments = relationship("InboundAttachment", back_populates="message", passive_deletes=True)


class InboundAttachment(Model):
    __tablename__ = "bl_inbound_attachment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("bl_inbound_message.id", ondelete="CASCADE"),
                                            nullable=False, index=True)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    content_type: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

    message = relationship("InboundMessage", back_populates="attachments")


class MailboxState(Model):
    """How far the IMAP poller has read a mailbox, so a restart never processes a message twice."""

    __tablename__ = "bl_mailbox_state"

    name: Mapped[str] = mapped_column(String(400), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
