"""The pipeline's events: a deal created, moved, won or lost (emitted by the commands in services.py)."""
from __future__ import annotations

from marshmallow import Schema, fields

from bigledger_core.events import EventType


class DealSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    company_id = fields.Integer(allow_none=True)
    contact_id = fields.Integer(allow_none=True)
    owner_id = fields.Integer(allow_none=True)
    team_id = fields.Integer(allow_none=True)
    pipeline_id = fields.Integer(required=True)
    stage_id = fields.Integer(required=True)
    stage = fields.String(required=True)
    status = fields.String(required=True)
    currency = fields.String(required=True)
    amount = fields.String(required=True)
    probability = fields.String(required=True)
    lead_id = fields.Integer(allow_none=True)
    source = fields.String(allow_none=True)


class StageChangedSchema(DealSchema):
    from_stage_id = fields.Integer(required=True)
    from_stage = fields.String(required=True)
    user_id = fields.Integer(allow_none=True)


class LineSchema(Schema):
    product = fields.String(required=True)
    product_code = fields.String(allow_none=True)
    quantity = fields.String(required=True)
    unit_price = fields.String(required=True)
    discount = fields.String(required=True)
    billing_period = fields.String(required=True)
    term_months = fields.Integer(allow_none=True)
    total = fields.String(required=True)


class WonSchema(DealSchema):
    reason = fields.String(required=True)
    closed_at = fields.String(required=True)
    lines = fields.List(fields.Nested(LineSchema), required=True)


class LostSchema(DealSchema):
    reason = fields.String(required=True)
    closed_at = fields.String(required=True)
    lost_to = fields.String(allow_none=True)


def event_types() -> list[EventType]:
    return [
        EventType("crm_deal_created", DealSchema, description={"zh": "新建了商机", "en": "Deal created"}),
        EventType("crm_deal_stage_changed", StageChangedSchema,
                  description={"zh": "商机进入了另一个阶段", "en": "Deal moved to another stage"}),
        EventType("crm_deal_won", WonSchema, description={"zh": "商机赢单", "en": "Deal won"}),
        EventType("crm_deal_lost", LostSchema, description={"zh": "商机丢单", "en": "Deal lost"}),
    ]
