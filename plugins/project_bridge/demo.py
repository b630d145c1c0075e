"""Demo data of the project bridge: bilingual rules (a deal won with a warehouse licence gets a roll-out project;
every other deal won in the product page's pipeline an implementation project) and the project of the demo's won
deal (made by the rule from the deal's `crm_deal_won` event), its kick-off reached, so the deal's page and the
customer's 360° view show a project under way."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from bigledger_core.db import utcnow

from .models import Milestone, Project, ProjectRule
from .services import ask_projects, check_rule, project_for_won_deal, set_milestone_done

RULE = "实施交付 / Implementation delivery"
MILESTONES = [("项目启动会 / Kick-off meeting", 0), ("需求确认 / Requirements signed off", 7),
              ("系统上线 / Go-live", 30), ("项目验收 / Acceptance", 45)]
PIPELINE = "销售管道"
# a product's own rule comes first: a won deal with a warehouse licence gets a roll-out across its warehouses
PRODUCT_RULE = ("仓储系统部署 / Warehouse roll-out", "WMS-LIC",
                [("现场勘察 / Site survey", 3), ("首仓上线 / First warehouse live", 21),
                 ("全部仓库上线 / All warehouses live", 60)])
WON_DEAL = "华夏零售 BI 报表 / BI reports"


def load(session, users) -> None:
    """Add the rules and the won demo deal's project once (a rule by name, the project by deal). The deal is known
    from its `crm_deal_won` event, as a live deployment knows it."""
    from bigledger_core.models import OutboxEvent

    pipeline_id = next((p["id"] for p in ask_projects("crm_pipelines") or [] if p["name"] == PIPELINE), None)
    name, code, milestones = PRODUCT_RULE
    if session.scalar(select(ProjectRule.id).where(ProjectRule.name == name)) is None:
        session.add(check_rule(ProjectRule(name=name, position=5, active=True, product_code=code,
                                           milestones=[{"name": n, "days": days} for n, days in milestones])))
    rule = session.scalar(select(ProjectRule).where(ProjectRule.name == RULE))
    if rule is None:
        rule = check_rule(ProjectRule(name=RULE, position=10, active=True, pipeline_id=pipeline_id,
                                      milestones=[{"name": name, "days": days} for name, days in MILESTONES]))
        session.add(rule)
        session.flush()
    # the CRM's demo deals are committed so that their events reach the outbox (and, where events are delivered
    # at once, the rules above create the won deal's project); the demo then follows that event itself
    session.commit()
    won = next((event for event in session.scalars(
        select(OutboxEvent).where(OutboxEvent.name == "crm_deal_won").order_by(OutboxEvent.occurred_at.desc()))
        if event.payload.get("name") == WON_DEAL), None)
    if won is None:
        return
    project_for_won_deal(session, won)
    project = session.scalar(select(Project).where(Project.deal_id == won.payload["id"]))
    if project is None:
        return
    kick_off = session.scalar(select(Milestone).where(Milestone.project_id == project.id, Milestone.position == 0))
    if kick_off is not None and kick_off.done_at is None:
        won_at = dt.datetime.fromisoformat(won.payload["closed_at"])
        won_at = won_at if won_at.tzinfo else won_at.replace(tzinfo=dt.UTC)
        set_milestone_done(session, kick_off, True, max(won_at, utcnow() - dt.timedelta(hours=2)))
