"""The sample plugin: every hook, the smallest way."""
import threading
from pathlib import Path

import click
from flask import Blueprint, jsonify
from flask_appbuilder import ModelRestApi, ModelView
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_login import login_required
from sqlalchemy import select

from bigledger_core import hookimpl
from bigledger_core.cli import with_appcontext
from bigledger_core.security import OwnedRecordsMixin

from .models import SampleNote

RECEIVED = []  # events delivered to this plugin, for the tests to look at

blueprint = Blueprint("sample", __name__, url_prefix="/sample")


@blueprint.route("/ping")
@login_required
def ping():
    return jsonify({"pong": True})


class SampleNoteView(OwnedRecordsMixin, ModelView):
    datamodel = SQLAInterface(SampleNote)
    class_permission_name = "SampleNote"
    list_columns = ["title", "owner", "team"]
    add_columns = edit_columns = ["title", "owner", "team"]


class SampleNoteApi(OwnedRecordsMixin, ModelRestApi):
    resource_name = "sample_note"
    datamodel = SQLAInterface(SampleNote)
    class_permission_name = "SampleNote"
    list_columns = ["id", "title", "owner_id", "team_id"]
    add_columns = ["title", "owner_id", "team_id"]


@hookimpl
def bigledger_manifest():
    return {"name": "sample", "version": "1.0", "label": {"zh": "样例", "en": "Sample"}, "requires": ["crm"]}


@hookimpl
def bigledger_register_views(appbuilder):
    appbuilder.add_view(SampleNoteView, "Sample notes", category="Sample")
    appbuilder.add_api(SampleNoteApi)
    from flask import current_app

    current_app.register_blueprint(blueprint)


@hookimpl
def bigledger_roles():
    return [{"name": "Sales Rep", "permissions": [("^(Sample|SampleNote)$", ".*")]},
            {"name": "Integrator", "permissions": [("^SampleNote$", "^can_(get|post|put|delete|info)$")]}]


@hookimpl
def bigledger_cli_commands():
    @click.group()
    def sample():
        """Sample plugin commands."""

    @sample.command()
    @with_appcontext
    def count():
        """Print how many sample notes exist."""
        from bigledger_core.db import db

        click.echo(len(db.session.scalars(select(SampleNote.id)).all()))

    return [sample]


@hookimpl
def bigledger_translation_dirs():
    return []


@hookimpl
def bigledger_migration_dirs():
    return [str(Path(__file__).parent / "migrations")]


@hookimpl
def bigledger_load_demo(session, users):
    if session.scalar(select(SampleNote).where(SampleNote.title == "示例 / Sample")) is None:
        session.add(SampleNote(title="示例 / Sample", owner=users.get("demo_rep")))


@hookimpl
def bigledger_health():
    return {"sample": "ok"}


@hookimpl
def bigledger_module_switched(event):
    RECEIVED.append(event)


# How the sample subscribers behave, set by tests: "ok", "raise" or "hang".
BEHAVIOUR = {"bigledger_inbound_message": "ok"}
RELEASE = threading.Event()  # set by tests to end a "hang"
INBOUND = []  # inbound-message events delivered to this plugin


@hookimpl
def bigledger_inbound_message(event):
    mode = BEHAVIOUR["bigledger_inbound_message"]
    if mode == "raise":
        raise RuntimeError("sample subscriber refused the message")
    if mode == "hang":  # until the test is over; the late call then records nothing
        RELEASE.wait(30)
        return
    INBOUND.append(event)


@hookimpl
def bigledger_jobs():
    """Jobs for the scheduler tests: a one-second tick (SAMPLE_TICK_SECONDS) and a failing job."""
    import os

    jobs = []
    if os.environ.get("SAMPLE_TICK_SECONDS"):
        jobs.append({"id": "sample.tick", "func": "tests.sample_plugin.jobs:tick", "trigger": "interval",
                     "trigger_args": {"seconds": 1}, "misfire_grace_time": 30, "coalesce": True,
                     "label": {"zh": "样例节拍", "en": "Sample tick"}})
    if os.environ.get("SAMPLE_FAIL_JOB"):
        jobs.append({"id": "sample.fail", "func": "tests.sample_plugin.jobs:fail", "trigger": "interval",
                     "trigger_args": {"seconds": 1}})
    return jobs


@hookimpl
def crm_timeline_entries(customer, limit):
    """One invoice-like entry per customer, to show that other modules' entries join the timeline."""
    return [{"at": "2020-01-01T00:00:00+00:00", "kind": "invoice", "title": f"样例发票 / Sample invoice {customer.id}",
             "detail": "CNY 1,000.00"}][:limit]


@hookimpl
def crm_customer_panels(customer):
    return [{"title": {"zh": "样例面板", "en": "Sample panel"}, "rows": [["客户 / customer", customer.name]]}]


CRM_EVENTS = []  # CRM contact events delivered to this plugin


@hookimpl
def crm_contact_created(event):
    CRM_EVENTS.append(event)


@hookimpl
def crm_contact_updated(event):
    CRM_EVENTS.append(event)


@hookimpl
def crm_contact_merged(event):
    CRM_EVENTS.append(event)


@hookimpl
def crm_deal_created(event):
    CRM_EVENTS.append(event)


@hookimpl
def crm_deal_stage_changed(event):
    CRM_EVENTS.append(event)


@hookimpl
def crm_deal_won(event):
    CRM_EVENTS.append(event)


@hookimpl
def crm_deal_lost(event):
    CRM_EVENTS.append(event)


STAGE_VETO = []  # reasons this plugin gives to refuse every stage change (tests fill it)
STAGE_CHECKS = []  # (deal name, target stage name) for every check asked of this plugin


@hookimpl
def crm_validate_stage_change(deal, stage):
    STAGE_CHECKS.append((deal.name, stage.name))
    return list(STAGE_VETO)


@hookimpl
def crm_lead_created(event):
    CRM_EVENTS.append(event)


@hookimpl
def crm_lead_qualified(event):
    CRM_EVENTS.append(event)


@hookimpl
def crm_lead_converted(event):
    CRM_EVENTS.append(event)
