"""Alembic migrations: one version branch per module, labelled with the module's name."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app

from .db import db
from .plugins import CORE

HERE = Path(__file__).parent / "migrations"


def alembic_config(connection=None) -> Config:
    """An Alembic config whose version locations are every loaded module's migration folders."""
    host = current_app.extensions["bigledger"]
    dirs: list[str] = []
    for _name, answer in host.call_each("bigledger_migration_dirs"):
        dirs.extend(str(Path(d)) for d in answer or [])
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", __import__("os").pathsep.join(dirs))
    cfg.attributes["connection"] = connection
    return cfg


def branches() -> set[str]:
    """Module names that have a migration branch."""
    script = ScriptDirectory.from_config(alembic_config())
    return {label for rev in script.walk_revisions() for label in rev.branch_labels}


def upgrade(modules: list[str] | None = None) -> list[str]:
    """Bring the schema of `modules` (default: every enabled module, core first) to their heads."""
    from .modules import enabled_modules

    wanted = modules if modules is not None else enabled_modules()
    have = branches()
    targets = [m for m in ([CORE] + [m for m in wanted if m != CORE]) if m in have]
    with db.engine.begin() as connection:
        cfg = alembic_config(connection)
        for name in targets:
            command.upgrade(cfg, f"{name}@head")
    return targets


def downgrade(target: str) -> None:
    """Downgrade to `target`: a revision, `<module>@base`, `<module>@-1`, or `base` for everything."""
    with db.engine.begin() as connection:
        command.downgrade(alembic_config(connection), target)


def current() -> dict[str, str | None]:
    """The applied revision of each module branch (None when the module has no tables yet)."""
    script = ScriptDirectory.from_config(alembic_config())
    with db.engine.connect() as connection:
        heads = tuple(MigrationContext.configure(connection).get_current_heads())
    applied = {rev.revision for rev in script.iterate_revisions(heads, "base")} if heads else set()
    result: dict[str, str | None] = {}
    for label in branches():
        # walk_revisions goes newest first; branch labels are inherited by every revision of the branch
        result[label] = next((rev.revision for rev in script.walk_revisions()
                              if label in rev.branch_labels and rev.revision in applied), None)
    return result
