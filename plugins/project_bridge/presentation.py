"""How delivery projects read on a deal's page, in the 360° panel and in the customer's timeline."""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask_babel import gettext

from .services import status_label

TITLE = {"zh": "交付项目", "en": "Delivery project"}
CUSTOMER_TITLE = {"zh": "交付项目", "en": "Delivery projects"}
OPEN_PROJECT = {"zh": "打开项目", "en": "Open project"}
ALL_PROJECTS = {"zh": "全部项目", "en": "All projects"}
PANEL_PROJECTS = 3


def _date(value: dt.date | dt.datetime | None) -> str:
    if value is None:
        return "—"
    return value.date().isoformat() if isinstance(value, dt.datetime) else value.isoformat()


def _label(project: dict[str, Any]) -> str:
    return " · ".join(part for part in (project.get("number"), project.get("name")) if part)


def progress(project: dict[str, Any]) -> str:
    """"1 of 3 milestones reached"."""
    milestones = project.get("milestones") or []
    done = sum(1 for m in milestones if m.get("done_at"))
    return gettext("%(done)s of %(total)s milestones reached", done=done, total=len(milestones))


def next_milestone(project: dict[str, Any]) -> str:
    """The first milestone not reached yet, with its due date."""
    milestones = project.get("milestones") or []
    for milestone in sorted(milestones, key=lambda m: m.get("position") or 0):
        if not milestone.get("done_at"):
            return gettext("%(name)s, due %(due)s", name=milestone["name"], due=_date(milestone.get("due")))
    return gettext("All reached") if milestones else "—"


def deal_panel(project: dict[str, Any]) -> dict[str, Any]:
    """The deal page's panel: the project, its status, milestones reached and the next one."""
    panel = {"title": TITLE, "rows": [
        [gettext("Project"), _label(project)],
        [gettext("Status"), status_label(project.get("status") or "")],
        [gettext("Milestones"), progress(project)],
        [gettext("Next milestone"), next_milestone(project)],
        [gettext("Due"), _date(project.get("due"))]]}
    if project.get("url"):
        panel.update(url=project["url"], link=OPEN_PROJECT)
    return panel


def customer_panel(account: dict[str, Any], customer) -> dict[str, Any]:
    """The 360° panel: how many projects are open, and the newest ones with status and progress; it links to the
    customer's projects on the Delivery projects screen."""
    rows = [[gettext("Open projects"), str(account.get("open") or 0)]]
    for project in (account.get("projects") or [])[:PANEL_PROJECTS]:
        rows.append([_label(project), " · ".join([status_label(project.get("status") or ""), progress(project),
                                                   gettext("next: %(milestone)s", milestone=next_milestone(project))])])
    column = "company_id" if customer.kind == "company" else "contact_id"
    return {"title": CUSTOMER_TITLE, "rows": rows, "url": f"/project/projects/list/?_flt_0_{column}={customer.id}",
            "link": ALL_PROJECTS}


def _at(value: dt.date | dt.datetime | None) -> str:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC).isoformat()
    return ""


def timeline(account: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Projects (when created) and milestones (when reached), newest first, at most `limit`."""
    entries = []
    for project in account.get("projects") or []:
        entry = {"at": _at(project.get("created_at") or project.get("start")), "kind": "project",
                 "title": gettext("Project %(project)s created", project=_label(project)),
                 "detail": f"{status_label(project.get('status') or '')} · {progress(project)}"}
        if project.get("url"):
            entry["url"] = project["url"]
        entries.append(entry)
        for milestone in project.get("milestones") or []:
            if milestone.get("done_at"):
                entries.append({"at": _at(milestone["done_at"]), "kind": "milestone",
                                "title": gettext("Milestone reached: %(milestone)s", milestone=milestone["name"]),
                                "detail": _label(project), **({"url": project["url"]} if project.get("url") else {})})
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[:limit]
