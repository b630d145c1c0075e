"""`bigledger pos …`: the POS bridge's commands."""
from __future__ import annotations

import sys

import click
from flask_babel import gettext

from bigledger_core.cli import with_appcontext


@click.group()
def pos():
    """POS bridge: sales from store terminals, matched to contacts."""


@pos.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-create-contacts", is_flag=True,
              help="Keep sales whose customer matches no contact unmatched (default: BIGLEDGER_POS_CREATE_CONTACTS).")
@with_appcontext
def import_command(file, no_create_contacts):
    """Import sales from a CSV file (UTF-8, one row per receipt: receipt, store, sold_at, total, currency, card,
    phone, email, name, tier, points). Bad rows are listed and skipped; exit code 1 when there were any."""
    from bigledger_core.db import db

    from .services import import_sales

    with open(file, encoding="utf-8-sig", newline="") as stream:
        report = import_sales(db.session, stream, create_contacts=False if no_create_contacts else None)
    for row, column, message in report.errors:
        click.echo(gettext("row %(row)s, column %(column)s: %(message)s", row=row, column=column, message=message),
                   err=True)
    click.echo(gettext("%(created)s sales imported, %(duplicates)s already recorded, %(bad)s rows refused.",
                       created=report.created, duplicates=report.duplicates,
                       bad=len({row for row, _column, _message in report.errors})))
    if report.errors:
        sys.exit(1)
