"""The `bigledger` command (also `flask bigledger …`)."""
from __future__ import annotations

import functools
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
@with_appcontext
def run(host, port):
    """Serve the web UI and API with the single-process development server."""
    from werkzeug.serving import run_simple

    from .app import configure_logging
    from .migrate import current

    if not current().get("core"):
        raise click.ClickException("the database is not initialised: run `bigledger db upgrade` first")
    configure_logging(current_app)
    click.echo(f"BigLedger on http://{host}:{port}/ (instance {current_app.instance_path})")
    run_simple(host, port, current_app._get_current_object(), threaded=True, use_reloader=False)


@cli.command()
def scheduler():
    """Run the job scheduler as its own process (one active among several)."""
    raise click.ClickException("the scheduler is not available in this version yet")


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
