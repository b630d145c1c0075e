"""The finance bridge's event: a payment was received (emitted by `services.record_payment`)."""
from __future__ import annotations

from marshmallow import Schema, fields

from bigledger_core.events import EventType


class PaymentReceivedSchema(Schema):
    id = fields.Integer(required=True)
    invoice_id = fields.Integer(required=True)
    invoice_number = fields.String(allow_none=True)
    company_id = fields.Integer(allow_none=True)
    contact_id = fields.Integer(allow_none=True)
    currency = fields.String(required=True)
    amount = fields.String(required=True)
    invoice_outstanding = fields.String(required=True)
    received_at = fields.String(required=True)
    reference = fields.String(allow_none=True)
    user_id = fields.Integer(allow_none=True)


def event_types() -> list[EventType]:
    return [EventType("finance_payment_received", PaymentReceivedSchema, version=1,
                      description={"zh": "收到一笔发票付款", "en": "A payment against an invoice was received"})]
