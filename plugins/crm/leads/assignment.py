"""Who gets a new lead: assignment rules (a criterion in the rule language → a team or a user), tried in
order, then weighted round robin among the team's eligible reps; manual reassignment. Every assignment is
recorded with who did it and why. The screens and the REST API are in `assignment_views`.

Round robin is race-free: the team's `RoundRobin` row is locked (`SELECT … FOR UPDATE`) from the choice
until the transaction that assigns the lead commits, so concurrent assignments to one team take turns.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from flask_appbuilder.security.sqla.models import User
from flask_babel import gettext
from sqlalchemy import exists, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bigledger_core.config import setting
from bigledger_core.errors import BigLedgerError
from bigledger_core.models import Team, team_member

from ..common.rules import Node, RuleError, evaluate, parse
from .models import Assignment, AssignmentRule, Lead, LeadFact, RepSetting, RoundRobin
from .vocabulary import lead_vocabulary, record_of

log = logging.getLogger(__name__)

# Statuses that count against a rep's capacity (max open leads).
CAPACITY_STATUSES = ("new", "working", "nurturing", "qualified")
MAX_WEIGHT = 100
_CRITERION_KEPT = 100  # characters of a rule's criterion kept in the assignment's reason


class AssignmentError(BigLedgerError):
    """A manual assignment that cannot be made; the message says why (translated)."""


@dataclass(frozen=True)
class Rep:
    """A rep who may receive a lead now, with their round-robin weight."""

    user_id: int
    weight: int


@dataclass(frozen=True)
class RuleProblem:
    """An active rule whose criterion no longer parses (a custom field was removed…): it is skipped."""

    rule_id: int
    position: int
    name: str
    message: str


# -- who may receive leads ----------------------------------------------------------------------------------

def eligible_reps(session: Session, *, team_id: int | None = None, user_id: int | None = None,
                  today: dt.date | None = None) -> list[Rep]:
    """The reps who may receive a lead now, by user id: active users (members of `team_id`, or just `user_id`)
    who are available, not away (`away_until` is before today), with a weight of at least 1 and fewer open
    leads than their capacity. Reps without settings count as weight 1, no capacity limit. One query."""
    today = today or dt.date.today()
    open_leads = (select(func.count()).select_from(Lead)
                  .where(Lead.owner_id == User.id, Lead.status.in_(CAPACITY_STATUSES))
                  .correlate(User).scalar_subquery())
    weight = func.coalesce(RepSetting.weight, 1)
    query = (select(User.id, weight).select_from(User).outerjoin(RepSetting, RepSetting.user_id == User.id)
             .where(User.active.is_(True), or_(RepSetting.user_id.is_(None), RepSetting.available.is_(True)),
                    or_(RepSetting.away_until.is_(None), RepSetting.away_until < today), weight >= 1,
                    or_(RepSetting.max_open_leads.is_(None), open_leads < RepSetting.max_open_leads))
             .order_by(User.id))
    if team_id is not None:
        query = query.join(team_member, team_member.c.user_id == User.id).where(team_member.c.team_id == team_id)
    if user_id is not None:
        query = query.where(User.id == user_id)
    return [Rep(uid, min(int(w), MAX_WEIGHT)) for uid, w in session.execute(query)]


def pick(reps: list[Rep], position: int) -> Rep:
    """The rep at `position` of the weighted round-robin cycle of `reps` (interleaved: in pass k every rep
    whose weight is at least k gets one lead, so weights 2, 1, 1 give A B C A). A cycle has sum(weights)
    slots; each rep gets exactly its weight's share of every cycle."""
    slot = position % sum(rep.weight for rep in reps)
    for k in range(1, max(rep.weight for rep in reps) + 1):
        this_pass = [rep for rep in reps if rep.weight >= k]
        if slot < len(this_pass):
            return this_pass[slot]
        slot -= len(this_pass)
    raise AssertionError("unreachable: the slot is within the cycle")


def _lock_round_robin(session: Session, team_id: int) -> RoundRobin:
    """The team's round-robin row, created if missing and locked until the transaction ends. On PostgreSQL
    `FOR UPDATE` makes concurrent assignments to the team wait here in turn; SQLite serializes writers, and
    the INSERT has already taken the database's write lock."""
    locked = (select(RoundRobin).where(RoundRobin.team_id == team_id).with_for_update()
              .execution_options(populate_existing=True))
    state = session.scalar(locked)
    if state is None:  # the team's first lead: whoever inserts first wins, the others wait for its commit
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(RoundRobin).values(team_id=team_id, position=0).on_conflict_do_nothing())
        state = session.scalars(locked).one()
    return state


def round_robin(session: Session, team_id: int, *, today: dt.date | None = None) -> int | None:
    """Lock the team's round robin, choose the next eligible rep (weighted) and move on; None when nobody
    in the team may receive a lead. Capacity is counted after the lock is taken, so it sees every lead that
    an earlier assignment to this team committed."""
    state = _lock_round_robin(session, team_id)
    reps = eligible_reps(session, team_id=team_id, today=today)
    if not reps:
        return None
    rep = pick(reps, state.position)
    state.position = (state.position % sum(r.weight for r in reps)) + 1
    state.last_user_id = rep.user_id
    return rep.user_id


# -- rules --------------------------------------------------------------------------------------------------

def active_rules(session: Session) -> tuple[list[tuple[AssignmentRule, Node]], list[RuleProblem]]:
    """The active rules in order with their parsed criteria, and the problems of those that do not parse."""
    rules = session.scalars(select(AssignmentRule).where(AssignmentRule.active.is_(True))
                            .order_by(AssignmentRule.position, AssignmentRule.id)).all()
    if not rules:
        return [], []
    vocabulary = lead_vocabulary(session)
    parsed, problems = [], []
    for rule in rules:
        try:
            parsed.append((rule, parse(rule.criterion, vocabulary)))
        except RuleError as exc:
            problems.append(RuleProblem(rule.id, rule.position, rule.name, str(exc)))
    return parsed, problems


def criterion_problem(session: Session, criterion: str) -> str | None:
    """Why `criterion` is refused (translated, with the position), or None when it parses."""
    try:
        parse(criterion, lead_vocabulary(session))
    except RuleError as exc:
        return str(exc)
    return None


# -- assigning ----------------------------------------------------------------------------------------------

def default_team_id(session: Session) -> int | None:
    """The team named by BIGLEDGER_LEAD_DEFAULT_TEAM (its id, Chinese or English name), if any."""
    value = current_app.config.get("BIGLEDGER_LEAD_DEFAULT_TEAM") if has_app_context() \
        else setting("BIGLEDGER_LEAD_DEFAULT_TEAM")
    value = str(value or "").strip()
    if not value:
        return None
    condition = or_(Team.name == value, Team.name_en == value)
    if value.isdigit():
        condition = or_(condition, Team.id == int(value))
    found = session.scalar(select(Team.id).where(condition).order_by(Team.id).limit(1))
    if found is None:
        log.warning("BIGLEDGER_LEAD_DEFAULT_TEAM=%r names no team; leads that no rule routes stay unassigned",
                    value)
    return found


def _team_names(session: Session, team_id: int) -> dict:
    name, name_en = session.execute(select(Team.name, Team.name_en).where(Team.id == team_id)).one()
    return {"team": name, "team_en": name_en}


def _user_name(session: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    row = session.execute(select(User.first_name, User.last_name, User.username).where(User.id == user_id)).first()
    return None if row is None else (" ".join(part for part in (row[0], row[1]) if part) or row[2])


def _record(session: Session, lead: Lead, user_id: int | None, team_id: int | None, why: dict,
            by_id: int | None) -> Assignment:
    lead.owner_id, lead.team_id = user_id, team_id
    row = Assignment(lead_id=lead.id, user_id=user_id, team_id=team_id, by_id=by_id,
                     reason=json.dumps(why, ensure_ascii=False, separators=(",", ":")))
    session.add(row)
    session.flush()
    session.expire(lead, ["owner", "team"])
    return row


def _to_team(session: Session, lead: Lead, team_id: int, why: dict, by_id: int | None,
             today: dt.date | None) -> Assignment:
    """Round robin in the team; the lead joins the team even when nobody may receive it now."""
    why = {**why, **_team_names(session, team_id)}  # read before the lock: the lock is held until commit
    user_id = round_robin(session, team_id, today=today)
    why["via"] = "round_robin" if user_id is not None else "nobody"
    return _record(session, lead, user_id, team_id, why, by_id)


def _team_of_user(session: Session, user_id: int, preferred: int | None) -> int | None:
    """The team a directly assigned lead goes with: `preferred` when the user is in it, else their first."""
    teams = session.scalars(select(team_member.c.team_id).where(team_member.c.user_id == user_id)
                            .order_by(team_member.c.team_id)).all()
    return preferred if preferred in teams else (teams[0] if teams else None)


def _rule_reason(rule: AssignmentRule) -> dict:
    criterion = rule.criterion if len(rule.criterion) <= _CRITERION_KEPT else rule.criterion[:_CRITERION_KEPT] + "…"
    return {"k": "rule", "position": rule.position, "name": rule.name[:60], "criterion": criterion}


def assign(session: Session, lead: Lead, *, by_id: int | None = None,
           today: dt.date | None = None) -> Assignment | None:
    """Assign `lead` (flushed, scored) to a team and a rep and record it; returns the Assignment row, or None
    when no rule matched and the lead has no team and no default team is configured.

    Active rules are tried by position; a rule whose criterion no longer parses is skipped (the rules screen
    shows why). A matching rule with a user assigns that user when they are available and under capacity;
    otherwise its team (if any) takes the lead by round robin, or the next rule is tried. A rule with only a
    team assigns by round robin in that team. When no rule matches: round robin in the lead's own team
    (e.g. from its web form), else in the default team (BIGLEDGER_LEAD_DEFAULT_TEAM)."""
    rules, problems = active_rules(session)
    for problem in problems:
        log.warning("assignment rule %s (%s) skipped: %s", problem.position, problem.name, problem.message)
    if rules:
        facts = set(session.scalars(select(LeadFact.fact).where(LeadFact.lead_id == lead.id)))
        record = record_of(lead, facts)
    for rule, node in rules:
        if not evaluate(node, record):
            continue
        why = _rule_reason(rule)
        if rule.user_id is not None:
            if eligible_reps(session, user_id=rule.user_id, today=today):
                team_id = rule.team_id or _team_of_user(session, rule.user_id, lead.team_id)
                return _record(session, lead, rule.user_id, team_id, {**why, "via": "user"}, by_id)
            if rule.team_id is None:
                continue
            why["skipped"] = _user_name(session, rule.user_id)
        return _to_team(session, lead, rule.team_id, why, by_id, today)
    if lead.team_id is not None:
        return _to_team(session, lead, lead.team_id, {"k": "lead_team"}, by_id, today)
    team_id = default_team_id(session)
    if team_id is not None:
        return _to_team(session, lead, team_id, {"k": "default_team"}, by_id, today)
    return None


def reassign(session: Session, lead: Lead, *, user_id: int | None = None, team_id: int | None = None,
             by_id: int | None = None, today: dt.date | None = None) -> Assignment:
    """Assign `lead` by hand: to a user (in `team_id` when given, of which they must be a member), or to a
    team by its round robin. A manager may exceed a rep's capacity or availability this way. Recorded with
    `by_id`. Raises AssignmentError naming the problem."""
    if user_id is None and team_id is None:
        raise AssignmentError(gettext("Choose a user, a team or both."))
    if user_id is not None and not session.scalar(select(User.active).where(User.id == user_id)):
        raise AssignmentError(gettext("user_id: there is no active user %(id)s.", id=user_id))
    if team_id is not None and session.get(Team, team_id) is None:
        raise AssignmentError(gettext("team_id: there is no team %(id)s.", id=team_id))
    why = {"k": "manual", "by": _user_name(session, by_id)}
    if user_id is None:
        return _to_team(session, lead, team_id, why, by_id, today)
    if team_id is not None and not session.scalar(select(exists().where(team_member.c.team_id == team_id,
                                                                         team_member.c.user_id == user_id))):
        raise AssignmentError(gettext("%(user)s is not a member of team %(team)s; add them to the team or "
                                      "choose another team.", user=_user_name(session, user_id),
                                      team=_team_names(session, team_id)["team"]))
    team_id = team_id or _team_of_user(session, user_id, lead.team_id)
    return _record(session, lead, user_id, team_id, {**why, "via": "user"}, by_id)


# -- reading the history -------------------------------------------------------------------------------------

def describe(reason: str, locale: str = "zh") -> str:
    """An assignment's stored reason as a sentence in the current language (`locale` picks a team's name)."""
    try:
        why: dict[str, Any] = json.loads(reason)
    except ValueError:
        return reason
    if not isinstance(why, dict):
        return reason
    team = (why.get("team_en") if locale == "en" else None) or why.get("team") or ""
    kind, via = why.get("k"), why.get("via")
    origin = None
    if kind == "rule":
        origin = gettext("rule %(position)s (%(name)s: %(criterion)s)", position=why.get("position"),
                         name=why.get("name"), criterion=why.get("criterion"))
        if why.get("skipped"):
            origin = gettext("%(rule)s: %(user)s is unavailable or at capacity", rule=origin, user=why["skipped"])
    elif kind == "manual":
        origin = gettext("manual by %(user)s", user=why.get("by") or "?")
    if via == "user":
        return origin or ""
    if via == "round_robin":
        if origin:
            return gettext("%(origin)s, round robin in %(team)s", origin=origin, team=team)
        if kind == "lead_team":
            return gettext("round robin in %(team)s (the lead's team)", team=team)
        return gettext("round robin in %(team)s (the default team)", team=team)
    if origin:
        return gettext("%(origin)s; nobody in %(team)s is available or under capacity", origin=origin, team=team)
    if kind == "lead_team":
        return gettext("nobody in %(team)s (the lead's team) is available or under capacity", team=team)
    return gettext("nobody in %(team)s (the default team) is available or under capacity", team=team)


def history(session: Session, lead_id: int, locale: str = "zh") -> list[dict]:
    """The lead's assignments, newest first, with names and the reason as a sentence. One query."""
    by = User.__table__.alias("by_user")
    rows = session.execute(
        select(Assignment, User.username, User.first_name, User.last_name, Team.name, Team.name_en,
               by.c.username, by.c.first_name, by.c.last_name)
        .outerjoin(User, User.id == Assignment.user_id).outerjoin(Team, Team.id == Assignment.team_id)
        .outerjoin(by, by.c.id == Assignment.by_id)
        .where(Assignment.lead_id == lead_id).order_by(Assignment.at.desc(), Assignment.id.desc()))

    def person(username, first, last):
        return None if username is None else (" ".join(p for p in (first, last) if p) or username)

    return [{"id": row.id, "at": row.at, "user_id": row.user_id, "user": person(un, fn, ln),
             "team_id": row.team_id, "team": (team_en if locale == "en" else None) or team,
             "by_id": row.by_id, "by": person(bun, bfn, bln), "reason": describe(row.reason, locale),
             "reason_detail": _detail(row.reason)}
            for row, un, fn, ln, team, team_en, bun, bfn, bln in rows]


def _detail(reason: str) -> dict:
    try:
        value = json.loads(reason)
    except ValueError:
        return {"text": reason}
    return value if isinstance(value, dict) else {"text": reason}


def register(appbuilder) -> None:
    """Add the assignment screens and API."""
    from .assignment_views import register as register_views

    register_views(appbuilder)
