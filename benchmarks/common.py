"""Pieces the benchmarks share: loading rows the fastest way PostgreSQL offers, and recording the SQL an
app sends, to replay the same work on a raw connection."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).parent.parent


def scratch_database(postgres: str, name: str) -> tuple[str, str, Callable[[], None]]:
    """A new, empty PostgreSQL database `name` on the server of `postgres` (dropped first when it exists):
    (its libpq DSN, its SQLAlchemy URL, a function that drops it)."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(postgres).set(drivername="postgresql")
    admin_dsn = admin.render_as_string(hide_password=False)

    def drop() -> None:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    drop()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = admin.set(database=name).render_as_string(hide_password=False)
    url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    return dsn, url, drop


def copy_load(conn, loads: list[tuple[str, tuple[str, ...], Callable[[], Iterable[tuple]]]]) -> dict:
    """COPY rows into tables on `conn` (a psycopg connection in autocommit): the tables' secondary indexes
    are dropped first and rebuilt from their own definitions afterwards, the id sequences moved past the
    loaded ids. `loads` is (table, columns, rows) in order; rows is called when its turn comes, so one
    table's rows may be collected while an earlier table's are written. Returns seconds per step."""
    tables = list(dict.fromkeys(table for table, _columns, _rows in loads))
    timings: dict = {}
    indexes = conn.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
        "AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
        "WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass)",
        [tables]).fetchall()
    for name, _definition in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    for table, columns, rows in loads:
        start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, \
                cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows():
                copy.write_row(row)
        timings[f"copy_{table}"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    for _name, definition in indexes:
        conn.execute(definition)
    timings["indexes"] = round(time.perf_counter() - start, 1)
    for table in tables:
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                     f"(SELECT coalesce(max(id), 1) FROM {table}))")
    return timings


def capture(app):
    """Listen to the app's engine: returns the list that fills with (statement, parameters) of every SQL
    statement it sends, and a function that stops listening."""
    from sqlalchemy import event

    from bigledger_core.db import db

    with app.app_context():
        engine = db.engine
    statements: list[tuple] = []

    def listener(_conn, _cursor, sql, params, *_args):
        statements.append((sql, params))

    event.listen(engine, "before_cursor_execute", listener)
    return statements, lambda: event.remove(engine, "before_cursor_execute", listener)


def crm_statements(statements: list[tuple]) -> list[tuple]:
    """The statements that read CRM rows (not the sign-in, permission, module and team look-ups)."""
    return [(sql, params) for sql, params in statements
            if "crm_" in sql and "bl_team" not in sql and "ab_permission" not in sql]


def code_version() -> dict:
    """Which code was measured (read-only git look-ups): the commit, and the files changed since it."""

    def git(*argv):
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30,
                                  check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    changed = git("status", "--porcelain", "--", "plugins", "bigledger_core")
    return {"commit": git("rev-parse", "HEAD"), "changed": changed.splitlines() if changed else []}


def write_results(name: str, results: list, **fields) -> Path:
    """Write `benchmarks/results/<name>.json`: the machine, Python, time and load average after the run,
    the `results`, and whatever `fields` the benchmark adds (code, loadavg_before, quick, targets…)."""
    folder = ROOT / "benchmarks" / "results"
    folder.mkdir(exist_ok=True)
    out = folder / f"{name}.json"
    document = {"benchmark": name, "machine": platform.platform(), "python": platform.python_version(),
                "at": dt.datetime.now(dt.UTC).isoformat(), "cpus": os.cpu_count(), **fields,
                "loadavg_after": os.getloadavg(), "results": results}
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    print(f"written {out}")
    return out
