"""`bigledger crm nurture …`: run the due sequence steps now, enroll leads, pause and resume a sequence, and
the statistics (as a table or JSON). Exits with status 1 when something is refused."""
from __future__ import annotations

import json
import sys

import click
from flask_babel import gettext

from bigledger_core.cli import with_appcontext


@click.group()
def nurture():
    """Nurturing sequences: run due steps, enroll, pause, resume, statistics."""


def _sequence(session, value: str):
    """The sequence named `value`, or with id `value`; a click error when there is none."""
    from sqlalchemy import select

    from .models import Sequence

    sequence = session.scalar(select(Sequence).where(Sequence.name == value.strip()))
    if sequence is None and value.strip().isdigit():
        sequence = session.get(Sequence, int(value))
    if sequence is None:
        raise click.ClickException(gettext("There is no sequence “%(name)s” (give its name or id).", name=value))
    return sequence


def _refused(exc) -> None:
    click.echo(gettext("Error: %(problem)s", problem=exc), err=True)
    sys.exit(1)


@nurture.command("run")
@with_appcontext
def run_command():
    """Run the steps that are due now (what the scheduler does every minute) and print what was done."""
    from bigledger_core.db import db

    from .services import run_due
    from .views import EXIT_REASON_LABELS

    labels = {"sent": gettext("e-mails queued"), "postponed": gettext("e-mails held back by quiet hours"),
              "skipped": gettext("e-mails skipped (no address, template or consent)"),
              "tasks": gettext("tasks created"), "waited": gettext("waits started"),
              "branched": gettext("branches taken"), "handed_over": gettext("handed over to another sequence"),
              "completed": gettext("enrollments completed"), "enrolled": gettext("leads enrolled by rule or form"),
              "repeat_skipped": gettext("steps already run (not repeated)"),
              "failed": gettext("enrollments that failed (retried in an hour)")}
    counts = {key: count for key, count in run_due(db.session).items() if count}
    if not counts:
        click.echo(gettext("Nothing was due."))
        return
    for key, count in sorted(counts.items()):
        if key.startswith("exited_"):
            reason = key.removeprefix("exited_")
            label = gettext("enrollments ended: %(reason)s", reason=EXIT_REASON_LABELS.get(reason, reason))
        else:
            label = labels.get(key, key)
        click.echo(f"{label}: {count}")
    if counts.get("failed"):
        sys.exit(1)


@nurture.command("enroll")
@click.argument("sequence")
@click.argument("lead_ids", nargs=-1, required=True, type=int)
@with_appcontext
def enroll_command(sequence, lead_ids):
    """Enroll leads (by id) in SEQUENCE (its name or id). Leads already in it, without an e-mail address,
    suppressed, converted or disqualified are skipped and counted."""
    from bigledger_core.db import db

    from .services import NurtureError
    from .views import enroll_summary, enroll_visible

    session = db.session
    target = _sequence(session, sequence)
    try:
        result = enroll_visible(session, target, lead_ids, None, source="manual")
        session.commit()
    except NurtureError as exc:
        session.rollback()
        _refused(exc)
    done, skipped = enroll_summary(result, target.name)
    click.echo(done)
    if skipped:
        click.echo(skipped)
    if not result["enrolled"]:
        sys.exit(1)


def _change(sequence: str, command_name: str, done) -> None:
    from bigledger_core.db import db

    from . import services

    session = db.session
    target = _sequence(session, sequence)
    try:
        getattr(services, command_name)(session, target)
        session.commit()
    except services.NurtureError as exc:
        session.rollback()
        _refused(exc)
    click.echo(done(target.name))


@nurture.command("pause")
@click.argument("sequence")
@with_appcontext
def pause_command(sequence):
    """Pause SEQUENCE (name or id): none of its enrollments runs a step until it is resumed."""
    _change(sequence, "pause", lambda name: gettext("Sequence “%(name)s” paused.", name=name))


@nurture.command("resume")
@click.argument("sequence")
@with_appcontext
def resume_command(sequence):
    """Resume the paused SEQUENCE (name or id); steps that fell due meanwhile run at the next run."""
    _change(sequence, "resume", lambda name: gettext("Sequence “%(name)s” resumed.", name=name))


@nurture.command("stats")
@click.argument("sequence", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the rates) instead of a table.")
@with_appcontext
def stats_command(sequence, as_json):
    """Statistics of every sequence and template, or of one SEQUENCE (name or id) and its steps: enrolled,
    active, sent, delivered, opened, clicked, replied, unsubscribed, converted."""
    from bigledger_core.db import db

    from .services import statistics, step_statistics, template_statistics
    from .views import FIGURES, STEP_KIND_LABELS, percent, with_rates

    session = db.session
    if sequence:
        target = _sequence(session, sequence)
        tables = {"sequences": statistics(session, target.id), "steps": step_statistics(session, target.id)}
    else:
        tables = {"sequences": statistics(session), "templates": template_statistics(session)}
    tables = {name: [with_rates(row) for row in rows] for name, rows in tables.items()}
    if as_json:
        click.echo(json.dumps(tables, ensure_ascii=False, indent=2))
        return
    titles = {"sequences": gettext("Sequences"), "templates": gettext("E-mail templates"), "steps": gettext("Steps")}
    for name, rows in tables.items():
        click.echo(f"# {titles[name]}")
        click.echo("\t".join([gettext("Name"), *(str(label) for label in FIGURES.values())]))
        for row in rows:
            label = row["name"] or ""
            if name == "steps":
                label = f"{row['position']}. {label or STEP_KIND_LABELS.get(row['kind'], row['kind'])}"
                if not row["active_step"]:
                    label += " " + gettext("(removed)")
            cells = [str(row[key]) + (f" ({percent(row[f'{key}_rate'])})" if f"{key}_rate" in row else "")
                     for key in FIGURES]
            click.echo("\t".join([label, *cells]))
        if not rows:
            click.echo(gettext("(none)"))
