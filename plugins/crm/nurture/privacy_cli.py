"""`bigledger crm privacy …` (a person's data: export, erase) and `bigledger crm suppression …` (the
suppression list: add, remove, list)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask_babel import gettext

from bigledger_core.cli import with_appcontext

from .models import SUPPRESSION_REASONS


def _fail(message: str) -> None:
    click.echo(gettext("Error: %(problem)s", problem=message), err=True)
    sys.exit(1)


@click.group()
def privacy():
    """A person's data: export it, erase it."""


@privacy.command("export")
@click.argument("email")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the JSON to this file instead of the standard output.")
@with_appcontext
def export_command(email, output):
    """Everything held about the person with e-mail address EMAIL, as JSON."""
    from bigledger_core.db import db

    from .privacy import PrivacyError, export_person

    try:
        data = export_person(db.session, email)
    except PrivacyError as exc:
        _fail(str(exc))
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        _fail(gettext("Cannot write %(file)s: %(reason)s", file=output, reason=exc))
    click.echo(gettext("Written to %(file)s.", file=output), err=True)


@privacy.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def erase_command(email, yes):
    """Erase (anonymize) the person with e-mail address EMAIL; counts and statistics stay, and the address
    stays on the suppression list as a digest."""
    from bigledger_core.db import db

    from .privacy import PrivacyError, clean_address, erase_person

    try:
        address = clean_address(email)
    except PrivacyError as exc:
        _fail(str(exc))
    if not yes and not click.confirm(gettext("Erase everything held about %(address)s? This cannot be undone.",
                                             address=address)):
        _fail(gettext("Nothing was erased."))
    counts = erase_person(db.session, address)
    db.session.commit()
    click.echo(gettext("Erased: %(leads)s leads, %(contacts)s contacts, %(sent)s messages sent, %(received)s "
                       "messages received, %(ended)s enrollments ended.", leads=counts["leads"],
                       contacts=counts["contacts"], sent=counts["messages_sent"],
                       received=counts["messages_received"], ended=counts["enrollments_ended"]))


@click.group()
def suppression():
    """The suppression list: addresses no marketing e-mail goes to."""


@suppression.command("add")
@click.argument("email")
@click.option("--reason", type=click.Choice([r for r in SUPPRESSION_REASONS if r != "erased"]), default="manual",
              show_default=True, help="Why the address is suppressed.")
@click.option("--note", help="A note kept with the entry.")
@with_appcontext
def add_command(email, reason, note):
    """Put EMAIL on the suppression list and end its running enrollments."""
    from bigledger_core.db import db

    from .privacy import PrivacyError, clean_address
    from .tracking import suppress, suppressed

    try:
        address = clean_address(email)
    except PrivacyError as exc:
        _fail(str(exc))
    if suppressed(db.session, [address]):
        click.echo(gettext("%(address)s is already on the suppression list.", address=address))
        return
    suppress(db.session, address, reason=reason, source="cli", note=note)
    db.session.commit()
    click.echo(gettext("%(address)s is on the suppression list.", address=address))


@suppression.command("remove")
@click.argument("email")
@with_appcontext
def remove_command(email):
    """Take EMAIL off the suppression list: marketing e-mail may go to it again."""
    from bigledger_core.db import db

    from .tracking import unsuppress

    if not unsuppress(db.session, email):
        _fail(gettext("%(address)s is not on the suppression list.", address=email.strip()))
    db.session.commit()
    click.echo(gettext("%(address)s is off the suppression list.", address=email.strip().lower()))


@suppression.command("list")
@with_appcontext
def list_command():
    """Every suppressed address (tab-separated: address, reason, source, added, note), newest first."""
    from sqlalchemy import select

    from bigledger_core.db import db

    from .models import Suppression

    rows = db.session.execute(select(Suppression.address, Suppression.address_hash, Suppression.reason,
                                     Suppression.source, Suppression.created_at, Suppression.note)
                              .order_by(Suppression.created_at.desc(), Suppression.id.desc())
                              .execution_options(yield_per=1000))
    for row in rows:
        shown = row.address or gettext("(erased) %(digest)s", digest=row.address_hash[:12])
        click.echo("\t".join([shown, row.reason, row.source or "", row.created_at.isoformat(timespec="seconds"),
                              row.note or ""]))
