"""`bigledger crm …`: the CRM's commands."""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import click
from flask_babel import gettext
from sqlalchemy import select

from bigledger_core.cli import bulk_work, with_appcontext

from .dedupe_cli import dedupe as dedupe_command
from .leads.cli import scoring as scoring_group
from .nurture.cli import nurture as nurture_group
from .nurture.privacy_cli import privacy as privacy_group
from .nurture.privacy_cli import suppression as suppression_group
from .pipeline.cli import deal as deal_group
from .pipeline.cli import pipeline as pipeline_group

ENTITIES = {"contacts": "contact", "companies": "company"}


@click.group()
def crm():
    """CRM: contacts and companies (import, export), pipelines and deals."""


def _owner_id(session, username: str | None) -> int | None:
    if not username:
        return None
    from flask_appbuilder.security.sqla.models import User

    user_id = session.scalar(select(User.id).where(User.username == username))
    if user_id is None:
        raise click.ClickException(gettext("There is no user %(name)s.", name=username))
    return user_id


def _mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        header, sep, target = pair.rpartition("=")
        if not sep or not header.strip() or not target.strip():
            raise click.BadParameter(gettext("%(value)s is not HEADER=TARGET", value=pair), param_hint="--mapping")
        mapping[header.strip()] = target.strip()
    return mapping


class _Counter:
    """Rows done, on one line of a terminal's stderr (nothing when stderr is not a terminal)."""

    def __init__(self):
        self.shown = sys.stderr.isatty()

    def __call__(self, done: int) -> None:
        if self.shown:
            click.echo("\r" + gettext("%(count)s rows read", count=done), nl=False, err=True)

    def close(self) -> None:
        if self.shown:
            click.echo(err=True)


def _can_read_ahead() -> bool:
    """A second process can read the file while this one writes: two cores or more, and `fork` (Linux, macOS;
    not Windows)."""
    import multiprocessing

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores > 1 and "fork" in multiprocessing.get_all_start_methods()


@crm.command("import")
@click.argument("entity", type=click.Choice(list(ENTITIES)))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mapping", "-m", multiple=True, metavar="HEADER=TARGET",
              help="Read a column into a field (full_name, phone:mobile, custom:<key>, ignore…); repeatable.")
@click.option("--dry-run", is_flag=True, help="Check every row and report, but write nothing.")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path), metavar="REPORT.csv",
              help="Where to write the rejected rows (default: FILE.errors.csv next to FILE).")
@click.option("--owner", metavar="USERNAME", help="Owner of the records created (unless the file names one).")
@with_appcontext
def import_command(entity, file, mapping, dry_run, errors_path, owner):
    """Import contacts or companies from a CSV, XLSX or vCard FILE.

    Columns are recognised by their Chinese or English headers. Valid rows are written; rejected rows
    are listed in an error report, and the command then exits with status 1. Importing the same file
    again updates the records instead of duplicating them.
    """
    from bigledger_core.db import db

    from .importer import (
        ImportFileError,
        ImportInterrupted,
        import_records,
        write_error_report,
    )

    session = db.session
    counter = _Counter()
    try:
        with bulk_work():
            result = import_records(session, ENTITIES[entity], file, mapping=_mapping(mapping), dry_run=dry_run,
                                    owner_id=_owner_id(session, owner), progress=counter,
                                    read_ahead=_can_read_ahead())
    except (ImportFileError, ImportInterrupted) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        counter.close()
    if result.ignored_columns:
        click.echo(gettext("Ignored columns: %(columns)s", columns=", ".join(result.ignored_columns)))
    if dry_run:
        click.echo(gettext("Dry run: nothing was written."))
    click.echo(gettext("Created: %(created)s, updated: %(updated)s, rejected: %(rejected)s",
                       created=result.created, updated=result.updated, rejected=result.rejected))
    if result.rejected:
        report = errors_path or file.with_name(file.name + ".errors.csv")
        write_error_report(result.errors, report)
        click.echo(gettext("Rejected rows are listed in %(file)s", file=report), err=True)
        sys.exit(1)


@crm.command("export")
@click.argument("entity", type=click.Choice(list(ENTITIES)))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def export_command(entity, file):
    """Export every contact or company (merged ones excepted) to FILE: .csv, .xlsx or .vcf (contacts).

    The file can be imported again: headers are in the current language and the importer knows them.
    """
    from bigledger_core.db import db

    from .exporter import company_rows, contact_rows, export_columns, export_table
    from .models import Company, Contact
    from .vcard import contacts_to_vcard

    fmt = file.suffix.lower().lstrip(".")
    if fmt not in {"csv", "xlsx", "vcf"}:
        raise click.ClickException(gettext("%(file)s must end in .csv, .xlsx or .vcf", file=file.name))
    if fmt == "vcf" and entity != "contacts":
        raise click.ClickException(gettext("Only contacts can be exported as vCard."))
    session = db.session
    model = Contact if entity == "contacts" else Company
    query = select(model.id).where(model.merged_into_id.is_(None)).order_by(model.id)
    rows = contact_rows(session, query) if model is Contact else company_rows(session, query)
    try:
        if fmt == "vcf":
            count = 0
            with file.open("w", encoding="utf-8", newline="") as out:
                while chunk := list(itertools.islice(rows, 1000)):
                    out.write(contacts_to_vcard(chunk))
                    count += len(chunk)
        else:
            with file.open("wb") as out:
                count = export_table(rows, export_columns(session, ENTITIES[entity]), fmt, out)
    except OSError as exc:
        raise click.ClickException(gettext("Cannot write %(file)s: %(reason)s", file=file,
                                           reason=exc.strerror or exc)) from None
    click.echo(gettext("%(count)s records written to %(file)s", count=count, file=file))


@crm.command("recount-activities")
@click.option("--check", is_flag=True, help="Only report the counts that are wrong; change nothing.")
@with_appcontext
def recount_activities(check):
    """Check the activity counts of the 360° view against the activities, and rebuild them if they differ.

    The database keeps the counts itself; they drift only when activities were written with triggers off
    (a restore, a bulk load). With --check, lists the first wrong counts and exits 1 if there are any.
    """
    from bigledger_core.db import db

    from .tally import differences, rebuild

    session = db.session
    if check:
        wrong = differences(session, limit=21)
        for item in wrong[:20]:
            click.echo(gettext("company %(company)s, contact %(contact)s, %(kind)s: %(stored)s counted, "
                               "%(actual)s found", company=item.company_id, contact=item.contact_id,
                               kind=item.kind, stored=item.stored, actual=item.actual))
        if len(wrong) > 20:
            click.echo(gettext("… and more."))
        click.echo(gettext("Activity counts are right.") if not wrong else
                   gettext("Some activity counts are wrong; run the command without --check to rebuild them."))
        session.rollback()
        sys.exit(1 if wrong else 0)
    wrong = rebuild(session)
    session.commit()
    click.echo(gettext("%(count)s activity counts were wrong and have been rebuilt.", count=wrong) if wrong else
               gettext("Activity counts are right."))


crm.add_command(pipeline_group)
crm.add_command(deal_group)
crm.add_command(scoring_group)
crm.add_command(dedupe_command)
crm.add_command(nurture_group)
crm.add_command(privacy_group)
crm.add_command(suppression_group)
