"""The `bigledger` command (also `flask bigledger …`)."""
from __future__ import annotations

import contextlib
import functools
import gc
import os
import secrets
import sys

import click
from flask import current_app, has_app_context

from .errors import BigLedgerError

_host = None


def _plugin_host():
    global _host
    if _host is None:
        from .app import _offered
        from .config import setting
        from .plugins import PluginHost

        _host = PluginHost(offered=_offered(setting("BIGLEDGER_MODULES")),
                           strict=setting("BIGLEDGER_STRICT_PLUGINS"),
                           extra_plugins=setting("BIGLEDGER_EXTRA_PLUGINS"))
    return _host


def with_appcontext(func):
    """Run a command inside the app (built once per command); plugins use this for their commands."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if has_app_context():
            return func(*args, **kwargs)
        from .app import create_app

        app = create_app(plugin_host=_plugin_host())
        with app.app_context():
            return func(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def bulk_work():
    """For a command that makes and drops millions of small objects (an import): Python's cyclic garbage
    collector leaves alone the objects that exist when it starts (the app, SQLAlchemy's and Flask-AppBuilder's
    machinery, the dictionaries of phonenumbers and pypinyin), and looks at young objects every 50,000
    allocations instead of every 700. Reference counting still frees nearly everything at once; without this,
    each full collection walks every object of the process, about a third of an import's time."""
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


class BigLedgerGroup(click.Group):
    """The root group: built-in commands plus the groups plugins contribute."""

    def _plugin_commands(self) -> dict[str, click.Command]:
        commands: dict[str, click.Command] = {}
        for _plugin, answer in _plugin_host().call_each("bigledger_cli_commands"):
            for command in answer or []:
                commands[command.name] = command
        return commands

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands()))

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or self._plugin_commands().get(name)


@click.group(cls=BigLedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bigledger-crm", prog_name="bigledger")
def cli():
    """BigLedger CRM: run the server, manage the database, modules and users.

    Settings come from BIGLEDGER_* environment variables (see the README); BIGLEDGER_INSTANCE_PATH
    chooses the instance folder, so several instances can run side by side.
    """


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--no-scheduler", is_flag=True, help="Do not run the scheduler in this process.")
@with_appcontext
def run(host, port, no_scheduler):
    """Serve the web UI and API with the development server, with the scheduler in the same process."""
    from werkzeug.serving import run_simple

    from .app import configure_logging, settle
    from .migrate import current

    if not current().get("core"):
        raise click.ClickException("the database is not initialised: run `bigledger db upgrade` first")
    configure_logging(current_app)
    settle()
    if not no_scheduler:
        from .scheduler import start_in_thread

        start_in_thread(current_app._get_current_object())
    click.echo(f"BigLedger on http://{host}:{port}/ (instance {current_app.instance_path})")
    run_simple(host, port, current_app._get_current_object(), threaded=True, use_reloader=False)


@cli.command()
@with_appcontext
def scheduler():
    """Run the job scheduler as its own process.

    Start several for availability: exactly one is active (it holds a PostgreSQL advisory lock, or a
    file lock next to the SQLite database); a standby takes over within seconds when it dies. Stop it
    with SIGTERM or Ctrl-C.
    """
    import signal

    from .app import configure_logging, settle
    from .migrate import current
    from .scheduler import SchedulerService

    if not current().get("core"):
        raise click.ClickException("the database is not initialised: run `bigledger db upgrade` first")
    configure_logging(current_app)
    settle()
    service = SchedulerService(current_app._get_current_object())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    click.echo(f"scheduler {service.node} started; waiting to become the active scheduler")
    service.run_forever()


def _table(rows: list[list], headers: list[str]) -> None:
    widths = [max(len(str(v)) for v in [h, *[r[i] for r in rows]]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@cli.group()
def events():
    """Event deliveries: list them, retry failed and dead ones."""


@events.command("list")
@click.option("--status", type=click.Choice(["pending", "failed", "dead", "delivered", "all"]), default="all",
              show_default=True, help="Only deliveries in this state.")
@click.option("--event", "name", default=None, help="Only this event name.")
@click.option("--subscriber", default=None, help="Only this subscribing module.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@with_appcontext
def events_list(status, name, subscriber, limit):
    """List event deliveries, newest first."""
    from sqlalchemy import select

    from .db import db as database
    from .events import counts_by_status
    from .models import EventDelivery, OutboxEvent

    query = (select(EventDelivery, OutboxEvent).join(OutboxEvent)
             .order_by(EventDelivery.id.desc()).limit(limit))
    if status != "all":
        query = query.where(EventDelivery.status == status)
    if name:
        query = query.where(OutboxEvent.name == name)
    if subscriber:
        query = query.where(EventDelivery.subscriber == subscriber)
    rows = [[d.id, e.name, d.subscriber, d.status, d.attempts, _when(d.next_attempt_at), e.id,
             (d.last_error or "").strip().splitlines()[-1][:60] if d.last_error else ""]
            for d, e in database.session.execute(query)]
    _table(rows, ["id", "event", "subscriber", "status", "attempts", "next attempt", "event id", "last error"])
    totals = counts_by_status(database.session)
    click.echo(", ".join(f"{key}: {totals.get(key, 0)}" for key in ("pending", "failed", "dead", "delivered")))


@events.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="Retry every dead delivery.")
@click.option("--all-failed", is_flag=True, help="Retry every failed delivery now instead of after its back-off.")
@click.option("--now/--later", default=True, show_default=True,
              help="Deliver right away in this process, or leave it to the scheduler.")
@with_appcontext
def events_retry(ids, all_dead, all_failed, now):
    """Make deliveries due again: the IDS given, or all dead / failed ones."""
    from .db import db as database
    from .events import deliver_due, retry

    if not ids and not all_dead and not all_failed:
        raise click.UsageError("give delivery ids, --all-dead or --all-failed")
    count = 0
    if ids:
        count += retry(database.session, ids=list(ids))
    if all_dead:
        count += retry(database.session, status="dead")
    if all_failed:
        count += retry(database.session, status="failed")
    database.session.commit()
    click.echo(f"{count} deliveries due again")
    if now and count:
        result = deliver_due(current_app._get_current_object())
        click.echo(", ".join(f"{key}: {value}" for key, value in result.items()))


@cli.group()
def jobs():
    """Scheduled jobs: list them, run one now, pause or resume."""


@jobs.command("list")
@with_appcontext
def jobs_list():
    """List the jobs of the enabled modules with their next and last run."""
    from .db import db as database
    from .scheduler import job_statuses, nodes

    rows = [[j.id, j.module, j.trigger, "paused" if j.paused else _when(j.next_run_at), _when(j.last_run_at),
             j.last_outcome or "-"] for j in job_statuses(current_app, database.session)]
    _table(rows, ["job", "module", "schedule", "next run", "last run", "outcome"])
    for node in nodes(database.session):
        click.echo(f"scheduler {node.node}: {node.role}, heartbeat {_when(node.heartbeat_at)}")


def _job_command(command: str, help_text: str):
    @jobs.command(command, help=help_text)
    @click.argument("job_id")
    @with_appcontext
    def handler(job_id):
        from .db import db as database
        from .scheduler import job_statuses, request_job

        if job_id not in {j.id for j in job_statuses(current_app, database.session)}:
            raise click.ClickException(f"no job {job_id!r} in the enabled modules (see `bigledger jobs list`)")
        request_job(database.session, job_id, run_now=command == "run",
                    paused={"pause": True, "resume": False}.get(command))
        database.session.commit()
        click.echo(f"{job_id}: {command} requested; the active scheduler applies it within seconds")

    return handler


_job_command("run", "Ask the active scheduler to run JOB_ID now.")
_job_command("pause", "Pause JOB_ID until it is resumed.")
_job_command("resume", "Resume a paused JOB_ID.")


@cli.group()
def mail():
    """Mail: read .eml files into the inbound hook, send a test message."""


@mail.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def mail_ingest(files):
    """Read FILES (.eml) as received mail: each is stored once and passed to `bigledger_inbound_message`."""
    from pathlib import Path

    from .db import db as database
    from .mail.ingest import ingest

    for path in files:
        try:
            row, created = ingest(database.session, Path(path).read_bytes(), f"file:{Path(path).name}")
            database.session.commit()
        except ValueError as exc:
            database.session.rollback()
            raise click.ClickException(f"{path}: {exc}") from None
        state = "stored" if created else "already received"
        click.echo(f"{path}: {state} as message {row.id} from {row.sender_address}: {row.subject}")


@mail.command("send-test")
@click.argument("to")
@with_appcontext
def mail_send_test(to):
    """Queue a bilingual test e-mail to TO and send it now with the configured provider."""
    from .db import db as database
    from .mail.outbound import MessageError, queue_email, send_due

    try:
        message = queue_email(database.session, to=to, subject="BigLedger 测试邮件 / test message",
                              text="这是一封来自 BigLedger CRM 的测试邮件。\nThis is a test message from BigLedger CRM.",
                              html="<p>这是一封来自 <b>BigLedger CRM</b> 的测试邮件。</p>"
                                   "<p>This is a test message from <b>BigLedger CRM</b>.</p>",
                              source="cli:send-test")
        database.session.commit()
    except MessageError as exc:
        raise click.ClickException(str(exc)) from None
    send_due(current_app._get_current_object())
    database.session.expire_all()
    message = database.session.get(type(message), message.id)
    if message.status != "sent":
        raise click.ClickException(f"not sent ({message.status}): {message.last_error}")
    click.echo(f"sent to {message.to_address} with {message.provider} (Message-ID <{message.message_id}>)")


@cli.group()
def db():
    """Database schema: one migration branch per module."""


@db.command("upgrade")
@click.option("--module", "modules", multiple=True, metavar="NAME",
              help="Upgrade only this module's branch (repeatable). Default: every enabled module.")
@with_appcontext
def db_upgrade(modules):
    """Create or update the schema of the enabled modules, then sync permissions and roles."""
    from .migrate import upgrade
    from .security import sync_security

    done = upgrade(list(modules) or None)
    sync_security(current_app.appbuilder)
    click.echo(f"upgraded: {', '.join(done)}")


@db.command("downgrade")
@click.argument("target")
@with_appcontext
def db_downgrade(target):
    """Downgrade to TARGET: a revision, MODULE@base (drop a module's tables), MODULE@-1, or base."""
    from .migrate import downgrade

    downgrade(target)
    click.echo(f"downgraded to {target}")


@db.command("current")
@with_appcontext
def db_current():
    """Show the applied revision of each module's branch."""
    from .migrate import current

    for name, revision in sorted(current().items()):
        click.echo(f"{name:20} {revision or '-'}")


@cli.command("create-admin")
@click.option("--username", default="admin", show_default=True)
@click.option("--email", default="admin@example.com", show_default=True)
@click.option("--password", default=None,
              help="Default: BIGLEDGER_ADMIN_PASSWORD, else a generated one printed once.")
@click.option("--first-name", default="Admin", show_default=True)
@click.option("--last-name", default="BigLedger", show_default=True)
@click.option("--if-missing", is_flag=True, help="Do nothing (and succeed) when the user already exists.")
@with_appcontext
def create_admin(username, email, password, first_name, last_name, if_missing):
    """Create an administrator account (non-interactive)."""
    sm = current_app.appbuilder.sm
    if sm.find_user(username=username) is not None:
        if if_missing:
            click.echo(f"admin {username!r} exists")
            return
        raise click.ClickException(f"user {username!r} already exists")
    generated = False
    if not password:
        password = os.environ.get("BIGLEDGER_ADMIN_PASSWORD") or ""
    if not password:
        password, generated = secrets.token_urlsafe(12), True
    role = sm.find_role(sm.auth_role_admin)
    if role is None:
        raise click.ClickException("the Admin role is missing: run `bigledger db upgrade` first")
    if not sm.add_user(username, first_name, last_name, email, role, password):
        raise click.ClickException(f"could not create {username!r} (is {email!r} already used?)")
    click.echo(f"admin {username!r} created")
    if generated:
        click.echo(f"generated password (shown once): {password}")


@cli.command()
@with_appcontext
def demo():
    """Load bilingual demo data into every enabled module (running it again adds nothing twice)."""
    from .demo import load_demo

    for line in load_demo():
        click.echo(line)


@cli.group()
def modules():
    """List modules and switch them on or off (stored in the database)."""


@modules.command("list")
@with_appcontext
def modules_list():
    """Every module with its version, requirements and state."""
    from .db import db as database
    from .modules import enabled_modules, switched_off

    host = current_app.extensions["bigledger"]
    enabled, off = set(enabled_modules()), switched_off(database.session)
    click.echo(f"{'module':18} {'version':9} {'state':9} {'requires':24} label")
    for name in host.modules:
        manifest = host.manifests[name]
        state = "enabled" if name in enabled else ("disabled" if name in off else "blocked")
        requires = ",".join(r for r in manifest.requires if r != "core") or "-"
        click.echo(f"{name:18} {manifest.version:9} {state:9} {requires:24} "
                   f"{manifest.label['zh']} / {manifest.label['en']}")
    for name, error in sorted(host.failed.items()):
        click.echo(f"{name:18} {'?':9} {'failed':9} {'-':24} {error}")


@modules.command("enable")
@click.argument("name")
@with_appcontext
def modules_enable(name):
    """Switch module NAME on (its requirements must be on); runs its migrations."""
    from .modules import enable_module
    from .security import sync_security

    enable_module(name, by="cli")
    sync_security(current_app.appbuilder)
    click.echo(f"{name} enabled")


@modules.command("disable")
@click.argument("name")
@with_appcontext
def modules_disable(name):
    """Switch module NAME off (refused while an enabled module requires it); its data is kept."""
    from .modules import disable_module

    disable_module(name, by="cli")
    click.echo(f"{name} disabled")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: errors become one line on stderr and exit code 1."""
    try:
        cli.main(args=argv, prog_name="bigledger", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BigLedgerError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
