"""The project bridge's commands: the rules that choose which won deals get a delivery project, asking the project
module (whichever plugin answers the `project_*` hooks) to create it exactly once per deal, and the standalone
answers from the bridge's own tables used when no project module is installed.

No Flask request is needed: the event subscriber, the screens, the API and the demo call the same functions.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from functools import cache
from typing import Any

from flask import g, has_request_context
from flask_babel import gettext
from sqlalchemy import Integer, bindparam, case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bigledger_core.db import ids_param, utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.modules import ask_service

from .models import CLOSED_STATUSES, PROJECT_STATUSES, Milestone, Project, ProjectRule

MAX_MILESTONES = 50
MAX_DAYS = 3650


class ProjectError(BigLedgerError):
    """A project command refused: the message names the field and says what to do."""


class NoProjectAnswer(BigLedgerError):
    """No plugin answered a project service hook."""


def today() -> dt.date:
    return utcnow().date()


def status_label(status: str) -> str:
    """A project status in the user's language."""
    return {"planned": gettext("planned"), "active": gettext("active"), "on_hold": gettext("on hold"),
            "done": gettext("done"), "cancelled": gettext("cancelled")}.get(status, status)


# -- asking the project module --------------------------------------------------------------------------------

ask_projects = ask_service  # `project_*` hooks: the deployment's project module first, else this bridge


def projects_for_view(customer, limit: int) -> dict[str, Any] | None:
    """`project_customer_projects` for a CRM customer, asked once per request for its 360° view: the timeline
    asks for a page of projects, and the panel (the open count and the newest few) reuses that."""
    memo = g.setdefault("project_bridge_accounts", {}) if has_request_context() else {}
    known = memo.get((customer.kind, customer.id))
    if known is not None and known[0] >= limit:
        return known[1] and {**known[1], "projects": (known[1].get("projects") or [])[:limit]}
    account = ask_projects("project_customer_projects", customer=customer_dict(customer), limit=limit)
    memo[(customer.kind, customer.id)] = (limit, account)
    return account


def customer_dict(customer) -> dict[str, Any]:
    """A CRM customer reference (`crm_customer_panels`' `customer`) as the dict the project hooks take."""
    return {"kind": customer.kind, "id": customer.id, "name": customer.name,
            "company_ids": list(customer.company_ids), "contact_ids": list(customer.contact_ids)}


# -- rules ------------------------------------------------------------------------------------------------------

def _days(value: Any, where: str) -> int:
    text = str(value).strip() if value is not None else ""
    try:
        days = int(text)
    except ValueError:
        days = -1
    if isinstance(value, float | bool) or not 0 <= days <= MAX_DAYS:
        raise ProjectError(gettext("%(field)s: give the days after the project's start as a whole number from 0 to "
                                   "%(max)s, not “%(value)s”.", field=where, max=MAX_DAYS, value=text[:20]))
    return days


def parse_milestones(value: Any) -> list[dict[str, Any]]:
    """A rule's milestone template from the API (a list of {"name", "days"}; Chinese keys 名称 and 天数 too),
    cleaned: at least one, names non-empty, days from 0 up. ProjectError names the bad entry."""
    if not isinstance(value, list) or not value:
        raise ProjectError(gettext("milestones: give at least one milestone, e.g. [{\"name\": \"上线 / Go-live\", "
                                   "\"days\": 30}]."))
    if len(value) > MAX_MILESTONES:
        raise ProjectError(gettext("milestones: at most %(max)s milestones.", max=MAX_MILESTONES))
    cleaned = []
    for index, item in enumerate(value):
        where = f"milestones[{index}]"
        if not isinstance(item, dict):
            raise ProjectError(gettext("%(field)s: give a name and days, e.g. {\"name\": \"上线 / Go-live\", "
                                       "\"days\": 30}.", field=where))
        name = str(item.get("name", item.get("名称")) or "").strip()
        if not name or len(name) > 200:
            raise ProjectError(gettext("%(field)s.name: give the milestone a name of at most 200 characters.",
                                       field=where))
        cleaned.append({"name": name, "days": _days(item.get("days", item.get("天数")), f"{where}.days")})
    return cleaned


def parse_milestones_text(text: str | None) -> list[dict[str, Any]]:
    """The rule screen's milestones, one a line as `name | days` (e.g. `上线 / Go-live | 30`)."""
    items = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        name, bar, days = line.rpartition("|")
        if not bar:
            raise ProjectError(gettext("milestones, line %(line)s: write “name | days”, e.g. “上线 / Go-live | 30”.",
                                       line=number))
        items.append({"name": name.strip(), "days": days.strip()})
    return parse_milestones(items)


def check_rule(rule: ProjectRule) -> ProjectRule:
    """Validate and tidy a rule from the screen, the API or the demo (ProjectError names the field)."""
    rule.name = (rule.name or "").strip()
    if not rule.name or len(rule.name) > 200:
        raise ProjectError(gettext("name: give the rule a name of at most 200 characters."))
    rule.product_code = (rule.product_code or "").strip() or None
    if rule.product_code is not None and len(rule.product_code) > 60:
        raise ProjectError(gettext("product_code: at most 60 characters."))
    if rule.pipeline_id is not None and rule.pipeline_id not in pipeline_names():
        raise ProjectError(gettext("pipeline_id: there is no pipeline %(id)s; leave it empty for every pipeline.",
                                   id=rule.pipeline_id))
    rule.position = 0 if rule.position is None else rule.position
    if rule.active is None:
        rule.active = True
    rule.milestones = parse_milestones(rule.milestones)
    return rule


def pipeline_names() -> dict[int, str]:
    """The CRM's pipelines by id and name (`crm_pipelines`), to choose and check a rule's pipeline."""
    return {p["id"]: p["name"] for p in ask_projects("crm_pipelines") or []}


def customer_name(company_id: int | None, contact_id: int | None) -> str | None:
    """The CRM's name of a project's customer (`crm_customers`): its company, else its contact."""
    if company_id is None and contact_id is None:
        return None
    found = ask_projects("crm_customers", company_ids=[company_id] if company_id is not None else [],
                         contact_ids=[contact_id] if company_id is None else [], external_ids=[]) or {}
    record = (found.get("companies", {}).get(company_id) if company_id is not None
              else found.get("contacts", {}).get(contact_id))
    return record["name"] if record else None


def matching_rule(session: Session, payload: dict[str, Any]) -> ProjectRule | None:
    """The first active rule, by position, that a won deal's event payload matches; None: no project."""
    codes = {str(line.get("product_code") or "").strip().casefold() for line in payload.get("lines") or []} - {""}
    for rule in session.scalars(select(ProjectRule).where(ProjectRule.active.is_(True))
                                .order_by(ProjectRule.position, ProjectRule.id)):
        if rule.pipeline_id is not None and rule.pipeline_id != payload.get("pipeline_id"):
            continue
        if rule.product_code is not None and rule.product_code.casefold() not in codes:
            continue
        return rule
    return None


# -- won deal -> project, once -----------------------------------------------------------------------------------

def _won_on(payload: dict[str, Any]) -> dt.date:
    try:
        return dt.datetime.fromisoformat(payload["closed_at"]).date()
    except (KeyError, TypeError, ValueError):
        return today()


def project_request(payload: dict[str, Any], rule: ProjectRule) -> dict[str, Any]:
    """The `project_create` request for a won deal's event payload and the rule it matched: the project starts
    the day the deal was won and each milestone falls due its days later."""
    start = _won_on(payload)
    milestones = [{"name": m["name"], "due": start + dt.timedelta(days=int(m["days"])), "position": position}
                  for position, m in enumerate(rule.milestones or [])]
    return {"idempotency_key": f"crm-deal-{payload['id']}", "name": payload["name"],
            "customer": {"company_id": payload.get("company_id"), "contact_id": payload.get("contact_id"),
                         "name": customer_name(payload.get("company_id"), payload.get("contact_id"))},
            "start": start, "due": max((m["due"] for m in milestones), default=start),
            "template": {"rule_id": rule.id, "name": rule.name}, "milestones": milestones,
            "currency": payload.get("currency"), "amount": Decimal(str(payload.get("amount") or "0")),
            "source": {"kind": "deal", "id": payload["id"], "name": payload["name"],
                       "pipeline_id": payload.get("pipeline_id"), "owner_id": payload.get("owner_id")}}


def project_for_won_deal(session: Session, event) -> Project | None:
    """Have the project module create the delivery project of a won deal when a rule says so, once per deal: a
    repeated delivery (or the deal won again after reopening) finds the project and does nothing. A failure of the
    module raises, so the outbox retries the event later; the idempotency key keeps the module from creating two."""
    payload = event.payload
    if session.scalar(select(Project.id).where(Project.deal_id == payload["id"])) is not None:
        return None
    rule = matching_rule(session, payload)
    if rule is None:
        return None
    request = project_request(payload, rule)
    answer = ask_projects("project_create", request=request)
    if not answer:
        raise NoProjectAnswer(f"no project module created a project for deal {payload['id']}")
    project = session.scalar(select(Project).where(Project.deal_id == payload["id"]))
    if project is None:  # the module made it: keep the link, its number and what was asked for
        project = Project(deal_id=payload["id"], external_id=str(answer["id"])[:64], idempotency_key=None,
                          status=str(answer.get("status") or "planned")[:20], **_fields(request))
        project.number = str(answer["number"])[:64] if answer.get("number") else None
        session.add(project)
    project.rule_id, project.event_id = rule.id, event.id
    try:
        session.commit()
    except IntegrityError:  # another delivery of the same deal got there first
        session.rollback()
        return None
    return project


def _fields(request: dict[str, Any]) -> dict[str, Any]:
    customer = request.get("customer") or {}
    source = request.get("source") or {}
    return {"name": str(request.get("name") or "")[:200] or "—", "company_id": customer.get("company_id"),
            "contact_id": customer.get("contact_id"), "start_on": request.get("start"), "due_on": request.get("due"),
            "customer_name": (customer.get("name") or None) and str(customer["name"])[:200],
            "deal_name": (source.get("name") or None) and str(source["name"])[:200]}


# -- standalone storage: the answers when no project module is installed -----------------------------------------

def create_project(session: Session, request: dict[str, Any]) -> dict[str, Any]:
    """Create a project with its milestones from a `project_create` request; a known idempotency key returns the
    project made for it before."""
    key = request.get("idempotency_key")
    if key:
        found = session.scalar(select(Project).where(Project.idempotency_key == key))
        if found is not None:
            return _answer(found)
    customer = request.get("customer") or {}
    if customer.get("company_id") is None and customer.get("contact_id") is None:
        raise ProjectError(gettext("A project needs a customer: a company or a contact."))
    source = request.get("source") or {}
    project = Project(idempotency_key=key, status="planned", created_at=utcnow(),
                      deal_id=source.get("id") if source.get("kind") == "deal" else None,
                      rule_id=(request.get("template") or {}).get("rule_id"), **_fields(request))
    for position, item in enumerate(request.get("milestones") or []):
        project.milestones.append(Milestone(position=item.get("position", position), name=str(item["name"])[:200],
                                            due_on=item.get("due")))
    session.add(project)
    session.flush()
    project.number = f"PRJ-{project.id:06d}"
    session.flush()
    return _answer(project)


def _answer(project: Project) -> dict[str, Any]:
    return {"id": str(project.id), "number": project.number, "status": project.status}


def set_status(session: Session, project: Project, status: str) -> Project:
    """Change a project's status (planned, active, on hold, done, cancelled)."""
    _own(project)
    if status not in PROJECT_STATUSES:
        raise ProjectError(gettext("status: choose one of %(choices)s, not “%(value)s”.",
                                   choices=", ".join(PROJECT_STATUSES), value=str(status)[:30]))
    project.status, project.updated_at = status, utcnow()
    session.flush()
    return project


def set_milestone_done(session: Session, milestone: Milestone, done: bool = True,
                       at: dt.datetime | None = None) -> Milestone:
    """Mark a milestone reached (at `at`, default now), or not reached after all. Reaching the first milestone of
    a planned project makes it active; a cancelled or done project's milestones stay as they are."""
    project = milestone.project
    _own(project)
    if project.status in CLOSED_STATUSES:
        raise ProjectError(gettext("Project %(number)s is %(status)s: reopen it before changing its milestones.",
                                   number=project.number, status=status_label(project.status)))
    if done:
        at = at or utcnow()
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        if at > utcnow() + dt.timedelta(minutes=5):
            raise ProjectError(gettext("done_at: a milestone cannot be reached in the future."))
        milestone.done_at = at.astimezone(dt.UTC)
        if project.status == "planned":
            project.status = "active"
    else:
        milestone.done_at = None
    project.updated_at = utcnow()
    session.flush()
    return milestone


def _own(project: Project) -> None:
    if project.external_id is not None:
        raise ProjectError(gettext("Project %(number)s is kept by the project module: change it there.",
                                   number=project.number or project.external_id))


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _project_dicts(session: Session, projects: list[Project]) -> list[dict[str, Any]]:
    """Projects as the hooks answer them, their milestones read in one query."""
    milestones: dict[int, list[dict[str, Any]]] = defaultdict(list)
    own = [p.id for p in projects if p.external_id is None]
    if own:
        for m in session.scalars(select(Milestone).where(Milestone.project_id.in_(own))
                                 .order_by(Milestone.project_id, Milestone.position, Milestone.id)):
            milestones[m.project_id].append({"name": m.name, "due": m.due_on, "done_at": _utc(m.done_at),
                                             "position": m.position})
    return [{"id": str(p.id), "number": p.number, "name": p.name, "status": p.status, "start": p.start_on,
             "due": p.due_on, "deal_id": p.deal_id, "created_at": _utc(p.created_at),
             "url": f"/project/projects/show/{p.id}", "milestones": milestones.get(p.id, [])} for p in projects]


def deal_projects(session: Session, deal_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The projects of these deals, by deal id (the `project_status` answer)."""
    projects = list(session.scalars(select(Project).where(Project.deal_id.in_(list(deal_ids))))) if deal_ids else []
    return {p["deal_id"]: p for p in _project_dicts(session, projects)}


@cache
def _customer_projects_statements(dialect: str, by_company: bool, with_people: bool):
    """Built once per shape: the newest `:limit` projects of the customer (`:ids`, companies or contacts; with a
    company's people, `:people`, for their projects without a company), each row with the customer's open
    count (a window count, taken before the limit), and the open count alone."""
    where = ids_param(dialect, Project.company_id if by_company else Project.contact_id, "ids")
    if with_people:
        where = or_(where, Project.company_id.is_(None) & ids_param(dialect, Project.contact_id, "people"))
    is_open = Project.status.not_in(CLOSED_STATUSES)
    newest = select(Project, func.sum(case((is_open, 1), else_=0)).over()).where(where) \
        .order_by(Project.created_at.desc(), Project.id.desc()).limit(bindparam("limit", type_=Integer))
    return newest, select(func.count()).select_from(Project).where(where, is_open)


def customer_projects(session: Session, customer: dict[str, Any], limit: int) -> dict[str, Any]:
    """How many of the customer's projects are open, and the newest `limit` (the `project_customer_projects`
    answer). For a company, its contacts' projects without a company count too."""
    by_company = customer.get("kind") == "company"
    people = list(customer.get("contact_ids") or [])
    ids = list(customer.get("company_ids") or [customer["id"]]) if by_company else (people or [customer["id"]])
    params = {"ids": ids, "people": people, "limit": limit}
    newest, open_count = _customer_projects_statements(session.get_bind().dialect.name, by_company,
                                                       by_company and bool(people))
    if limit <= 0:
        return {"open": session.scalar(open_count, params) or 0, "projects": []}
    rows = session.execute(newest, params).all()
    return {"open": int(rows[0][1] or 0) if rows else 0, "projects": _project_dicts(session, [r[0] for r in rows])}


def move_customer(session: Session, kind: str, merged_id: int, survivor_id: int) -> None:
    """After the CRM merged a company (or contact) into another: its projects belong to the survivor."""
    from sqlalchemy import update

    column = Project.company_id if kind == "company" else Project.contact_id
    session.execute(update(Project).where(column == merged_id).values({column: survivor_id}))
