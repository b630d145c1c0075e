"""`POST /api/v1/pos/sale/`: a POS terminal posts a sale (JWT; the Integrator role may post)."""
from __future__ import annotations

import json
from decimal import Decimal

from flask import request
from flask_appbuilder.api import BaseApi, expose, protect, safe
from flask_babel import gettext
from werkzeug.exceptions import RequestEntityTooLarge

from bigledger_core.db import db

from .services import MAX_LINES, SaleConflict, SaleError, record_sale

MAX_BODY = 256 * 1024  # a receipt of MAX_LINES lines fits well within this


class PosSaleApi(BaseApi):
    resource_name = "pos/sale"
    class_permission_name = "PosSale"
    method_permission_name = {"post_sale": "post"}
    openapi_spec_tag = "POS"

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post_sale(self):
        """Record a sale once per (store, receipt) and match it to a contact.
        ---
        post:
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    receipt: {type: string}
                    store: {type: string}
                    sold_at: {type: string, format: date-time}
                    total: {type: string, description: decimal amount}
                    currency: {type: string, description: ISO 4217}
                    lines: {type: array, items: {type: object}}
                    customer: {type: object, description: "card, phone, email, name"}
                    loyalty: {type: object, description: "tier, points"}
          responses:
            201: {description: "recorded: id, contact_id, matched_by (card, phone, email, created or null)"}
            200: {description: "already recorded (the same store and receipt): the recorded sale"}
            400: {description: "message and problems: [{field, message}]"}
            409: {description: the receipt is recorded with another total or currency}
            413: {description: the sale is larger than 256 KB}
        """
        if (request.content_length or 0) > MAX_BODY:
            return self._too_large()
        request.max_content_length = MAX_BODY
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            return self._too_large()
        try:
            data = json.loads(body or b"null", parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            return self.response_400(message=gettext("Send the sale as a JSON object."))
        try:
            result = record_sale(db.session, data)
            db.session.commit()
        except SaleError as exc:
            db.session.rollback()
            return self.response(400, message=str(exc),
                                 problems=[{"field": p.field, "message": p.message} for p in exc.problems])
        except SaleConflict as exc:
            db.session.rollback()
            return self.response(409, message=str(exc))
        return self.response(201 if result.created else 200, id=result.sale_id, contact_id=result.contact_id,
                             matched_by=result.matched_by, created=result.created)

    def _too_large(self):
        return self.response(413, message=gettext(
            "The sale is too large: at most %(kb)s KB and %(lines)s lines.", kb=MAX_BODY // 1024, lines=MAX_LINES))
