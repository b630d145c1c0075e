"""The host as a plugin: its screens, roles, migrations and demo data use the public hooks."""
from __future__ import annotations

from pathlib import Path

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from . import __version__
from .i18n import TRANSLATIONS_DIR
from .models import Team
from .plugins import hookimpl

# Security screens FAB registers; only admins manage them.
_SECURITY_VIEWS = r"(User.*|Role.*|Permission.*|ViewMenu.*|Group.*|RegisterUser.*|ApiKey.*|Modules|Teams" \
                  r"|Security|List Users|List Roles|List Groups|Base Permissions|Views/Menus|User's Statistics" \
                  r"|Permission on Views/Menus|API Keys)"
_READ = r"(can_list|can_show|can_get|can_info|can_download|menu_access)"


@hookimpl
def bigledger_manifest():
    return {"name": "core", "version": __version__, "label": {"zh": "平台核心", "en": "Platform core"},
            "requires": [], "description": {"zh": "模块、团队、用户与权限", "en": "Modules, teams, users and permissions"}}


@hookimpl
def bigledger_register_views(appbuilder):
    from .views import ModulesView, TeamModelView

    appbuilder.add_view(TeamModelView, "Teams", label=_l("Teams"), icon="fa-users",
                        category="Security", category_label=_l("Security"))
    appbuilder.add_view(ModulesView, "Modules", label=_l("Modules"), icon="fa-puzzle-piece",
                        category="Security", category_label=_l("Security"))


@hookimpl
def bigledger_roles():
    return [
        {"name": "Admin", "permissions": [(".*", ".*")], "record_scope": "all"},
        {"name": "Read-only", "permissions": [(rf"^(?!{_SECURITY_VIEWS}$).*$", rf"^{_READ}$")],
         "record_scope": "all"},
    ]


@hookimpl
def bigledger_translation_dirs():
    return [str(TRANSLATIONS_DIR)]


@hookimpl
def bigledger_migration_dirs():
    return [str(Path(__file__).parent / "migrations" / "versions")]


# Demo teams: (name, English name, parent name, manager user name, member user names)
DEMO_TEAMS = [
    ("销售总部", "Sales headquarters", None, "demo_manager", []),
    ("华东销售部", "East China Sales", "销售总部", None, ["demo_rep", "demo_rep2"]),
    ("东南亚销售部", "South-East Asia Sales", "销售总部", None, ["demo_rep3"]),
]


@hookimpl
def bigledger_load_demo(session, users):
    existing = {team.name: team for team in session.scalars(select(Team))}
    for name, name_en, parent, manager, members in DEMO_TEAMS:
        team = existing.get(name)
        if team is None:
            team = existing[name] = Team(name=name)
            session.add(team)
        team.name_en = name_en
        team.parent = existing.get(parent) if parent else None
        team.manager = users.get(manager) if manager else None
        for member in members:
            if users.get(member) is not None and users[member] not in team.members:
                team.members.append(users[member])
