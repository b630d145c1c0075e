"""The host as a plugin: its screens, roles, migrations and demo data use the public hooks."""
from __future__ import annotations

from pathlib import Path

from flask import current_app
from flask_babel import lazy_gettext as _l
from marshmallow import Schema, fields
from sqlalchemy import select

from . import __version__
from .i18n import TRANSLATIONS_DIR
from .models import Team
from .plugins import hookimpl

# Security screens FAB registers; only admins manage them.
_SECURITY_VIEWS = r"(User.*|Role.*|Permission.*|ViewMenu.*|Group.*|RegisterUser.*|ApiKey.*|Modules|Teams" \
                  r"|Security|System.*|List Users|List Roles|List Groups|Base Permissions|Views/Menus|User's Statistics" \
                  r"|Permission on Views/Menus|API Keys)"
_READ = r"(can_list|can_show|can_get|can_info|can_download|can_export|menu_access)"


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
    from .runtime_views import DeliveriesView, JobsView, MessagesView

    appbuilder.add_view(JobsView, "Scheduled jobs", label=_l("Scheduled jobs"), icon="fa-clock-o",
                        category="System", category_label=_l("System"))
    appbuilder.add_view(DeliveriesView, "Event deliveries", label=_l("Event deliveries"), icon="fa-exchange",
                        category="System", category_label=_l("System"))
    appbuilder.add_view(MessagesView, "Messages", label=_l("Messages"), icon="fa-envelope",
                        category="System", category_label=_l("System"))


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


class ModuleSwitchedSchema(Schema):
    module = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    by = fields.String(required=True)


class _Address(fields.List):
    def __init__(self, **kwargs):
        super().__init__(fields.String(), **kwargs)


class InboundMessageSchema(Schema):
    id = fields.Integer(required=True)
    message_id = fields.String(required=True)
    in_reply_to = fields.String(allow_none=True)
    references = fields.List(fields.String(), load_default=list)
    sender = _Address(required=True)
    to = fields.List(_Address(), load_default=list)
    cc = fields.List(_Address(), load_default=list)
    subject = fields.String(required=True)
    date = fields.String(allow_none=True)
    text = fields.String(load_default="")
    html = fields.String(allow_none=True)
    source = fields.String(required=True)
    attachments = fields.List(fields.Dict(), load_default=list)
    bounce = fields.Dict(allow_none=True, load_default=None)


@hookimpl
def bigledger_event_types():
    from .events import EventType

    return [
        EventType("bigledger_module_switched", ModuleSwitchedSchema,
                  description={"zh": "管理员启用或停用了模块", "en": "An admin switched a module on or off"}),
        EventType("bigledger_inbound_message", InboundMessageSchema,
                  description={"zh": "收到一封邮件", "en": "An e-mail was received"}),
    ]


@hookimpl
def bigledger_jobs():
    jobs = [
        {"id": "core.deliver_events", "func": "bigledger_core.jobs:deliver_events", "trigger": "interval",
         "trigger_args": {"seconds": 2}, "misfire_grace_time": 30, "record_runs": False,
         "label": {"zh": "投递事件", "en": "Deliver events"}},
        {"id": "core.send_messages", "func": "bigledger_core.jobs:send_messages", "trigger": "interval",
         "trigger_args": {"seconds": 5}, "misfire_grace_time": 30, "record_runs": False,
         "label": {"zh": "发送消息", "en": "Send messages"}},
        {"id": "core.purge", "func": "bigledger_core.jobs:purge", "trigger": "cron",
         "trigger_args": {"hour": 3, "minute": 17}, "misfire_grace_time": 3600,
         "label": {"zh": "清理过期记录", "en": "Purge old records"}},
    ]
    if current_app.config.get("BIGLEDGER_IMAP_HOST"):
        jobs.append({"id": "core.poll_imap", "func": "bigledger_core.jobs:poll_imap", "trigger": "interval",
                     "trigger_args": {"seconds": int(current_app.config["BIGLEDGER_IMAP_POLL_SECONDS"])},
                     "misfire_grace_time": 300, "label": {"zh": "收取邮件", "en": "Fetch incoming mail"}})
    return jobs


@hookimpl
def bigledger_send_message(channel, provider, message):
    if channel != "email" or provider not in {"smtp", "file"}:
        return None
    from .mail.providers import send_file, send_smtp

    if provider == "file":
        return send_file(message, Path(current_app.config["INSTANCE_PATH"]) / "mail" / "outbox")
    return send_smtp(message, current_app.config)
