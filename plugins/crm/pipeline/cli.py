"""`bigledger crm pipeline …` and `bigledger crm deal …`: load, export and list pipelines; move, win,
lose and reopen deals (through the same commands as the screens and the API)."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask_babel import gettext
from sqlalchemy import select

from bigledger_core.cli import with_appcontext


def _moves(pairs: tuple[str, ...]) -> dict[str, str]:
    moves = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise click.BadParameter(gettext("%(value)s is not OLD STAGE=NEW STAGE", value=pair), param_hint="--move")
        moves[old.strip()] = new.strip()
    return moves


@click.group("pipeline")
def pipeline():
    """Sales pipelines: load from YAML, export, list."""


@pipeline.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Pipeline to create or update (default: the file's name, or 销售管道).")
@click.option("--default", "make_default", is_flag=True, help="Make it the default pipeline.")
@click.option("--move", "moves", multiple=True, metavar="OLD=NEW",
              help="Move the deals of a stage the file drops to a stage of the file; repeatable.")
@with_appcontext
def load_command(file, name, make_default, moves):
    """Create or update a pipeline from FILE (YAML or JSON; keys 销售管道/阶段/名称/概率/活动 or
    pipeline/stages/name/probability/activities). Nothing is written when the file has a problem."""
    from bigledger_core.db import db

    from .config import PipelineConfigError, parse
    from .services import PipelineError, load_pipeline

    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(gettext("Cannot read %(file)s: %(reason)s", file=file, reason=exc)) from None
    try:
        result = load_pipeline(db.session, parse(text), name=name, move_to=_moves(moves),
                               make_default=make_default or None)
        db.session.commit()
    except (PipelineConfigError, PipelineError) as exc:
        db.session.rollback()
        for problem in exc.problems:
            click.echo(gettext("Error: %(problem)s", problem=problem), err=True)
        sys.exit(1)
    click.echo(gettext("Pipeline “%(name)s” loaded with %(count)d stages.", name=result.name,
                       count=len(result.stages)))


def _find(session, name: str | None):
    from .models import Pipeline
    from .services import default_pipeline

    found = session.scalar(select(Pipeline).where(Pipeline.name == name)) if name else default_pipeline(session)
    if found is None:
        raise click.ClickException(gettext("There is no pipeline %(name)s.", name=name or ""))
    return found


@pipeline.command("export")
@click.option("--name", help="Pipeline to export (default: the default pipeline).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: "
              "standard output).")
@with_appcontext
def export_command(name, output):
    """Write a pipeline as YAML, in the keys it was loaded with."""
    from bigledger_core.db import db

    from .config import dump
    from .services import spec_of

    text = dump(spec_of(_find(db.session, name)))
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@pipeline.command("list")
@with_appcontext
def list_command():
    """Every pipeline with its stages and probabilities."""
    from bigledger_core.db import db

    from .config import format_probability
    from .models import Pipeline

    for item in db.session.scalars(select(Pipeline).order_by(Pipeline.id)):
        mark = " *" if item.is_default else ""
        stages = " → ".join(f"{s.name} {format_probability(s.probability)}" for s in item.stages)
        click.echo(f"{item.id}\t{item.name}{mark}\t{stages}")


@click.group("deal")
def deal():
    """Deals: move, win, lose, reopen."""


def _run(deal_id: int, command) -> None:
    from bigledger_core.db import db

    from .models import Deal
    from .services import StageChangeRefused, status_label

    record = db.session.get(Deal, deal_id)
    if record is None:
        raise click.ClickException(gettext("There is no deal %(id)s.", id=deal_id))
    try:
        command(db.session, record)
        db.session.commit()
    except StageChangeRefused as exc:
        db.session.rollback()
        for reason in exc.reasons:
            click.echo(gettext("Refused: %(reason)s", reason=reason), err=True)
        sys.exit(1)
    click.echo(gettext("Saved: the deal is now in “%(stage)s” (%(status)s).", stage=record.stage.name,
                       status=status_label(record.status)))


@deal.command("move")
@click.argument("deal_id", type=int)
@click.argument("stage")
@click.option("--reason", help="Why it was won (when STAGE is the won stage).")
def move_command(deal_id, stage, reason):
    """Move deal DEAL_ID to STAGE (its name)."""
    from .services import move_deal

    with_appcontext(lambda: _run(deal_id, lambda s, d: move_deal(s, d, stage, reason=reason)))()


@deal.command("win")
@click.argument("deal_id", type=int)
@click.option("--reason", required=True, help="Why it was won.")
def win_command(deal_id, reason):
    """Close deal DEAL_ID as won."""
    from .services import win_deal

    with_appcontext(lambda: _run(deal_id, lambda s, d: win_deal(s, d, reason=reason)))()


@deal.command("lose")
@click.argument("deal_id", type=int)
@click.option("--reason", required=True, help="Why it was lost.")
@click.option("--lost-to", help="The competitor's name.")
def lose_command(deal_id, reason, lost_to):
    """Close deal DEAL_ID as lost."""
    from .models import Competitor
    from .services import lose_deal

    def command(session, record):
        competitor = None
        if lost_to:
            competitor = session.scalar(select(Competitor.id).where(Competitor.name == lost_to))
            if competitor is None:
                raise click.ClickException(gettext("There is no competitor %(name)s.", name=lost_to))
        lose_deal(session, record, reason=reason, lost_to_id=competitor)

    with_appcontext(lambda: _run(deal_id, command))()


@deal.command("reopen")
@click.argument("deal_id", type=int)
@click.option("--stage", help="Stage to reopen it in (default: where it was).")
def reopen_command(deal_id, stage):
    """Open a won or lost deal DEAL_ID again."""
    from .services import reopen_deal

    with_appcontext(lambda: _run(deal_id, lambda s, d: reopen_deal(s, d, stage)))()
