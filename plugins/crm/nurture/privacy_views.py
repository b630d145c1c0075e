"""The suppression list (CRM → Suppression list: see, add by hand, delete to allow e-mail again) and the
Privacy screen (CRM → Privacy: download everything held about an e-mail address as JSON, or erase the
person after a confirmation), with their REST API:

    GET    /api/v1/crm/privacy/export?email=…      everything held about the address (JSON)
    POST   /api/v1/crm/privacy/erase {"email": …}  anonymize the person; the counts of what changed
    GET/POST/DELETE /api/v1/crm/suppression/…     the suppression list
"""
from __future__ import annotations

import io
import json
import logging

from flask import flash, g, redirect, request, send_file, url_for
from flask_appbuilder import BaseView, ModelRestApi, ModelView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.fieldwidgets import Select2Widget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from wtforms import SelectField

from bigledger_core.db import db

from .models import Suppression
from .privacy import PrivacyError, clean_address, erase_person, export_person
from .tracking import TrackingError, address_hash, suppress, suppressed

log = logging.getLogger(__name__)
REASON_LABELS = {"manual": _l("Added by hand"), "unsubscribed": _l("Unsubscribed"), "bounced": _l("Bounced"),
                 "complaint": _l("Complaint"), "erased": _l("Erased")}
LABELS = {"address": _l("E-mail"), "address_hash": _l("Digest"), "reason": _l("Reason"), "source": _l("Source"),
          "note": _l("Note"), "lead_id": _l("Lead"), "created_at": _l("Added"), "created_by_id": _l("Added by")}


def _user_id() -> int | None:
    user = getattr(g, "user", None)
    return getattr(user, "id", None) if user is not None and getattr(user, "is_authenticated", False) else None


def _download(data: dict, address: str):
    body = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
    return send_file(io.BytesIO(body), mimetype="application/json", as_attachment=True,
                     download_name=f"person-{address_hash(address)[:12]}.json")


# -- the suppression list -----------------------------------------------------------------------------------

class SuppressionView(ModelView):
    """Addresses no marketing e-mail goes to. Adding one ends its running enrollments; deleting one allows
    e-mail to it again. An erased person's row shows no address (it is kept as a digest)."""

    datamodel = SQLAInterface(Suppression)
    route_base = "/crm/suppression"
    class_permission_name = "CrmSuppression"
    base_permissions = ["can_list", "can_show", "can_add", "can_delete"]
    list_title = _l("Suppression list")
    show_title = _l("Suppressed address")
    add_title = _l("Add an address to the suppression list")
    list_columns = ["address", "reason", "source", "note", "created_at"]
    show_columns = ["address", "address_hash", "reason", "source", "note", "lead_id", "created_at"]
    add_columns = ["address", "reason", "note"]
    search_columns = ["address", "reason", "source", "note", "created_at"]
    order_columns = ["address", "reason", "source", "created_at"]
    base_order = ("created_at", "desc")
    label_columns = LABELS
    formatters_columns = {"address": lambda value: value or gettext("(erased)"),
                          "reason": lambda value: str(REASON_LABELS.get(value, value))}
    description_columns = {"address": _l("Marketing e-mail is no longer sent to this address.")}
    add_form_extra_fields = {"reason": SelectField(
        LABELS["reason"], choices=[(k, v) for k, v in REASON_LABELS.items() if k != "erased"],
        default="manual", widget=Select2Widget())}

    def pre_add(self, item):
        try:
            address = clean_address(item.address)
        except PrivacyError as exc:
            raise ValueError(str(exc)) from None
        if suppressed(db.session, [address]):
            raise ValueError(gettext("%(address)s is already on the suppression list.", address=address))
        item.address, item.address_hash, item.source = address, address_hash(address), "screen"
        item.note = (item.note or "").strip()[:500] or None
        item.created_by_id = _user_id()

    def post_add(self, item):
        # the row is in; `suppress` finds it and ends the address's running enrollments
        suppress(db.session, item.address, reason=item.reason, source="screen")
        db.session.commit()

    def post_delete(self, item):
        log.info("suppression %s removed by user %s (e-mail allowed again)", item.address_hash[:12], _user_id())


class SuppressionApi(ModelRestApi):
    """The suppression list: list, show, add (`{"email": …, "reason": "manual", "note": …}`), delete."""

    resource_name = "crm/suppression"
    datamodel = SQLAInterface(Suppression)
    class_permission_name = "CrmSuppression"
    method_permission_name = {"get_list": "get", "get": "get", "post": "post", "delete": "delete", "info": "info"}
    include_route_methods = {"get_list", "get", "post", "delete", "info"}
    openapi_spec_tag = "CRM nurturing"
    list_columns = ["id", "address", "reason", "source", "note", "lead_id", "created_at"]
    show_columns = [*list_columns, "address_hash", "created_by_id"]
    add_columns = ["address", "reason", "note"]
    search_columns = ["address", "reason", "source", "created_at"]
    order_columns = ["address", "reason", "source", "created_at"]
    base_order = ("created_at", "desc")

    def post_headless(self):
        """Add an address (idempotent: 200 with the existing row when it is already suppressed)."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.response_400(message=gettext("Send a JSON object."))
        try:
            address = clean_address(body.get("email") or body.get("address") or "")
            reason = str(body.get("reason") or "manual")
            if reason == "erased":
                raise TrackingError(gettext("reason: “erased” is set by erasing a person"))
            known = bool(suppressed(db.session, [address]))
            row = suppress(db.session, address, reason=reason, source="api", by_id=_user_id(),
                           note=body.get("note") if isinstance(body.get("note"), str) else None)
            db.session.commit()
        except (PrivacyError, TrackingError) as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200 if known else 201, id=row.id, result=self.show_model_schema.dump(row))


# -- the privacy screen -------------------------------------------------------------------------------------

class PrivacyView(BaseView):
    """A person's data by e-mail address: download it as JSON, or erase it (after a confirmation that shows
    what will be anonymized)."""

    route_base = "/crm/privacy"
    default_view = "index"
    class_permission_name = "CrmPrivacy"
    method_permission_name = {"index": "list", "export": "export", "erase": "erase"}
    base_permissions = ["can_list", "can_export", "can_erase"]

    def _index(self, *, email: str = "", problem: str | None = None, summary: dict | None = None, status=200):
        return self.render_template("crm/nurture_privacy.html", email=email, problem=problem,
                                    summary=summary), status

    @expose("/", methods=["GET"])
    @has_access
    def index(self):
        return self._index()

    @expose("/export", methods=["POST"])
    @has_access
    def export(self):
        email = request.form.get("email", "")
        try:
            data = export_person(db.session, email)
        except PrivacyError as exc:
            return self._index(email=email, problem=str(exc), status=400)
        log.info("person %s exported by user %s", address_hash(data["address"])[:12], _user_id())
        return _download(data, data["address"])

    @expose("/erase", methods=["POST"])
    @has_access
    def erase(self):
        email = request.form.get("email", "")
        try:
            address = clean_address(email)
        except PrivacyError as exc:
            return self._index(email=email, problem=str(exc), status=400)
        confirm = request.form.get("confirm", "")
        if not confirm:
            data = export_person(db.session, address)
            summary = {"address": address, "leads": len(data["leads"]), "contacts": len(data["contacts"]),
                       "enrollments": len(data["enrollments"]), "messages_sent": len(data["messages_sent"]),
                       "messages_received": len(data["messages_received"])}
            return self._index(email=address, summary=summary)
        if confirm.strip().lower() != address:
            return self._index(email=address, problem=gettext(
                "Type the address %(address)s again to confirm the erasure.", address=address), status=400)
        counts = erase_person(db.session, address, by_id=_user_id())
        db.session.commit()
        flash(gettext("The person was erased: %(leads)s leads, %(contacts)s contacts, %(messages)s messages "
                      "anonymized. The address stays on the suppression list as a digest.",
                      leads=counts["leads"], contacts=counts["contacts"],
                      messages=counts["messages_sent"] + counts["messages_received"]), "success")
        return redirect(url_for("PrivacyView.index"))


class PrivacyApi(BaseApi):
    """A person's data by e-mail address: export it, erase it."""

    resource_name = "crm/privacy"
    class_permission_name = "CrmPrivacy"
    method_permission_name = {"export": "export", "erase": "erase"}
    openapi_spec_tag = "CRM nurturing"

    @expose("/export", methods=["GET"])
    @protect()
    @safe
    def export(self):
        """Everything held about the person with this e-mail address.
        ---
        get:
          parameters:
          - {in: query, name: email, required: true, schema: {type: string}}
          responses:
            200: {description: "leads, contacts, enrollments, messages_sent, messages_received, suppression,
              consent_records"}
            400: {description: not an e-mail address}
        """
        try:
            data = export_person(db.session, request.args.get("email", ""))
        except PrivacyError as exc:
            return self.response_400(message=str(exc))
        log.info("person %s exported by user %s through the API", address_hash(data["address"])[:12], _user_id())
        return self.response(200, result=data)

    @expose("/erase", methods=["POST"])
    @protect()
    @safe
    def erase(self):
        """Erase (anonymize) the person with this e-mail address (`{"email": …}`); they stay suppressed.
        ---
        post:
          responses:
            200: {description: counts of what was anonymized}
            400: {description: not an e-mail address}
        """
        body = request.get_json(silent=True)
        email = body.get("email") if isinstance(body, dict) else None
        try:
            counts = erase_person(db.session, str(email or ""), by_id=_user_id())
            db.session.commit()
        except PrivacyError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, result=counts)


def register(appbuilder) -> None:
    """Add the suppression list and privacy screens and their REST API."""
    category = {"category": "CRM", "category_label": _l("CRM")}
    appbuilder.add_view(SuppressionView, "CrmSuppression", label=_l("Suppression list"), icon="fa-ban", **category)
    appbuilder.add_view(PrivacyView, "CrmPrivacy", label=_l("Personal data"), icon="fa-user-secret", **category)
    for api in (SuppressionApi, PrivacyApi):
        appbuilder.add_api(api)
