"""Outbox throughput: events emitted and delivered per second, against bare INSERTs of the same rows.

    .venv/bin/python -m benchmarks.outbox [--events 5000] [--batch 100] [--postgres URL]

Runs on SQLite (a file in a temporary folder) and, when a PostgreSQL server is given (default
postgresql://postgres@127.0.0.1:5432/postgres, skipped if unreachable), on a fresh database there.
Prints a table and writes `benchmarks/results/outbox.json`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from bigledger_core import hookimpl

from .common import write_results

DELIVERED = []


@hookimpl
def bigledger_manifest():
    return {"name": "bench_noop", "version": "1.0", "label": {"zh": "基准", "en": "Benchmark"}, "requires": []}


@hookimpl
def bigledger_module_switched(event):
    DELIVERED.append(event.id)  # a no-op subscriber: remembers it saw the event


def _app(url: str, folder: Path):
    from bigledger_core.app import create_app
    from bigledger_core.db import db
    from bigledger_core.migrate import upgrade

    app = create_app({"BIGLEDGER_ENV": "development", "INSTANCE_PATH": str(folder), "SQLALCHEMY_DATABASE_URI": url,
                      "BIGLEDGER_EXTRA_PLUGINS": ["benchmarks.outbox"], "BIGLEDGER_EVENT_FIRST_ATTEMPT": "off",
                      "BIGLEDGER_MODULES": ["bench_noop"]})
    with app.app_context():
        upgrade()
        db.session.remove()
    return app


def _emit(app, events: int, batch: int) -> float:
    from bigledger_core.db import db
    from bigledger_core.events import emit

    start = time.perf_counter()
    with app.app_context():
        for first in range(0, events, batch):
            for n in range(first, min(first + batch, events)):
                emit(db.session, "bigledger_module_switched", {"module": f"m{n}", "enabled": True, "by": "bench"})
            db.session.commit()
        db.session.remove()
    return time.perf_counter() - start


def _deliver(app) -> float:
    from bigledger_core.events import deliver_due

    start = time.perf_counter()
    while sum(deliver_due(app, limit=500).values()):
        pass
    return time.perf_counter() - start


def _bare_rows(events: int):
    now = dt.datetime.now(dt.UTC)
    payload = json.dumps({"module": "m", "enabled": True, "by": "bench"})
    for n in range(events):
        yield str(uuid.uuid4()), payload, now


def _bare_sqlite(path: str, events: int, batch: int) -> float:
    import sqlite3

    conn = sqlite3.connect(path)
    rows = list(_bare_rows(events))
    start = time.perf_counter()
    for first in range(0, events, batch):
        chunk = rows[first:first + batch]
        conn.executemany("INSERT INTO bl_outbox_event (id, name, version, payload, occurred_at) "
                         "VALUES (?, 'bare', 1, ?, ?)", [(i, p, t.isoformat()) for i, p, t in chunk])
        conn.executemany("INSERT INTO bl_event_delivery (event_id, subscriber, status, attempts, next_attempt_at) "
                         "VALUES (?, 'bench_noop', 'bare', 0, ?)", [(i, t.isoformat()) for i, _p, t in chunk])
        conn.commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def _bare_postgres(dsn: str, events: int, batch: int) -> float:
    rows = list(_bare_rows(events))
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for first in range(0, events, batch):
            chunk = rows[first:first + batch]
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO bl_outbox_event (id, name, version, payload, occurred_at) "
                                "VALUES (%s, 'bare', 1, %s, %s)", chunk)
                cur.executemany("INSERT INTO bl_event_delivery (event_id, subscriber, status, attempts, "
                                "next_attempt_at) VALUES (%s, 'bench_noop', 'bare', 0, %s)",
                                [(i, t) for i, _p, t in chunk])
            conn.commit()
        return time.perf_counter() - start


def run(backend: str, url: str, folder: Path, events: int, batch: int) -> dict:
    app = _app(url, folder)
    delivered = importlib.import_module("benchmarks.outbox").DELIVERED  # the copy the host loaded
    delivered.clear()
    emit_s = _emit(app, events, batch)
    deliver_s = _deliver(app)
    assert len(delivered) == events and len(set(delivered)) == events, "every event delivered exactly once"
    if backend == "sqlite":
        bare_s = _bare_sqlite(make_url(url).database, events, batch)
    else:
        bare_s = _bare_postgres(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                                events, batch)
    with app.app_context():
        from bigledger_core.db import db

        db.engine.dispose()
    bare_rate = events / bare_s
    return {"backend": backend, "events": events, "batch": batch,
            "emit_per_s": round(events / emit_s), "deliver_per_s": round(events / deliver_s),
            "bare_insert_per_s": round(bare_rate),
            "emit_ratio": round((events / emit_s) / bare_rate, 3),
            "deliver_ratio": round((events / deliver_s) / bare_rate, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100, help="events per transaction")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results.append(run("sqlite", f"sqlite:///{folder / 'bench.db'}", folder, args.events, args.batch))
        admin = make_url(args.postgres).set(drivername="postgresql")
        name = f"bigledger_bench_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as exc:
            print(f"PostgreSQL skipped: {exc}")
        else:
            try:
                url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
                results.append(run("postgresql", url, folder, args.events, args.batch))
            finally:
                with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    header = ["backend", "events", "emit/s", "deliver/s", "bare INSERT/s", "emit ratio", "deliver ratio"]
    keys = ["backend", "events", "emit_per_s", "deliver_per_s", "bare_insert_per_s", "emit_ratio", "deliver_ratio"]
    print(" | ".join(f"{h:>13}" for h in header))
    for row in results:
        print(" | ".join(f"{row[k]!s:>13}" for k in keys))
    write_results("outbox", results)


if __name__ == "__main__":
    main()
