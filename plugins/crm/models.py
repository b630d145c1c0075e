"""CRM records: companies and contacts with their addresses, phones, e-mails, tags, custom fields,
activities and documents.

Names are kept as entered; `search_text` holds what search matches (normalized names, pinyin and
pinyin initials) and is rebuilt whenever a name changes. Phones keep the text as entered and E.164;
e-mails are stored normalized. `custom` holds admin-defined fields (JSONB on PostgreSQL).
"""
from __future__ import annotations

import datetime as dt

from flask_appbuilder import Model
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from bigledger_core.db import utcnow
from bigledger_core.models import OwnedMixin

CustomJSON = JSON().with_variant(JSONB(), "postgresql")

COMPANY_STATUSES = ("prospect", "customer", "partner", "inactive")
ADDRESS_KINDS = ("office", "billing", "shipping", "home", "other")
PHONE_KINDS = ("mobile", "work", "home", "fax", "other")
EMAIL_KINDS = ("work", "personal", "other")
ACTIVITY_KINDS = ("call", "meeting", "email", "note", "task")
FIELD_TYPES = ("text", "number", "date", "select", "multiselect", "boolean")

contact_tag = Table(
    "crm_contact_tag", Model.metadata,
    Column("contact_id", Integer, ForeignKey("crm_contact.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", Integer, ForeignKey("crm_tag.id", ondelete="CASCADE"), primary_key=True, index=True),
)
company_tag = Table(
    "crm_company_tag", Model.metadata,
    Column("company_id", Integer, ForeignKey("crm_company.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", Integer, ForeignKey("crm_tag.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Tag(Model):
    __tablename__ = "crm_tag"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    color: Mapped[str] = mapped_column(String(7), nullable=False, default="#5b8def")

    def __repr__(self) -> str:
        return self.name


class _Record:
    """Columns every customer record has: external id, custom fields, search text, merge link, times."""

    external_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    custom: Mapped[dict] = mapped_column(CustomJSON, nullable=False, default=dict)
    search_text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                    onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr.directive
    def __mapper_args__(cls):  # optimistic locking: a stale save raises StaleDataError
        return {"version_id_col": cls.__table__.c.version}


class Company(OwnedMixin, _Record, Model):
    """A customer organisation (account). Companies form a tree through `parent`."""

    __tablename__ = "crm_company"
    __table_args__ = (
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="ck_crm_company_not_own_parent"),
        Index("ix_crm_company_name", "name"),
        Index("ix_crm_company_name_lower", func.lower(text("name"))),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    name_en: Mapped[str | None] = mapped_column(String(200))
    legal_name: Mapped[str | None] = mapped_column(String(300))
    industry: Mapped[str | None] = mapped_column(String(100), index=True)
    employees: Mapped[int | None] = mapped_column(Integer)
    region: Mapped[str | None] = mapped_column(String(100), index=True)
    website: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="prospect", index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="SET NULL"), index=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="SET NULL"),
                                                       index=True)

    parent = relationship("Company", remote_side=[id], foreign_keys=[parent_id], backref="children")
    tags = relationship(Tag, secondary=company_tag, backref="companies")
    addresses = relationship("Address", back_populates="company", cascade="all, delete-orphan")
    phones = relationship("Phone", back_populates="company", cascade="all, delete-orphan")
    emails = relationship("Email", back_populates="company", cascade="all, delete-orphan")
    links = relationship("ContactCompany", back_populates="company", cascade="all, delete-orphan")
    documents = relationship("Document", back_populates="company", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return self.name


class Contact(OwnedMixin, _Record, Model):
    """A person. A Chinese name is family + given name (`张` + `伟`); `full_name` is what is shown."""

    __tablename__ = "crm_contact"
    # search puts exact matches of the name, its pinyin or initials first, shortest name first: each of these
    # indexes gives those in that order, so a common name (张伟, zhangwei, zw) costs 20 index entries (crm_0007)
    __table_args__ = (Index("ix_crm_contact_full_name", "full_name"),
                      Index("ix_crm_contact_full_name_lower", func.lower(text("full_name")),
                            func.length(text("full_name")), "full_name", "id"),
                      Index("ix_crm_contact_pinyin", "pinyin", func.length(text("full_name")), "full_name", "id"),
                      Index("ix_crm_contact_initials", "initials", func.length(text("full_name")), "full_name", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200), nullable=False)
    family_name: Mapped[str | None] = mapped_column(String(100))
    given_name: Mapped[str | None] = mapped_column(String(100))
    name_en: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    pinyin: Mapped[str | None] = mapped_column(Text)  # of a Chinese full name: `zhangwei` (normalize.name_keys)
    initials: Mapped[str | None] = mapped_column(Text)  # `zw`
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="SET NULL"),
                                                       index=True)

    tags = relationship(Tag, secondary=contact_tag, backref="contacts")
    addresses = relationship("Address", back_populates="contact", cascade="all, delete-orphan")
    phones = relationship("Phone", back_populates="contact", cascade="all, delete-orphan")
    emails = relationship("Email", back_populates="contact", cascade="all, delete-orphan")
    links = relationship("ContactCompany", back_populates="contact", cascade="all, delete-orphan")
    documents = relationship("Document", back_populates="contact", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return self.full_name


class ContactRole(Model):
    """The part a contact plays at a company: 决策者, 影响者, 用户, or one an admin adds."""

    __tablename__ = "crm_contact_role"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(50), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    name_en: Mapped[str | None] = mapped_column(String(100))

    def __repr__(self) -> str:
        return self.name


class ContactCompany(Model):
    """A contact at a company, with a role; one link per contact may be primary."""

    __tablename__ = "crm_contact_company"
    __table_args__ = (UniqueConstraint("contact_id", "company_id", name="uq_crm_contact_company"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("crm_contact.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("crm_company.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    role_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact_role.id", ondelete="SET NULL"), index=True)
    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    contact = relationship(Contact, back_populates="links")
    company = relationship(Company, back_populates="links")
    role = relationship(ContactRole)


class _Detail:
    """Belongs to exactly one contact or one company."""

    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


def _owner_check(table: str):
    return CheckConstraint("(contact_id IS NULL) <> (company_id IS NULL)", name=f"ck_{table}_one_owner")


class Address(_Detail, Model):
    __tablename__ = "crm_address"
    __table_args__ = (_owner_check("crm_address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="CASCADE"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="office")
    country: Mapped[str | None] = mapped_column(String(2))
    province: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(100), index=True)
    district: Mapped[str | None] = mapped_column(String(100))
    street: Mapped[str | None] = mapped_column(String(300))
    postcode: Mapped[str | None] = mapped_column(String(20))

    contact = relationship(Contact, back_populates="addresses")
    company = relationship(Company, back_populates="addresses")


class Phone(_Detail, Model):
    __tablename__ = "crm_phone"
    __table_args__ = (_owner_check("crm_phone"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="CASCADE"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="mobile")
    raw: Mapped[str] = mapped_column(String(50), nullable=False)
    e164: Mapped[str | None] = mapped_column(String(20), index=True)

    contact = relationship(Contact, back_populates="phones")
    company = relationship(Company, back_populates="phones")


class Email(_Detail, Model):
    __tablename__ = "crm_email"
    __table_args__ = (_owner_check("crm_email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="CASCADE"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="work")
    address: Mapped[str] = mapped_column(String(320), nullable=False, index=True)

    contact = relationship(Contact, back_populates="emails")
    company = relationship(Company, back_populates="emails")


class CustomField(Model):
    """An admin-defined field of contacts or companies, stored in their `custom` JSON under `key`."""

    __tablename__ = "crm_custom_field"
    __table_args__ = (UniqueConstraint("entity", "key", name="uq_crm_custom_field_entity_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entity: Mapped[str] = mapped_column(String(20), nullable=False)
    key: Mapped[str] = mapped_column(String(60), nullable=False)
    label: Mapped[str] = mapped_column(String(100), nullable=False)
    label_en: Mapped[str | None] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(20), nullable=False, default="text")
    required: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    pattern: Mapped[str | None] = mapped_column(String(300))
    options: Mapped[list | None] = mapped_column(JSON)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    def __repr__(self) -> str:
        return self.label


class Activity(Model):
    """A call, meeting, e-mail, note or task on a contact and/or a company, and perhaps a deal (a deal's stage
    creates its activities as tasks with `stage_id` set), or on a lead (tasks made by nurturing sequences)."""

    __tablename__ = "crm_activity"
    __table_args__ = (
        CheckConstraint("contact_id IS NOT NULL OR company_id IS NOT NULL OR lead_id IS NOT NULL",
                        name="ck_crm_activity_has_customer"),
        # covering: the 360° view counts and pages a customer's activities from these alone (crm_0007)
        Index("ix_crm_activity_company_time", "company_id", "occurred_at", "id", "kind"),
        Index("ix_crm_activity_contact_time", "contact_id", "occurred_at", "id", "kind", "company_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="note", index=True)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(200))
    duration_minutes: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    due_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    done: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="CASCADE"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), index=True)
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("crm_deal.id", ondelete="CASCADE"), index=True)
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("crm_stage.id", ondelete="SET NULL"), index=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("crm_lead.id", ondelete="CASCADE"), index=True)

    contact = relationship(Contact)
    company = relationship(Company)
    user = relationship("User")
    deal = relationship("Deal")


class ActivityTally(Model):
    """How many activities there are by kind, in two families: (company, 0, kind) counts every activity on the
    company; (company or 0, contact, kind) the contact's, by the company they are also on (0: none). Kept by
    database triggers on `crm_activity` (crm_0008) through every insert, move, change of kind and delete,
    cascades and merges included, so the 360° view counts a customer's activities without reading them.
    Read-only here."""

    __tablename__ = "crm_activity_tally"
    __table_args__ = (Index("ix_crm_activity_tally_contact", "contact_id", "company_id", "kind", "n"),)

    company_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False)


class Document(Model):
    """A file on a contact or company, stored once by content hash under the instance folder."""

    __tablename__ = "crm_document"
    __table_args__ = (_owner_check("crm_document"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("crm_contact.id", ondelete="CASCADE"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("crm_company.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    content_type: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"))
    uploaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    contact = relationship(Contact, back_populates="documents")
    company = relationship(Company, back_populates="documents")
    uploaded_by = relationship("User")


class Segment(OwnedMixin, Model):
    """A saved filter over contacts or companies, evaluated in SQL whenever it is used."""

    __tablename__ = "crm_segment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    entity: Mapped[str] = mapped_column(String(20), nullable=False, default="contact")
    definition: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)

    def __repr__(self) -> str:
        return self.name


class AuditEntry(Model):
    """Who changed what on a customer record, and when (merges keep the merged record's data here)."""

    __tablename__ = "crm_audit"
    __table_args__ = (Index("ix_crm_audit_record", "entity", "record_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entity: Mapped[str] = mapped_column(String(50), nullable=False)
    record_id: Mapped[int] = mapped_column(Integer, nullable=False)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    changes: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow, index=True)
