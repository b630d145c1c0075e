"""The CRM's events: created, updated and merged contacts and companies, from every path that writes them
(screens, API, import, merge), emitted through the outbox in the same transaction."""
from __future__ import annotations

from flask import has_app_context
from marshmallow import Schema, fields
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from bigledger_core.events import EventType, emit

from .models import Company, Contact

_SKIP = {"search_text", "updated_at", "version", "created_at"}


class RecordSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    owner_id = fields.Integer(allow_none=True)
    team_id = fields.Integer(allow_none=True)
    external_id = fields.String(allow_none=True)


class UpdatedSchema(RecordSchema):
    changed = fields.List(fields.String(), required=True)


class MergedSchema(Schema):
    survivor_id = fields.Integer(required=True)
    merged_id = fields.Integer(required=True)


def event_types() -> list[EventType]:
    types = []
    for kind, label in (("contact", ("联系人", "Contact")), ("company", ("公司", "Company"))):
        types += [
            EventType(f"crm_{kind}_created", RecordSchema,
                      description={"zh": f"新建了{label[0]}", "en": f"{label[1]} created"}),
            EventType(f"crm_{kind}_updated", UpdatedSchema,
                      description={"zh": f"修改了{label[0]}", "en": f"{label[1]} updated"}),
            EventType(f"crm_{kind}_merged", MergedSchema,
                      description={"zh": f"合并了两个{label[0]}", "en": f"Two {label[1].lower()} records merged"}),
        ]
    return types


def _payload(obj) -> dict:
    return {"id": obj.id, "name": obj.full_name if isinstance(obj, Contact) else obj.name,
            "owner_id": obj.owner_id, "team_id": obj.team_id, "external_id": obj.external_id}


@event.listens_for(Session, "after_flush")
def _emit(session: Session, _context) -> None:
    if not has_app_context():
        return
    for obj in session.new:
        if isinstance(obj, (Contact, Company)):
            emit(session, f"crm_{obj.__tablename__[4:]}_created", _payload(obj))
    for obj in session.dirty:
        if not isinstance(obj, (Contact, Company)) or obj in session.new:
            continue
        state = inspect(obj)
        changed = sorted(a.key for a in state.mapper.column_attrs
                         if a.key not in _SKIP and state.attrs[a.key].history.has_changes())
        if not changed:
            continue
        kind = obj.__tablename__[4:]
        if changed == ["merged_into_id"] or "merged_into_id" in changed and obj.merged_into_id:
            emit(session, f"crm_{kind}_merged", {"survivor_id": obj.merged_into_id, "merged_id": obj.id})
        else:
            emit(session, f"crm_{kind}_updated", {**_payload(obj), "changed": changed})
