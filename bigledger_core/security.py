"""Security: roles contributed by plugins, record visibility by owner and team, API-only accounts."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import current_app, flash, g, has_request_context, request
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_babel import lazy_gettext as _l
from sqlalchemy import Integer, bindparam, false, or_, select

from .db import ids_param
from .models import Team, team_member

log = logging.getLogger(__name__)

SCOPE_ALL = "all"
# how long a worker trusts what it read of the Public role's permissions
PUBLIC_PERMISSIONS_SECONDS = 30.0
SCOPE_TEAM = "team"
# Every signed-in user may see and edit their own profile and password, whatever their role.
SELF_SERVICE = ("^(UserDBModelView|ResetMyPasswordView|UserInfoEditView)$",
                "^(can_userinfo|can_this_form_get|can_this_form_post|resetmypassword|userinfoedit)$")


def collect_roles(answers: list[tuple[str, list[dict[str, Any]] | None]]) -> dict[str, dict[str, Any]]:
    """Merge the role specs plugins return from `bigledger_roles` into one spec per role name."""
    roles: dict[str, dict[str, Any]] = {}
    for _plugin, specs in answers:
        for spec in specs or []:
            name = spec["name"]
            merged = roles.setdefault(name, {"permissions": [SELF_SERVICE], "record_scope": SCOPE_TEAM,
                                             "api_only": False})
            merged["permissions"].extend(tuple(p) for p in spec.get("permissions", []))
            if spec.get("record_scope") == SCOPE_ALL:
                merged["record_scope"] = SCOPE_ALL
            merged["api_only"] = merged["api_only"] or bool(spec.get("api_only"))
    return roles


class BigLedgerSecurityManager(SecurityManager):
    """FAB's security manager plus record scopes and API-only roles from `bigledger_roles`."""

    def role_specs(self) -> dict[str, dict[str, Any]]:
        return current_app.config.get("BIGLEDGER_ROLE_SPECS", {})

    def record_scope(self, user) -> str:
        specs = self.role_specs()
        if any(role.name == self.auth_role_admin or specs.get(role.name, {}).get("record_scope") == SCOPE_ALL
               for role in user.roles):
            return SCOPE_ALL
        return SCOPE_TEAM

    def is_api_only(self, user) -> bool:
        specs = self.role_specs()
        return bool(user.roles) and all(specs.get(role.name, {}).get("api_only") for role in user.roles)

    # -- what every request asks: who is the user, and is this view public ------------------------------

    def get_user_by_id(self, pk):
        """The user with their roles, their groups and the groups' roles in one statement (FAB loads each
        relationship with a query of its own, on every request)."""
        from sqlalchemy.orm import joinedload

        user, group = self.user_model, self.group_model
        return self.session.scalars(select(user).where(user.id == pk).options(
            joinedload(user.roles), joinedload(user.groups).joinedload(group.roles))).unique().first()

    def is_item_public(self, permission_name, view_name):
        """Whether the Public role has this permission: read from the database at most every
        PUBLIC_PERMISSIONS_SECONDS per worker (FAB reads it on every request to every protected view)."""
        return (permission_name, view_name) in self._public_permissions()

    def _public_permissions(self) -> frozenset[tuple[str, str]]:
        now = time.monotonic()
        cached = getattr(self, "_public_cache", None)
        if cached is not None and cached[0] > now:
            return cached[1]
        pairs = frozenset((pv.permission.name, pv.view_menu.name) for pv in self.get_public_permissions() or []
                          if pv.permission is not None and pv.view_menu is not None)
        self._public_cache = (now + PUBLIC_PERMISSIONS_SECONDS, pairs)
        return pairs

    def forget_public_permissions(self) -> None:
        self._public_cache = None

    def add_permission_role(self, role, perm_view) -> None:
        super().add_permission_role(role, perm_view)
        self.forget_public_permissions()

    def del_permission_role(self, role, perm_view) -> None:
        super().del_permission_role(role, perm_view)
        self.forget_public_permissions()

    def auth_user_db(self, username, password):
        user = super().auth_user_db(username, password)
        if user is not None and has_request_context() and not request.path.startswith("/api/") \
                and self.is_api_only(user):
            flash(str(_l("This account may only be used through the API.")), "warning")
            return None
        return user


def sync_security(appbuilder) -> None:
    """Write every view's permissions and the built-in roles to the database (run after upgrades)."""
    appbuilder.add_permissions(update_perms=True)
    sm = appbuilder.sm
    # Plugin roles are FAB built-in roles: their permissions are patterns checked at run time,
    # so only the role rows (for assigning users) are stored.
    for name in [*sm.builtin_roles, sm.auth_role_admin, sm.auth_role_public]:
        if sm.find_role(name) is None:
            sm.add_role(name)


def visible_team_ids(session, user_id: int) -> set[int]:
    """Teams whose records `user_id` sees: teams they belong to or manage, and sub-teams of those."""
    member = select(team_member.c.team_id).where(team_member.c.team_id == Team.id,
                                                 team_member.c.user_id == user_id).exists()
    rows = session.execute(select(Team.id, Team.parent_id, Team.manager_id, member)).all()
    member_of = {team_id for team_id, _parent, _manager, is_member in rows if is_member}
    children: dict[int | None, list[int]] = {}
    for team_id, parent_id, _manager, _member in rows:
        children.setdefault(parent_id, []).append(team_id)
    seen: set[int] = set()
    stack = list(member_of) + [team_id for team_id, _, manager, _member in rows if manager == user_id]
    while stack:
        team_id = stack.pop()
        if team_id not in seen:
            seen.add(team_id)
            stack.extend(children.get(team_id, []))
    return seen


def _scope_and_teams(user, session) -> tuple[str, set[int]]:
    """The user's record scope and visible teams, read once per request."""
    cache = g.setdefault("bigledger_visibility", {}) if has_request_context() else {}
    if user.id not in cache:
        scope = current_app.appbuilder.sm.record_scope(user)
        cache[user.id] = (scope, set() if scope == SCOPE_ALL else visible_team_ids(session, user.id))
    return cache[user.id]


def visibility_clause(model, user, session):
    """SQL condition for the rows of `model` (an OwnedMixin model) that `user` may see; None for all."""
    if user is None or not getattr(user, "is_authenticated", False):
        return false()
    scope, teams = _scope_and_teams(user, session)
    if scope == SCOPE_ALL:
        return None
    return or_(model.owner_id == user.id, model.team_id.in_(teams)) if teams else model.owner_id == user.id


def visibility_shape(user, session) -> tuple[str, dict[str, Any]]:
    """`visibility_clause` for a statement built once and run for many users: the form its condition takes
    ("all", "none", "own" or "own_or_teams", see `visible_where`) and the values of its bind parameters."""
    if user is None or not getattr(user, "is_authenticated", False):
        return "none", {}
    scope, teams = _scope_and_teams(user, session)
    if scope == SCOPE_ALL:
        return "all", {}
    return ("own_or_teams", {"viewer": user.id, "teams": sorted(teams)}) if teams else ("own", {"viewer": user.id})


def visible_where(model, shape: str, dialect: str) -> list:
    """The conditions of `visibility_clause` in the form `shape` names, with the bind parameters `viewer` and
    `teams` (their values come from `visibility_shape`)."""
    if shape == "all":
        return []
    if shape == "none":
        return [false()]
    own = model.owner_id == bindparam("viewer", type_=Integer)
    return [own] if shape == "own" else [or_(own, ids_param(dialect, model.team_id, "teams"))]


def visible_record(model, pk, user, session):
    """The `model` row with id `pk` if `user` may see it; None when there is none, it is not theirs to see,
    or `pk` is not a whole number (a path or form value)."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        return None
    query = select(model).where(model.id == pk)
    clause = visibility_clause(model, user, session)
    return session.scalar(query.where(clause) if clause is not None else query)


class FilterVisibleRecords(BaseFilter):
    """FAB base filter: only the records the current user may see (see `visibility_clause`)."""

    name = _l("Visible records")
    arg_name = "visible"

    def apply(self, query, value):
        clause = visibility_clause(self.model, getattr(g, "user", None), self.datamodel.session)
        return query if clause is None else query.filter(clause)


def _no_value():
    return None


class OwnedRecordsMixin:
    """Mix into a ModelView or ModelRestApi of an OwnedMixin model: scope by owner/team, default owner."""

    base_filters = [["owner_id", FilterVisibleRecords, _no_value]]

    def pre_add(self, item) -> None:
        user = getattr(g, "user", None)
        if getattr(item, "owner_id", None) is None and user is not None and user.is_authenticated:
            # set the relationships too: a form may have set them to None, which would win at flush
            item.owner_id, item.owner = user.id, user
            if getattr(item, "team_id", None) is None and getattr(user, "teams", None):
                item.team_id, item.team = user.teams[0].id, user.teams[0]
        super_pre_add = getattr(super(), "pre_add", None)
        if super_pre_add:
            super_pre_add(item)
