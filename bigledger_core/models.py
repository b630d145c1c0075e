"""The host's own tables: module state, teams, and the ownership mixin every business record uses."""
from __future__ import annotations

import datetime as dt

from flask_appbuilder import Model
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, String, Table, UniqueConstraint
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
