"""The leads' events: a lead created, a lead qualified (its score reached the threshold), a lead converted."""
from __future__ import annotations

from marshmallow import Schema, fields

from bigledger_core.events import EventType


class LeadSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    company_name = fields.String(allow_none=True)
    source = fields.String(required=True)
    channel = fields.String(allow_none=True)
    campaign = fields.String(allow_none=True)
    owner_id = fields.Integer(allow_none=True)
    team_id = fields.Integer(allow_none=True)


class QualifiedSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    score = fields.Integer(required=True)
    threshold = fields.Integer(required=True)
    owner_id = fields.Integer(allow_none=True)
    team_id = fields.Integer(allow_none=True)
    source = fields.String(required=True)
    channel = fields.String(allow_none=True)
    campaign = fields.String(allow_none=True)


class ConvertedSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    company_id = fields.Integer(allow_none=True)
    company_created = fields.Boolean(required=True)
    contact_id = fields.Integer(required=True)
    contact_created = fields.Boolean(required=True)
    deal_id = fields.Integer(required=True)
    source = fields.String(required=True)
    channel = fields.String(allow_none=True)
    campaign = fields.String(allow_none=True)
    owner_id = fields.Integer(allow_none=True)
    team_id = fields.Integer(allow_none=True)
    user_id = fields.Integer(allow_none=True)


def event_types() -> list[EventType]:
    return [EventType("crm_lead_created", LeadSchema, description={"zh": "新建了潜客", "en": "Lead created"}),
            EventType("crm_lead_qualified", QualifiedSchema,
                      description={"zh": "潜客评分达到资质认定阈值", "en": "Lead reached the qualification threshold"}),
            EventType("crm_lead_converted", ConvertedSchema,
                      description={"zh": "潜客已转化为公司、联系人和商机", "en": "Lead converted into a company, contact and deal"})]
