"""The project bridge's own storage: the rules that say which won deals get a delivery project, and the projects
with their milestones.

A project row exists once per deal (unique `deal_id`), in every mode: when a project module made the project it
holds the module's id and number (`external_id`, `number`) and what the bridge asked for; standalone it is the
project itself. Customers and deals are referred to by CRM ids (no foreign keys into the CRM's tables: the
bridge's tables come and go with the bridge). Times are UTC.
"""
from __future__ import annotations

import datetime as dt

from flask_appbuilder import Model
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    select,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from bigledger_core.db import utcnow

PROJECT_STATUSES = ("planned", "active", "on_hold", "done", "cancelled")
CLOSED_STATUSES = ("done", "cancelled")


class ProjectRule(Model):
    """Which won deals get a delivery project: those of a pipeline and/or with a product code among their line
    items (a rule naming neither takes every won deal). Active rules are tried by position; the first that
    matches gives the project its milestones ([{"name", "days"}], days after the start)."""

    __tablename__ = "project_rule"
    __table_args__ = (Index("ix_project_rule_order", "active", "position", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    pipeline_id: Mapped[int | None] = mapped_column(Integer)
    product_code: Mapped[str | None] = mapped_column(String(60))
    milestones: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    @property
    def milestones_text(self) -> str:
        """The milestones as the rule screen edits them: one a line, `name | days`."""
        return "\n".join(f"{m['name']} | {m['days']}" for m in self.milestones or [])

    @milestones_text.setter
    def milestones_text(self, value: str) -> None:
        from .services import parse_milestones_text

        self.milestones = parse_milestones_text(value)

    def __repr__(self) -> str:
        return self.name


class Project(Model):
    """The delivery project of a won deal."""

    __tablename__ = "project_project"
    __table_args__ = (
        Index("ix_project_project_company", "company_id", "created_at"),
        Index("ix_project_project_contact", "contact_id", "created_at"),
        Index("ix_project_project_status", "status", "due_on"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    deal_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    deal_name: Mapped[str | None] = mapped_column(String(200))
    customer_name: Mapped[str | None] = mapped_column(String(200))  # the CRM's name when the project was made
    company_id: Mapped[int | None] = mapped_column(Integer)
    contact_id: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="planned")
    start_on: Mapped[dt.date | None] = mapped_column(Date)
    due_on: Mapped[dt.date | None] = mapped_column(Date)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("project_rule.id", ondelete="SET NULL"), index=True)
    # set when a project module made the project: its id (the bridge then keeps no milestones of its own)
    external_id: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)

    rule: Mapped[ProjectRule | None] = relationship()
    milestones: Mapped[list[Milestone]] = relationship(back_populates="project", cascade="all, delete-orphan",
                                                       order_by="Milestone.position")

    @property
    def progress(self) -> str:
        """Milestones reached of all, e.g. "1/3"."""
        return f"{self.milestones_reached or 0}/{self.milestones_total or 0}"

    def __repr__(self) -> str:
        return f"{self.number or '#' + str(self.id)} {self.name}"


class Milestone(Model):
    """A step of a project, due on a day and reached when `done_at` is set."""

    __tablename__ = "project_milestone"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project_project.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    due_on: Mapped[dt.date | None] = mapped_column(Date)
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    project: Mapped[Project] = relationship(back_populates="milestones")

    def __repr__(self) -> str:
        return self.name


# milestones reached and in all, read with the project in one statement (the list screen shows them per row)
Project.milestones_reached = column_property(
    select(func.count(Milestone.id)).where(Milestone.project_id == Project.id, Milestone.done_at.is_not(None))
    .correlate_except(Milestone).scalar_subquery())
Project.milestones_total = column_property(
    select(func.count(Milestone.id)).where(Milestone.project_id == Project.id)
    .correlate_except(Milestone).scalar_subquery())
