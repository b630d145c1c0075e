"""Lead REST API: `/api/v1/lead/` (create once per `Idempotency-Key`), facts, the score's explanation,
disqualification, and the scoring rules (`/api/v1/crm/scoring/`)."""
from __future__ import annotations

from flask import g, request
from flask_appbuilder import ModelRestApi
from flask_appbuilder.api import BaseApi, expose, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from marshmallow import ValidationError
from sqlalchemy import select
from werkzeug.exceptions import BadRequest

from bigledger_core.db import db
from bigledger_core.security import OwnedRecordsMixin, visibility_clause, visible_record

from ..services import CrmValidationError
from ..views import _check_version, _NullableColumns
from .models import Lead, ScoringRuleSet
from .scoring_rules import RuleSetError
from .services import (
    LeadError,
    active_rule_set,
    clean_lead,
    consent_changed,
    create_lead,
    disqualify,
    load_rule_set,
    record_consent,
    record_fact,
    rescore,
    rescore_all,
    why,
)

_CRUD = {"get_list": "get", "get": "get", "post": "post", "put": "put", "delete": "delete", "info": "info"}
FIELDS = ["name", "title", "company_name", "company_size", "industry", "website", "email", "phone", "country",
          "city", "address", "language", "timezone", "message", "source", "channel", "campaign", "utm_source", "utm_medium",
          "utm_campaign", "utm_term", "utm_content", "referrer", "consent", "consent_text", "owner_id", "team_id",
          "custom"]


def _visible_lead(pk) -> Lead | None:
    return visible_record(Lead, pk, g.user, db.session)


class LeadApi(_NullableColumns, OwnedRecordsMixin, ModelRestApi):
    resource_name = "lead"
    datamodel = SQLAInterface(Lead)
    class_permission_name = "CrmLead"
    method_permission_name = _CRUD
    list_columns = ["id", "name", "company_name", "email", "phone", "status", "score", "source", "channel",
                    "campaign", "owner_id", "team_id", "created_at", "version"]
    show_columns = [*list_columns, "title", "company_size", "industry", "website", "phone_e164", "country", "city",
                    "address", "language", "timezone", "message", "utm_source", "utm_medium", "utm_campaign", "utm_term",
                    "utm_content", "referrer", "consent", "consent_text", "consent_at", "qualified_at",
                    "disqualify_reason", "converted_at", "contact_id", "company_id", "deal_id", "email_opens",
                    "email_clicks", "custom", "updated_at"]
    add_columns = FIELDS
    edit_columns = [*FIELDS, "version"]
    search_columns = ["name", "company_name", "email", "status", "score", "source", "channel", "campaign",
                      "owner_id", "team_id", "created_at"]
    order_columns = ["id", "name", "score", "created_at"]

    def pre_add(self, item):
        """Leads from the API are assigned by the assignment rules unless `owner_id` is given."""

    def post_headless(self):
        """Create a lead; the same `Idempotency-Key` header twice creates one lead and answers with it twice."""
        if not request.is_json:
            return self.response_400(message=gettext("Send the lead as JSON."))
        try:
            item = self.add_model_schema.load(request.json)
        except ValidationError as err:
            return self.response_422(message=err.messages)
        self.pre_add(item)
        key = request.headers.get("Idempotency-Key")
        try:
            lead, created = create_lead(db.session, item, idempotency_key=key)
            if created and lead.consent:
                record_consent(db.session, lead, given=True, source="api")
            db.session.commit()
        except CrmValidationError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        body = {"id": lead.id, "result": self.show_model_schema.dump(lead),
                "duplicates": getattr(lead, "duplicates", [])}
        response = self.response(201 if created else 200, **body)
        if key and not created:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    def pre_update(self, item):
        _check_version(item)
        try:
            with db.session.no_autoflush:
                clean_lead(item, db.session)
                changed = consent_changed(item)
        except CrmValidationError as exc:
            raise BadRequest(str(exc)) from None
        if changed is not None:
            record_consent(db.session, item, given=changed, source="api")

    def post_update(self, item):
        rescore(db.session, item)
        db.session.commit()


class CrmLeadApi(BaseApi):
    """A lead's facts, the explanation of its score, and disqualification."""

    resource_name = "crm/lead"
    class_permission_name = "CrmLead"
    method_permission_name = {"facts": "put", "facts_by_email": "put", "score": "get", "disqualify": "put"}
    openapi_spec_tag = "CRM leads"

    def _facts_body(self):
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise LeadError(gettext("Send a JSON object."))
        facts = body.get("facts", [body["fact"]] if "fact" in body else None)
        if not isinstance(facts, list) or not facts or len(facts) > 50:
            raise LeadError(gettext("facts: give a list of 1 to 50 facts"))
        return body, facts

    def _record(self, lead, facts):
        for item in facts:
            name, count = (item, 1) if isinstance(item, str) else (item.get("fact"), item.get("count", 1))
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
                raise LeadError(gettext("count: a whole number from 1 to 1000"))
            record_fact(db.session, lead, str(name or ""), count=count, source="api")

    @expose("/<int:pk>/facts", methods=["POST"])
    @protect()
    @safe
    def facts(self, pk):
        """Record what a lead did (`{"facts": ["访问了定价页", {"fact": "email_open", "count": 2}]}`); the
        lead is rescored at once.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the new score and status}
            400: {description: an unknown fact or a bad count}
            404: {description: no such lead (or not yours)}
        """
        lead = _visible_lead(pk)
        if lead is None:
            return self.response_404()
        try:
            _body, facts = self._facts_body()
            self._record(lead, facts)
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=lead.id, score=lead.score, status=lead.status)

    @expose("/facts", methods=["POST"])
    @protect()
    @safe
    def facts_by_email(self):
        """Record facts for the leads with this e-mail address (`{"email": …, "facts": […]}`).
        ---
        post:
          responses:
            200: {description: the leads updated with their scores}
            400: {description: a bad body or an unknown fact}
        """
        from ..normalize import InvalidValue, normalize_email

        try:
            body, facts = self._facts_body()
            try:
                email = normalize_email(str(body.get("email") or ""))
            except InvalidValue:
                raise LeadError(gettext("email: %(value)s is not a valid e-mail address",
                                        value=body.get("email"))) from None
            query = select(Lead).where(Lead.email == email)
            clause = visibility_clause(Lead, g.user, db.session)
            if clause is not None:
                query = query.where(clause)
            leads = db.session.scalars(query.limit(100)).all()
            for lead in leads:
                self._record(lead, facts)
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, result=[{"id": lead.id, "score": lead.score, "status": lead.status}
                                          for lead in leads])

    @expose("/<int:pk>/score", methods=["GET"])
    @protect()
    @safe
    def score(self, pk):
        """The lead's score and why: each rule, whether it fired and its points.
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: score, threshold and rules}
            404: {description: no such lead}
        """
        lead = _visible_lead(pk)
        if lead is None:
            return self.response_404()
        active = active_rule_set(db.session)
        return self.response(200, id=lead.id, score=lead.score, status=lead.status,
                             threshold=active[1].threshold if active else None, rules=why(db.session, lead))

    @expose("/<int:pk>/disqualify", methods=["POST"])
    @protect()
    @safe
    def disqualify(self, pk):
        """Disqualify a lead (`{"reason": …}`, required).
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: disqualified}
            400: {description: no reason given}
        """
        lead = _visible_lead(pk)
        if lead is None:
            return self.response_404()
        try:
            disqualify(db.session, lead, (request.get_json(silent=True) or {}).get("reason"))
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, id=lead.id, status=lead.status)


class ScoringApi(BaseApi):
    """The scoring rules: load a new version (rescored in the background), read the active one."""

    resource_name = "crm/scoring"
    class_permission_name = "CrmScoring"
    method_permission_name = {"load": "post", "current": "get"}
    openapi_spec_tag = "CRM leads"

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def current(self):
        """The active rule set with its version and how far rescoring got.
        ---
        get:
          responses:
            200: {description: the rule set (English keys), version, threshold, rescored}
        """
        row = db.session.scalar(select(ScoringRuleSet).order_by(ScoringRuleSet.version.desc()).limit(1))
        if row is None:
            return self.response(200, version=None, document=None)
        return self.response(200, version=row.version, document=row.document, threshold=row.threshold,
                             rescored_at=row.rescored_at.isoformat() if row.rescored_at else None,
                             rescored=row.rescored_count)

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def load(self):
        """Load rules (JSON body, or YAML/JSON text): the product page's keys 评分规则/标准/分数/资质认定阈值 or
        rules/criterion/points/threshold. `?rescore=now` rescores at once; by default a job does it.
        ---
        post:
          responses:
            201: {description: the new version}
            400: {description: every problem, with the rule's index and the position in it}
        """
        source = request.get_json(silent=True) if request.is_json else request.get_data(as_text=True)
        if source is None or (isinstance(source, str) and len(source) > 256 * 1024):
            return self.response_400(message=gettext("Send the rules as JSON or YAML (at most 256 KB)."))
        try:
            row = load_rule_set(db.session, source, user_id=getattr(g.user, "id", None))
            if request.args.get("rescore") == "now":
                rescore_all(db.session)
            db.session.commit()
        except RuleSetError as exc:
            db.session.rollback()
            return self.response(400, message="\n".join(exc.problems), problems=exc.problems)
        return self.response(201, version=row.version, threshold=row.threshold,
                             rescored=row.rescored_at is not None)


def register(appbuilder) -> None:
    for api in (LeadApi, CrmLeadApi, ScoringApi):
        appbuilder.add_api(api)
