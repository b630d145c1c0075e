"""Pipeline commands: load a pipeline from its file, create deals, move them between stages, win, lose
and reopen them. Screens, the kanban board, the REST API and the CLI all call these; nothing else
changes a deal's stage.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask import current_app, g, has_app_context
from flask_babel import gettext
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from bigledger_core.db import utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.events import emit

from ..models import Activity
from .config import PipelineSpec, StageSpec, format_probability
from .models import Deal, DealLine, Pipeline, Stage, StageHistory


class PipelineError(BigLedgerError):
    """A pipeline change that cannot be made; `problems` says why (translated). Nothing is written."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class StageChangeRefused(BigLedgerError):
    """A move, win, loss or reopen that is not allowed; `reasons` lists why (translated)."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("\n".join(reasons))


def current_user_id() -> int | None:
    user = getattr(g, "user", None) if has_app_context() else None
    return getattr(user, "id", None) if user is not None and getattr(user, "is_authenticated", False) else None


# -- pipelines -------------------------------------------------------------------------------------------

DEFAULT_NAMES = {"zh": "销售管道", "en": "Sales pipeline"}  # a file without a name loads under this name


def default_pipeline(session: Session) -> Pipeline | None:
    """The pipeline new deals go to when none is named."""
    return session.scalar(select(Pipeline).where(Pipeline.is_default.is_(True), Pipeline.active.is_(True))) \
        or session.scalar(select(Pipeline).where(Pipeline.active.is_(True)).order_by(Pipeline.id))


def set_default(session: Session, pipeline: Pipeline) -> None:
    session.execute(update(Pipeline).where(Pipeline.id != pipeline.id).values(is_default=False))
    pipeline.is_default = True


def spec_of(pipeline: Pipeline) -> PipelineSpec:
    """The pipeline as a spec, for writing it back to its file (a default name is left out)."""
    return PipelineSpec(
        name=None if pipeline.name == DEFAULT_NAMES.get(pipeline.key_language) else pipeline.name,
        name_en=pipeline.name_en, key_language=pipeline.key_language,
        stages=[StageSpec(name=s.name, probability=s.probability, activities=list(s.activities or []),
                          name_en=s.name_en, activities_required=s.activities_required,
                          task_due_days=s.task_due_days) for s in pipeline.stages])


def load_pipeline(session: Session, spec: PipelineSpec, *, name: str | None = None,
                  move_to: dict[str, str] | None = None, make_default: bool | None = None) -> Pipeline:
    """Create the pipeline `name` (or the file's name, or 销售管道) from `spec`, or update it in place.

    Stages are matched by name, so deals stay where they are. A stage that the file drops but still
    holds deals is refused unless `move_to` names a stage of the new file to move them to.
    """
    name = (name or spec.name or DEFAULT_NAMES[spec.key_language]).strip()
    pipeline = session.scalar(select(Pipeline).where(Pipeline.name == name))
    move_to = dict(move_to or {})
    new_names = {s.name for s in spec.stages}
    problems = [gettext("“%(target)s” is not a stage of the new file (from --move %(old)s=%(target)s)",
                        old=old, target=target) for old, target in move_to.items() if target not in new_names]
    if pipeline is None:
        pipeline = Pipeline(name=name, name_en=spec.name_en, key_language=spec.key_language)
        session.add(pipeline)
        existing = {}
    else:
        existing = {s.name: s for s in pipeline.stages}
        dropped = [s for n, s in existing.items() if n not in new_names]
        if dropped:
            counts = dict(session.execute(select(Deal.stage_id, func.count()).where(
                Deal.stage_id.in_([s.id for s in dropped])).group_by(Deal.stage_id)).all())
            for stage in dropped:
                if counts.get(stage.id) and stage.name not in move_to:
                    problems.append(gettext(
                        "Stage “%(stage)s” still holds %(count)d deals: keep it in the file or say where they "
                        "go (%(stage)s=NEW STAGE)", stage=stage.name, count=counts[stage.id]))
        pipeline.key_language = spec.key_language
        if spec.name_en:
            pipeline.name_en = spec.name_en
    if problems:
        raise PipelineError(problems)
    stages = []
    for position, item in enumerate(spec.stages):
        stage = existing.get(item.name) or Stage(name=item.name)
        stage.position, stage.probability, stage.activities = position, item.probability, list(item.activities)
        stage.name_en = item.name_en
        stage.activities_required, stage.task_due_days = item.activities_required, item.task_due_days
        if stage not in pipeline.stages:
            pipeline.stages.append(stage)
        stages.append(stage)
    session.flush()
    for old, stage in existing.items():
        if old in move_to and old not in new_names:
            target = next(s for s in stages if s.name == move_to[old])
            for deal in session.scalars(select(Deal).where(Deal.stage_id == stage.id)):
                _enter(session, deal, target, current_user_id(), status=deal.status)
    session.flush()
    pipeline.stages = stages  # dropped stages are deleted; their history rows keep the stage's name
    session.flush()
    if make_default or (make_default is None and spec.default) or default_pipeline(session) in (None, pipeline):
        set_default(session, pipeline)
    session.flush()
    return pipeline


# -- deals -----------------------------------------------------------------------------------------------

def recompute(deal: Deal, removed: set = frozenset()) -> None:
    """A deal with line items takes its amount (total contract value) and MRR from them."""
    lines = [line for line in deal.lines if line not in removed]
    if lines:
        deal.amount = sum((line.total for line in lines), Decimal(0))
        deal.mrr = sum((line.mrr for line in lines), Decimal(0))
    elif removed:
        deal.mrr = Decimal(0)


@event.listens_for(Session, "before_flush")
def _amounts(session: Session, _context, _instances) -> None:
    removed = {obj for obj in session.deleted if isinstance(obj, DealLine)}
    changed = [*session.new, *session.dirty, *removed]
    for line in changed:
        if isinstance(line, DealLine) and line.deal is None and line.deal_id is not None:
            line.deal = session.get(Deal, line.deal_id)  # a line added by id (API) joins its deal's lines
    deals = {obj for obj in changed if isinstance(obj, Deal)}
    deals |= {obj.deal for obj in changed if isinstance(obj, DealLine) and obj.deal is not None}
    for deal in deals:
        if deal not in session.deleted:
            recompute(deal, removed)


def create_deal(session: Session, deal: Deal, *, user_id: int | None = None) -> Deal:
    """Add `deal` in its stage (the default pipeline's first stage when none is given): probability from the
    stage unless set, stage history opened, the stage's activities created as tasks."""
    user_id = user_id if user_id is not None else current_user_id()
    if deal.stage is None and deal.stage_id is not None:
        deal.stage = session.get(Stage, deal.stage_id)
    if deal.stage is None:
        pipeline = deal.pipeline or (session.get(Pipeline, deal.pipeline_id) if deal.pipeline_id else None) \
            or default_pipeline(session)
        if pipeline is None or not pipeline.stages:
            raise StageChangeRefused([gettext("There is no sales pipeline yet: load one first.")])
        deal.stage = pipeline.stages[0]
    deal.pipeline = deal.stage.pipeline
    deal.pipeline_id = deal.stage.pipeline_id
    if deal.probability is None:
        deal.probability = deal.stage.probability
    deal.status = deal.status or "open"
    if deal.owner_id is None:
        deal.owner_id = user_id
    if deal.company_id is None and deal.company is None and deal.contact_id is None and deal.contact is None:
        raise StageChangeRefused([gettext("A deal belongs to a company or a contact.")])
    session.add(deal)
    now = utcnow()
    deal.stage_entered_at = now
    session.flush()
    session.add(StageHistory(deal=deal, stage_id=deal.stage.id, stage_name=deal.stage.name, status=deal.status,
                             entered_at=now, entered_by_id=user_id))
    if deal.status == "open":
        _create_tasks(session, deal, deal.stage, now)
    emit(session, "crm_deal_created", _payload(deal))
    return deal


def _create_tasks(session: Session, deal: Deal, stage: Stage, now: dt.datetime) -> None:
    names = list(stage.activities or [])
    if not names:
        return
    have = set(session.scalars(select(Activity.subject).where(Activity.deal_id == deal.id,
                                                              Activity.stage_id == stage.id)))
    due = now + dt.timedelta(days=stage.task_due_days)
    for name in names:
        if name not in have:
            session.add(Activity(kind="task", subject=name, deal_id=deal.id, stage_id=stage.id,
                                 company_id=deal.company_id, contact_id=deal.contact_id,
                                 user_id=deal.owner_id, occurred_at=now, due_at=due, done=False))


def missing_activities(session: Session, deal: Deal, target: Stage) -> list[str]:
    """Why `deal` may not move forward to `target`: required activities of the stages it would leave or skip
    that are not done (empty when it may)."""
    if deal.stage is None or target.position <= deal.stage.position:
        return []
    passed = [s for s in deal.stage.pipeline.stages
              if deal.stage.position <= s.position < target.position and s.activities_required and s.activities]
    if not passed:
        return []
    done = set(session.execute(select(Activity.stage_id, Activity.subject).where(
        Activity.deal_id == deal.id, Activity.done.is_(True),
        Activity.stage_id.in_([s.id for s in passed]))).all())
    reasons = []
    for stage in passed:
        missing = [name for name in stage.activities if (stage.id, name) not in done]
        if missing:
            reasons.append(gettext("“%(stage)s” needs these activities done first: %(missing)s",
                                   stage=stage.name, missing="、".join(missing)))
    return reasons


def _vetoes(deal: Deal, target: Stage) -> list[str]:
    """Every enabled module's answer to `crm_validate_stage_change` (the CRM's own required-activity rule
    is one of them)."""
    if not has_app_context():
        return []
    from bigledger_core.modules import enabled_modules

    host = current_app.extensions["bigledger"]
    reasons: list[str] = []
    for _plugin, answer in host.call_each("crm_validate_stage_change", modules=enabled_modules(),
                                          deal=deal, stage=target):
        if isinstance(answer, str):
            answer = [answer]
        reasons += [str(a) for a in answer or [] if a]
    return reasons


def deal_warnings(deal: Deal) -> list[str]:
    """Every enabled module's warnings about a deal just created (`crm_deal_warnings`, e.g. a credit hold);
    they are shown to the user and never stop the deal."""
    warnings: list[str] = []
    for _plugin, answer in _each_module("crm_deal_warnings", deal=deal):
        if isinstance(answer, str):
            answer = [answer]
        warnings += [str(a) for a in answer or [] if a]
    return warnings


def _each_module(hook: str, **kwargs) -> list[tuple[str, object]]:
    """(module, answer) of every enabled module implementing a CRM extension hook."""
    if not has_app_context():
        return []
    from bigledger_core.modules import enabled_modules

    return current_app.extensions["bigledger"].call_each(hook, modules=enabled_modules(), **kwargs)


def deal_panels(deal: Deal) -> list[dict]:
    """The panels enabled modules show on a deal's page (`crm_deal_panels`), each with its `module`; a module
    that fails shows a panel saying so."""
    from ..services import contributions, unavailable_panel

    answers, failed = contributions("crm_deal_panels", deal=deal)
    return [{"module": plugin, **panel} for plugin, answer in answers for panel in answer or []] \
        + [unavailable_panel(module) for module in failed]


FLAGGED_LINE = frozenset({"short", "unavailable"})


def line_checks(deal: Deal, lines: list[DealLine]) -> list[list[dict]]:
    """What enabled modules say about each line (`crm_deal_line_checks`: availability, price): one list of checks
    per line, in the order of `lines`, each check with its `module`."""
    checks: list[list[dict]] = [[] for _ in lines]
    if not lines:
        return checks
    from ..services import contributions

    answers, failed = contributions("crm_deal_line_checks", deal=deal, lines=list(lines))
    for module in failed:  # a module that failed has not checked any line
        for line_checks_ in checks:
            line_checks_.append({"module": module, "status": "unknown",
                                 "message": gettext("Not checked: this module did not answer.")})
    for plugin, answer in answers:
        for check in answer or []:
            index = check.get("line")
            if isinstance(index, int) and 0 <= index < len(lines):
                checks[index].append({"module": plugin, **check})
    return checks


def check_line(deal: Deal, line: DealLine, *, adding: bool) -> list[str]:
    """Ask the modules about a line being saved: a new line without a unit price takes the first price offered
    in the deal's currency; returns the warnings of a short or unavailable product."""
    checks = line_checks(deal, [line])[0]
    if adding and not line.unit_price:
        for check in checks:
            if check.get("price") is not None and check.get("currency") in (None, deal.currency):
                line.unit_price = Decimal(check["price"])
                break
    return [str(check["message"]) for check in checks
            if check.get("status") in FLAGGED_LINE and check.get("message")]


def checks_json(checks: list[list[dict]], lines: list[DealLine]) -> list[dict]:
    """Line checks as JSON: per line its id, product and the modules' checks (amounts as strings)."""
    def plain(value):
        return str(value) if isinstance(value, Decimal) else value

    return [{"line_id": line.id, "product": line.product, "product_code": line.product_code,
             "flagged": any(c.get("status") in FLAGGED_LINE for c in line_checks_),
             "checks": [{key: plain(value) for key, value in check.items() if key != "line"}
                        for check in line_checks_]}
            for line, line_checks_ in zip(lines, checks, strict=True)]


def exchange_rate(from_currency: str, to_currency: str, on: dt.date) -> Decimal | None:
    """The first enabled module's rate from one currency to another on a day (`crm_exchange_rate`); 1 for the
    same currency, None when no module has one."""
    if from_currency == to_currency:
        return Decimal(1)
    if not has_app_context():
        return None
    from bigledger_core.modules import enabled_modules

    host = current_app.extensions["bigledger"]
    for _plugin, answer in host.call_each("crm_exchange_rate", modules=enabled_modules(),
                                          from_currency=from_currency, to_currency=to_currency, on=on):
        if answer is not None:
            return Decimal(answer)
    return None


def _enter(session: Session, deal: Deal, stage: Stage, user_id: int | None, *, status: str = "open") -> None:
    now = utcnow()
    session.execute(update(StageHistory).where(StageHistory.deal_id == deal.id, StageHistory.left_at.is_(None))
                    .values(left_at=now, left_by_id=user_id))
    deal.stage, deal.stage_id, deal.status, deal.stage_entered_at = stage, stage.id, status, now
    session.add(StageHistory(deal_id=deal.id, stage_id=stage.id, stage_name=stage.name, status=status,
                             entered_at=now, entered_by_id=user_id))
    if status != "lost":  # the won stage's activities (signing, kick-off) follow the win
        _create_tasks(session, deal, stage, now)


def _stage(session: Session, deal: Deal, stage: Stage | int | str) -> Stage:
    if isinstance(stage, Stage):
        found = stage
    elif isinstance(stage, int):
        found = session.get(Stage, stage)
    else:
        found = session.scalar(select(Stage).where(Stage.pipeline_id == deal.pipeline_id, Stage.name == stage))
    if found is None or found.pipeline_id != deal.pipeline_id:
        raise StageChangeRefused([gettext("“%(stage)s” is not a stage of the pipeline “%(pipeline)s”.",
                                          stage=getattr(found, "name", stage), pipeline=deal.pipeline.name)])
    return found


def move_deal(session: Session, deal: Deal, stage: Stage | int | str, *, user_id: int | None = None,
              reason: str | None = None) -> Deal:
    """Move an open deal to another stage of its pipeline. Moving into the won stage wins it (a reason is
    required). Refused, with every reason, when a module vetoes the move (required activities not done…)."""
    user_id = user_id if user_id is not None else current_user_id()
    target = _stage(session, deal, stage)
    if deal.status != "open":
        raise StageChangeRefused([gettext("The deal is closed (%(status)s): reopen it before moving it.",
                                          status=status_label(deal.status))])
    if target.id == deal.stage_id:
        return deal
    if target.is_won:
        return win_deal(session, deal, reason=reason, user_id=user_id)
    reasons = _vetoes(deal, target)
    if reasons:
        raise StageChangeRefused(reasons)
    previous = deal.stage
    _enter(session, deal, target, user_id)
    deal.probability, deal.probability_reason = target.probability, None
    session.flush()
    emit(session, "crm_deal_stage_changed", {**_payload(deal), "from_stage_id": previous.id,
                                             "from_stage": previous.name, "user_id": user_id})
    return deal


def _reason(reason: str | None, outcome: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise StageChangeRefused([gettext("Say why the deal was won.") if outcome == "won"
                                  else gettext("Say why the deal was lost.")])
    if len(text) > 500:
        raise StageChangeRefused([gettext("The reason is longer than %(max)d characters.", max=500)])
    return text


def win_deal(session: Session, deal: Deal, *, reason: str | None, user_id: int | None = None) -> Deal:
    """Close the deal as won: into the won stage at 100 %, with the reason."""
    user_id = user_id if user_id is not None else current_user_id()
    if deal.status != "open":
        raise StageChangeRefused([gettext("The deal is closed (%(status)s): reopen it before moving it.",
                                          status=status_label(deal.status))])
    text = _reason(reason, "won")
    won = deal.pipeline.stages[-1]
    reasons = _vetoes(deal, won)
    if reasons:
        raise StageChangeRefused(reasons)
    previous = deal.stage
    _enter(session, deal, won, user_id, status="won")
    deal.probability, deal.probability_reason = Decimal(1), None
    deal.closed_at, deal.close_reason, deal.lost_to_id = utcnow(), text, None
    session.flush()
    payload = _payload(deal)
    emit(session, "crm_deal_stage_changed", {**payload, "from_stage_id": previous.id, "from_stage": previous.name,
                                             "user_id": user_id})
    emit(session, "crm_deal_won", {**payload, "reason": text, "closed_at": deal.closed_at.isoformat(),
                                   "lines": [_line(line) for line in deal.lines]})
    return deal


def lose_deal(session: Session, deal: Deal, *, reason: str | None, lost_to_id: int | None = None,
              user_id: int | None = None) -> Deal:
    """Close the deal as lost where it stands, with the reason and the competitor it went to."""
    user_id = user_id if user_id is not None else current_user_id()
    if deal.status != "open":
        raise StageChangeRefused([gettext("The deal is closed (%(status)s): reopen it before moving it.",
                                          status=status_label(deal.status))])
    text = _reason(reason, "lost")
    _enter(session, deal, deal.stage, user_id, status="lost")
    deal.probability, deal.probability_reason = Decimal(0), None
    deal.closed_at, deal.close_reason, deal.lost_to_id = utcnow(), text, lost_to_id
    session.flush()
    emit(session, "crm_deal_lost", {**_payload(deal), "reason": text, "closed_at": deal.closed_at.isoformat(),
                                    "lost_to": deal.lost_to.name if deal.lost_to else None})
    return deal


def reopen_deal(session: Session, deal: Deal, stage: Stage | int | str | None = None, *,
                user_id: int | None = None) -> Deal:
    """Open a closed deal again, in `stage` (by default the stage it was lost in, or the one before won)."""
    user_id = user_id if user_id is not None else current_user_id()
    if deal.status == "open":
        return deal
    stages = deal.pipeline.stages
    target = _stage(session, deal, stage) if stage is not None else (
        deal.stage if deal.status == "lost" else stages[max(0, len(stages) - 2)])
    if target.is_won and len(stages) > 1:
        raise StageChangeRefused([gettext("A reopened deal cannot start in the won stage.")])
    _enter(session, deal, target, user_id)
    deal.probability, deal.probability_reason = target.probability, None
    deal.closed_at, deal.close_reason, deal.lost_to_id = None, None, None
    session.flush()
    return deal


def set_probability(deal: Deal, probability: Decimal, reason: str | None) -> None:
    """Override the stage's probability for this deal; a reason is required when it differs."""
    if probability < 0 or probability > 1:
        raise StageChangeRefused([gettext("The probability must be between 0%% and 100%%.")])
    if probability != deal.stage.probability and not (reason or "").strip():
        raise StageChangeRefused([gettext("Say why this deal's probability differs from its stage's "
                                          "(%(probability)s).", probability=format_probability(deal.stage.probability))])
    deal.probability = probability
    deal.probability_reason = (reason or "").strip() or None


def status_label(status: str) -> str:
    return {"open": gettext("open"), "won": gettext("won"), "lost": gettext("lost")}.get(status, status)


def _payload(deal: Deal) -> dict:
    return {"id": deal.id, "name": deal.name, "company_id": deal.company_id, "contact_id": deal.contact_id,
            "owner_id": deal.owner_id, "team_id": deal.team_id, "pipeline_id": deal.pipeline_id,
            "stage_id": deal.stage_id, "stage": deal.stage.name, "status": deal.status,
            "currency": deal.currency, "amount": str(deal.amount), "probability": str(deal.probability),
            "lead_id": deal.lead_id, "source": deal.source}


def _line(line: DealLine) -> dict:
    return {"product": line.product, "product_code": line.product_code, "quantity": str(line.quantity),
            "unit_price": str(line.unit_price), "discount": str(line.discount),
            "billing_period": line.billing_period, "term_months": line.term_months, "total": str(line.total)}
