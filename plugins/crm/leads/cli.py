"""`bigledger crm scoring …`: load the lead scoring rules from a file, show them, rescore every lead."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask_babel import gettext

from bigledger_core.cli import with_appcontext


@click.group("scoring")
def scoring():
    """Lead scoring rules: load, show, rescore."""


@scoring.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-rescore", is_flag=True, help="Only store the rules; the scheduler rescores later.")
@with_appcontext
def load_command(file, no_rescore):
    """Load scoring rules from FILE (JSON or YAML; 评分规则/标准/分数/资质认定阈值 or rules/criterion/points/
    threshold) as a new version and rescore every lead. Nothing is saved when a rule has a problem."""
    from bigledger_core.db import db

    from .scoring_rules import RuleSetError
    from .services import load_rule_set, rescore_all

    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(gettext("Cannot read %(file)s: %(reason)s", file=file, reason=exc)) from None
    try:
        row = load_rule_set(db.session, text)
        db.session.flush()
        count = 0 if no_rescore else rescore_all(
            db.session, progress=lambda done: click.echo(gettext("%(count)s leads scored", count=done), err=True))
        db.session.commit()
    except RuleSetError as exc:
        db.session.rollback()
        for problem in exc.problems:
            click.echo(gettext("Error: %(problem)s", problem=problem), err=True)
        sys.exit(1)
    click.echo(gettext("Scoring rules version %(version)s loaded (%(rules)s rules, threshold %(threshold)s); "
                       "%(count)s leads rescored.", version=row.version, rules=len(row.document["rules"]),
                       threshold=row.threshold, count=count))


@scoring.command("show")
@with_appcontext
def show_command():
    """The active scoring rules."""
    from bigledger_core.db import db

    from .services import active_rule_set

    active = active_rule_set(db.session)
    if active is None:
        click.echo(gettext("No scoring rules are loaded."))
        return
    row, rule_set = active
    click.echo(gettext("Version %(version)s, threshold %(threshold)s", version=row.version,
                       threshold=rule_set.threshold))
    for rule in rule_set.rules:
        click.echo(f"{rule.index}\t{rule.points:+d}\t{rule.criterion}")


@scoring.command("rescore")
@with_appcontext
def rescore_command():
    """Rescore every lead with the active rules now."""
    from bigledger_core.db import db

    from .services import rescore_all

    count = rescore_all(db.session)
    db.session.commit()
    click.echo(gettext("%(count)s leads scored", count=count))
