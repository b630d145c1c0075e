"""Pipeline REST API: pipelines (load and export their YAML), stages, deals with the actions move, win,
lose and reopen, line items, deal contacts, competitors. Every action goes through services.py."""
from __future__ import annotations

import json
from decimal import Decimal

from flask import Response, g, request
from flask_appbuilder import ModelRestApi
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from sqlalchemy import select
from werkzeug.exceptions import BadRequest

from bigledger_core.db import db
from bigledger_core.security import OwnedRecordsMixin, visibility_clause, visible_record

from ..views import _check_version, _NullableColumns
from . import config
from .models import (
    Competitor,
    Deal,
    DealCompetitor,
    DealContact,
    DealLine,
    Pipeline,
    Stage,
)
from .services import (
    PipelineError,
    StageChangeRefused,
    check_line,
    checks_json,
    create_deal,
    deal_panels,
    deal_warnings,
    line_checks,
    load_pipeline,
    lose_deal,
    move_deal,
    reopen_deal,
    set_probability,
    spec_of,
    win_deal,
)

_CRUD = {"get_list": "get", "get": "get", "post": "post", "put": "put", "delete": "delete", "info": "info"}


class FilterVisibleDeal(BaseFilter):
    """Rows that belong to a deal the user may see."""

    name = "visible deal"
    arg_name = "visible_deal"

    def apply(self, query, value):
        clause = visibility_clause(Deal, g.user, db.session)
        if clause is None:
            return query
        return query.filter(self.model.deal_id.in_(select(Deal.id).where(clause)))


def _check_deal(deal_id) -> None:
    if deal_id is None or visible_record(Deal, deal_id, g.user, db.session) is None:
        raise BadRequest(gettext("deal_id: there is no deal %(id)s you may change", id=deal_id))


def _child_api(model, name: str, columns: list[str]):
    class ChildApi(_NullableColumns, ModelRestApi):
        resource_name = f"crm/{name}"
        datamodel = SQLAInterface(model)
        class_permission_name = "CrmDeal"
        list_columns = show_columns = ["id", *columns]
        add_columns = edit_columns = columns
        search_columns = ["deal_id"]
        base_filters = [["deal_id", FilterVisibleDeal, lambda: None]]

        def pre_add(self, item):
            _check_deal(item.deal_id)

        def pre_update(self, item):
            _check_deal(item.deal_id)

    ChildApi.__name__ = f"{model.__name__}Api"
    return ChildApi


_DealLineBase = _child_api(DealLine, "deal_line", ["deal_id", "position", "product", "product_code", "quantity",
                                                   "unit_price", "discount", "billing_period", "term_months"])


class DealLineApi(_DealLineBase):
    """Line items. A line added without a unit price takes the price a module offers for this customer; the answer
    to a save carries `warnings` for a product that is short or unavailable (`crm_deal_line_checks`)."""

    def pre_add(self, item):
        super().pre_add(item)
        g.crm_line_warnings = check_line(db.session.get(Deal, item.deal_id), item, adding=True)

    def pre_update(self, item):
        super().pre_update(item)
        g.crm_line_warnings = check_line(db.session.get(Deal, item.deal_id), item, adding=False)

    def post_headless(self):
        return _with_warnings(super().post_headless, 201)

    def put_headless(self, pk):
        return _with_warnings(lambda: super(DealLineApi, self).put_headless(pk), 200)


def _with_warnings(call, ok: int):
    g.crm_line_warnings = []
    response = call()
    if response.status_code == ok:
        body = response.get_json()
        body["warnings"] = g.crm_line_warnings
        response.set_data(json.dumps(body))
    return response


DealLineApi.__name__ = "DealLineApi"
DealContactApi = _child_api(DealContact, "deal_contact", ["deal_id", "contact_id", "role_id"])
DealCompetitorApi = _child_api(DealCompetitor, "deal_competitor",
                               ["deal_id", "competitor_id", "notes", "strengths", "weaknesses"])


class CompetitorApi(_NullableColumns, ModelRestApi):
    resource_name = "crm/competitor"
    datamodel = SQLAInterface(Competitor)
    class_permission_name = "CrmCompetitor"
    list_columns = show_columns = ["id", "name", "website", "notes"]
    add_columns = edit_columns = ["name", "website", "notes"]
    search_columns = ["name"]


class StageApi(_NullableColumns, ModelRestApi):
    resource_name = "crm/stage"
    datamodel = SQLAInterface(Stage)
    class_permission_name = "CrmPipeline"
    include_route_methods = {"get", "get_list", "put", "info"}
    list_columns = show_columns = ["id", "pipeline_id", "position", "name", "name_en", "probability", "activities",
                                   "activities_required", "task_due_days"]
    edit_columns = ["name_en", "probability", "activities_required", "task_due_days"]
    search_columns = ["pipeline_id", "name"]
    order_columns = ["position", "id"]
    base_order = ("position", "asc")

    def pre_update(self, item):
        if item.probability is None or not 0 <= item.probability <= 1:
            raise BadRequest(gettext("probability: must be between 0 and 1 (0.25 = 25%%)"))
        if item.is_won and item.probability != 1:
            raise BadRequest(gettext("probability: the last stage is where won deals go, so it must be 1 (100%%)"))


class PipelineApi(ModelRestApi):
    resource_name = "crm/pipeline"
    datamodel = SQLAInterface(Pipeline)
    class_permission_name = "CrmPipeline"
    include_route_methods = {"get", "get_list", "info", "load", "export"}
    method_permission_name = {**_CRUD, "load": "post", "export": "get"}
    list_columns = show_columns = ["id", "name", "name_en", "is_default", "active", "key_language"]
    search_columns = ["name", "is_default", "active"]

    @expose("/load", methods=["POST"])
    @protect()
    @safe
    def load(self):
        """Create or update a pipeline from its YAML (the product page's keys or English keys).
        ---
        post:
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    yaml: {type: string}
                    document: {type: object}
                    name: {type: string}
                    default: {type: boolean}
                    move_to: {type: object, additionalProperties: {type: string}}
              application/x-yaml:
                schema: {type: string}
          responses:
            200: {description: the pipeline with its stages}
            400: {description: every problem of the file, naming the stage and key}
        """
        body = request.get_json(silent=True) if request.is_json else None
        if body is None and request.mimetype in ("application/x-yaml", "text/yaml", "text/plain"):
            body = {"yaml": request.get_data(as_text=True)}
        if not isinstance(body, dict):
            return self.response_400(message=gettext("Send the pipeline as YAML, or JSON with “yaml” or “document”."))
        if len(str(body.get("yaml", ""))) > 256 * 1024:
            return self.response_400(message=gettext("The file is larger than %(size)s.", size="256 KB"))
        move_to = body.get("move_to") or {}
        if not isinstance(move_to, dict):
            return self.response_400(message=gettext("move_to: give {\"old stage\": \"new stage\"}"))
        try:
            spec = config.from_document(body["document"]) if "document" in body else config.parse(body.get("yaml", ""))
            pipeline = load_pipeline(db.session, spec, name=body.get("name") or request.args.get("name"),
                                     move_to={str(k): str(v) for k, v in move_to.items()},
                                     make_default=True if body.get("default") else None)
            db.session.commit()
        except (config.PipelineConfigError, PipelineError) as exc:
            db.session.rollback()
            return self.response(400, message="\n".join(exc.problems), problems=exc.problems)
        return self.response(200, id=pipeline.id, result=_pipeline_json(pipeline))

    @expose("/<int:pk>/export", methods=["GET"])
    @protect()
    @safe
    def export(self, pk):
        """The pipeline as YAML, in the keys it was loaded with.
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: YAML text}
            404: {description: no such pipeline}
        """
        pipeline = db.session.get(Pipeline, pk)
        if pipeline is None:
            return self.response_404()
        return Response(config.dump(spec_of(pipeline)), mimetype="application/x-yaml")


def _pipeline_json(pipeline: Pipeline) -> dict:
    return {"id": pipeline.id, "name": pipeline.name, "is_default": pipeline.is_default,
            "stages": [{"id": s.id, "name": s.name, "position": s.position, "probability": str(s.probability),
                        "activities": s.activities, "activities_required": s.activities_required}
                       for s in pipeline.stages]}


def _deal_json(deal: Deal) -> dict:
    return {"id": deal.id, "name": deal.name, "status": deal.status, "pipeline_id": deal.pipeline_id,
            "stage_id": deal.stage_id, "stage": deal.stage.name, "probability": str(deal.probability),
            "amount": str(deal.amount), "weighted_amount": str(deal.weighted_amount), "currency": deal.currency,
            "mrr": str(deal.mrr), "arr": str(deal.arr), "close_reason": deal.close_reason,
            "closed_at": deal.closed_at.isoformat() if deal.closed_at else None,
            "lost_to_id": deal.lost_to_id, "version": deal.version}


class DealApi(_NullableColumns, OwnedRecordsMixin, ModelRestApi):
    resource_name = "crm/deal"
    datamodel = SQLAInterface(Deal)
    class_permission_name = "CrmDeal"
    method_permission_name = {**_CRUD, "move": "put", "win": "put", "lose": "put", "reopen": "put",
                              "extras": "get"}
    list_columns = ["id", "name", "company_id", "contact_id", "pipeline_id", "stage_id", "status", "currency",
                    "amount", "mrr", "probability", "expected_close", "owner_id", "team_id", "version"]
    show_columns = [*list_columns, "probability_reason", "forecast_category", "closed_at", "close_reason",
                    "lost_to_id", "source", "channel", "campaign", "lead_id", "description", "custom",
                    "stage_entered_at", "created_at", "updated_at"]
    add_columns = ["name", "company_id", "contact_id", "pipeline_id", "stage_id", "currency", "amount",
                   "probability", "probability_reason", "forecast_category", "expected_close", "owner_id",
                   "team_id", "source", "channel", "campaign", "lead_id", "description", "custom"]
    edit_columns = ["name", "company_id", "contact_id", "currency", "amount", "probability", "probability_reason",
                    "forecast_category", "expected_close", "owner_id", "team_id", "source", "channel", "campaign",
                    "description", "custom", "version"]
    search_columns = ["name", "company_id", "contact_id", "pipeline_id", "stage_id", "status", "owner_id",
                      "team_id", "expected_close", "source", "lead_id"]
    order_columns = ["id", "name", "amount", "expected_close", "probability"]

    def pre_add(self, item):
        super().pre_add(item)
        if item.stage_id is not None and item.pipeline_id is not None:
            stage = db.session.get(Stage, item.stage_id)
            if stage is None or stage.pipeline_id != item.pipeline_id:
                raise BadRequest(gettext("stage_id: not a stage of pipeline %(id)s", id=item.pipeline_id))
        if item.stage_id is not None and item.status not in (None, "open"):
            raise BadRequest(gettext("status: close a deal with win or lose"))
        try:
            create_deal(db.session, item)
            if item.probability != item.stage.probability:
                set_probability(item, Decimal(item.probability), item.probability_reason)
        except StageChangeRefused as exc:
            db.session.rollback()
            raise BadRequest(" ".join(exc.reasons)) from None
        g.crm_deal_warnings = deal_warnings(item)

    def post_headless(self):
        """Add a deal; the answer carries `warnings` (e.g. the customer is on credit hold), never a refusal."""
        g.crm_deal_warnings = []
        response = super().post_headless()
        if response.status_code == 201:
            body = response.get_json()
            body["warnings"] = g.crm_deal_warnings
            response.set_data(json.dumps(body))
        return response

    @expose("/<int:pk>/extras", methods=["GET"])
    @protect()
    @safe
    def extras(self, pk):
        """What other modules add to a deal: panels and the check of every line item.
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: "`panels` (module, title, rows) and `lines` (line_id, product, flagged, checks)"}
            404: {description: no such deal you may see}
        """
        deal = visible_record(Deal, pk, g.user, db.session)
        if deal is None:
            return self.response_404()
        lines = list(deal.lines)
        return self.response(200, panels=deal_panels(deal), lines=checks_json(line_checks(deal, lines), lines))

    def pre_update(self, item):
        _check_version(item)
        try:
            with db.session.no_autoflush:
                set_probability(item, Decimal(item.probability), item.probability_reason)
        except StageChangeRefused as exc:
            raise BadRequest(" ".join(exc.reasons)) from None

    def _act(self, pk, command):
        deal = visible_record(Deal, pk, g.user, db.session)
        if deal is None:
            return self.response_404()
        body = request.get_json(silent=True) or {}
        if not isinstance(body, dict):
            return self.response_400(message=gettext("Send a JSON object."))
        try:
            command(deal, body)
            db.session.commit()
        except StageChangeRefused as exc:
            db.session.rollback()
            return self.response(409, message="\n".join(exc.reasons), reasons=exc.reasons)
        return self.response(200, id=deal.id, result=_deal_json(deal))

    @expose("/<int:pk>/move", methods=["POST"])
    @protect()
    @safe
    def move(self, pk):
        """Move a deal to another stage (`stage_id` or `stage` by name); into the won stage needs `reason`.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    stage_id: {type: integer}
                    stage: {type: string}
                    reason: {type: string}
          responses:
            200: {description: the deal after the move}
            404: {description: no such deal (or not yours)}
            409: {description: the move was refused; `reasons` says why}
        """
        def command(deal, body):
            target = body.get("stage_id") if body.get("stage_id") is not None else body.get("stage")
            if not isinstance(target, (int, str)) or isinstance(target, bool) or target == "":
                raise StageChangeRefused([gettext("stage_id: say which stage to move the deal to")])
            move_deal(db.session, deal, target, reason=body.get("reason"))

        return self._act(pk, command)

    @expose("/<int:pk>/win", methods=["POST"])
    @protect()
    @safe
    def win(self, pk):
        """Close a deal as won; `reason` is required.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {reason: {type: string}}}
          responses:
            200: {description: the won deal}
            409: {description: refused; `reasons` says why}
        """
        return self._act(pk, lambda deal, body: win_deal(db.session, deal, reason=body.get("reason")))

    @expose("/<int:pk>/lose", methods=["POST"])
    @protect()
    @safe
    def lose(self, pk):
        """Close a deal as lost; `reason` is required, `lost_to_id` names the competitor.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {reason: {type: string}, lost_to_id: {type: integer}}}
          responses:
            200: {description: the lost deal}
            409: {description: refused; `reasons` says why}
        """
        def command(deal, body):
            lost_to = body.get("lost_to_id")
            if lost_to is not None and (not isinstance(lost_to, int) or db.session.get(Competitor, lost_to) is None):
                raise StageChangeRefused([gettext("lost_to_id: there is no competitor %(id)s", id=lost_to)])
            lose_deal(db.session, deal, reason=body.get("reason"), lost_to_id=lost_to)

        return self._act(pk, command)

    @expose("/<int:pk>/reopen", methods=["POST"])
    @protect()
    @safe
    def reopen(self, pk):
        """Open a won or lost deal again (in `stage_id`, by default where it was).
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the reopened deal}
            409: {description: refused; `reasons` says why}
        """
        return self._act(pk, lambda deal, body: reopen_deal(db.session, deal, body.get("stage_id")))


def register(appbuilder) -> None:
    for api in (PipelineApi, StageApi, DealApi, DealLineApi, DealContactApi, DealCompetitorApi, CompetitorApi):
        appbuilder.add_api(api)
