"""Sales pipeline at scale: the board's column totals and a column page, the REST forecast per quarter by owner
and the stage conversion rates, on PostgreSQL, against the raw SQL they run.

    .venv/bin/python -m benchmarks.pipeline [--quick] [--deals 1000000] [--requests 100] [--warmup 10]
        [--budget 20] [--postgres URL] [--database bl_pipebench] [--keep] [--explain]

Creates the database `bl_pipebench` on the server (default postgresql://postgres@127.0.0.1:5432/postgres;
dropped first when it exists, and at the end unless --keep), migrates it, adds an admin, five Sales Reps in
two teams and the product page's five-stage pipeline, then loads N opportunities (1,000,000; 20,000 with
--quick) and their stage history (about 3 rows a deal) with COPY: open deals (45 %) spread over the stages,
won (30 %) and lost (25 %) deals that went part of the way first; 90 % CNY, 7 % USD, 3 % MYR; expected close
and close dates over two years; some deals with their own forecast category. Secondary indexes are dropped
for the load and rebuilt from their own definitions, so the schema is the migration's.

Then measures p50/p99 latency, as the admin (every deal) and as a Sales Rep (record rules):
- `board columns`: `plugins.crm.pipeline.board.columns()` for the pipeline (open deals);
- `board cards`: `plugins.crm.pipeline.board.cards()`, the first page (50) of each open stage;
- `forecast`: GET /api/v1/crm/forecast/?period=quarter&group_by=owner through the real HTTP stack (JWT);
- `conversion`: GET /api/v1/crm/forecast/conversion?pipeline_id=…;
and the raw SQL: the CRM statements each call sent (same text and parameters, captured from the driver;
not the sign-in and permission look-ups) replayed on a psycopg connection. ratio = p50 / raw p50. The board's
column totals and the forecast read the deal summary (`crm_deal_summary`, rebuilt with
`plugins.crm.pipeline.summary.rebuild` after the COPY, which bypasses the ORM), so their raw SQL is the
statement over the summary; for context, the same calls answered from the deals themselves (the query used
when a date range is not whole months) are timed too, as `live p50/p99`. Targets
(from the issue): board p99 < 100 ms, forecast p99 < 1 s; conversion is held to the forecast's target.
Reported, not asserted. Prints a table (and with --explain the plans; always in the JSON) and writes
`benchmarks/results/pipeline.json`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import random
import statistics
import tempfile
import time
import traceback
from decimal import Decimal
from pathlib import Path

import psycopg

from .common import (
    capture,
    code_version,
    copy_load,
    crm_statements,
    scratch_database,
    write_results,
)

SEED = Path(__file__).parent.parent / "tests" / "data" / "pipeline_seed.yaml"
PASSWORD = "Bench-pass-1"
LIVE_REQUESTS = 10  # calls timed on the deals themselves, for context
TARGETS_MS = {"board columns": 100.0, "board cards": 100.0, "forecast": 1000.0, "conversion": 1000.0}
USERS = ["admin", "rep1", "rep2", "rep3", "rep4", "rep5"]
TEAMS = {"A": ["rep1", "rep2"], "B": ["rep3", "rep4"]}
COMPANIES = 2000
CURRENCIES = (("CNY", 90), ("USD", 7), ("MYR", 3))
CATEGORIES = ("pipeline", "best_case", "commit", "omitted")
DEAL_COLUMNS = ("id", "name", "company_id", "pipeline_id", "stage_id", "status", "currency", "amount", "mrr",
                "probability", "forecast_category", "expected_close", "closed_at", "stage_entered_at", "custom",
                "created_at", "updated_at", "version", "owner_id", "team_id")
HISTORY_COLUMNS = ("deal_id", "stage_id", "stage_name", "status", "entered_at", "left_at", "entered_by_id")


# -- set-up and loading ----------------------------------------------------------------------------------

def _app(url: str, folder: Path):
    from bigledger_core.app import create_app
    from bigledger_core.db import db
    from bigledger_core.migrate import upgrade
    from bigledger_core.security import sync_security

    app = create_app({"BIGLEDGER_ENV": "development", "INSTANCE_PATH": str(folder), "SQLALCHEMY_DATABASE_URI": url,
                      "BIGLEDGER_MODULES": None, "BIGLEDGER_EVENT_FIRST_ATTEMPT": "off",
                      "JWT_ACCESS_TOKEN_EXPIRES": dt.timedelta(hours=6)})
    with app.app_context():
        upgrade()
        sync_security(app.appbuilder)
        db.session.remove()
    return app


def _people_and_pipeline(app) -> dict:
    """Users (admin, rep1..rep5 as Sales Reps), two teams and the five-stage pipeline, through the app."""
    from bigledger_core.db import db
    from bigledger_core.models import Team
    from plugins.crm.pipeline import config
    from plugins.crm.pipeline.services import load_pipeline

    found: dict = {"users": {}, "teams": {}}
    with app.app_context():
        sm = app.appbuilder.sm
        for username in USERS:
            role = sm.find_role("Admin" if username == "admin" else "Sales Rep")
            user = sm.add_user(username, username.title(), "Bench", f"{username}@bench.example.com", role, PASSWORD)
            assert user, f"could not create {username}"
            found["users"][username] = user.id
        for team, members in TEAMS.items():
            row = Team(name=f"销售{team}组", name_en=f"Sales team {team}",
                       members=[sm.get_user_by_id(found["users"][m]) for m in members])
            db.session.add(row)
            db.session.commit()
            found["teams"][team] = row.id
        pipeline = load_pipeline(db.session, config.parse(SEED.read_text(encoding="utf-8")))
        db.session.commit()
        found["pipeline"] = pipeline.id
        found["stages"] = [(s.id, s.name, Decimal(s.probability)) for s in pipeline.stages]
        db.session.remove()
    return found


def _deal_and_history_rows(n: int, setup: dict, seed: int):
    """(deal rows, history rows) generators: every deal's row and the rows of its way through the stages."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stages = setup["stages"]
    owners = [(setup["users"][u], setup["teams"].get(next((t for t, m in TEAMS.items() if u in m), ""), None))
              for u in USERS]
    currencies = [c for c, w in CURRENCIES for _ in range(w)]
    history: list[tuple] = []

    def deals():
        for deal_id in range(1, n + 1):
            owner_id, team_id = owners[rng.randrange(len(owners))]
            r = rng.random()
            status = "open" if r < 0.45 else "won" if r < 0.75 else "lost"
            reached = rng.randrange(4)  # the last open stage the deal entered
            created = now - dt.timedelta(days=rng.randrange(730), seconds=rng.randrange(86400))
            at, entered = created, []
            for position in range(reached + 1):
                entered.append(at)
                at = at + dt.timedelta(days=rng.randrange(1, 30), seconds=rng.randrange(86400))
            closed_at = None
            if status == "open":
                stage_id, _name, probability = stages[reached]
                stay_end = None
            else:
                closed_at = min(at, now)
                probability = Decimal(1) if status == "won" else Decimal(0)
                stage_id = stages[-1][0] if status == "won" else stages[reached][0]
                stay_end = closed_at
            for position, start in enumerate(entered):
                end = entered[position + 1] if position + 1 < len(entered) else stay_end
                history.append((deal_id, stages[position][0], stages[position][1], "open", start, end, owner_id))
            if status != "open":
                close_stage = stages[-1] if status == "won" else stages[reached]
                history.append((deal_id, close_stage[0], close_stage[1], status, closed_at, None, owner_id))
            expected = (created + dt.timedelta(days=rng.randrange(30, 400))).date()
            category = CATEGORIES[rng.randrange(4)] if status == "open" and rng.random() < 0.1 else None
            amount = Decimal(rng.randrange(1000, 500000))
            yield (deal_id, f"商机 {deal_id}", rng.randrange(1, COMPANIES + 1), setup["pipeline"], stage_id, status,
                   currencies[rng.randrange(len(currencies))], amount, Decimal(0), probability, category, expected,
                   closed_at, entered[-1] if status == "open" else closed_at, "{}", created, closed_at or at,
                   1, owner_id, team_id)

    return deals, history


def _load(dsn: str, n: int, setup: dict, seed: int) -> dict:
    timings: dict = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        start = time.perf_counter()
        conn.execute(
            "INSERT INTO crm_company (id, name, status, custom, search_text, created_at, updated_at, version) "
            "SELECT i, '公司 ' || i, 'customer', '{}', 'gongsi ' || i, now(), now(), 1 "
            "FROM generate_series(1, %s) i", [COMPANIES])
        conn.execute("SELECT setval(pg_get_serial_sequence('crm_company', 'id'), %s)", [COMPANIES])
        timings["companies"] = round(time.perf_counter() - start, 1)
        deals, history = _deal_and_history_rows(n, setup, seed)
        timings.update(copy_load(conn, [("crm_deal", DEAL_COLUMNS, deals),
                                        ("crm_stage_history", HISTORY_COLUMNS, lambda: history)]))
        timings["history_rows"] = len(history)
        start = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) crm_company, crm_deal, crm_stage_history")
        timings["vacuum_analyze"] = round(time.perf_counter() - start, 1)
    return timings


def _summarize(app, dsn: str) -> dict:
    """Rebuild the deal summary from the COPY-loaded deals, then analyze it."""
    from bigledger_core.db import db
    from plugins.crm.pipeline.summary import rebuild

    start = time.perf_counter()
    with app.app_context():
        rows = rebuild(db.session)
        db.session.commit()
        db.session.remove()
    timings = {"summary_rebuild": round(time.perf_counter() - start, 1), "summary_rows": rows}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) crm_deal_summary")
    return timings


# -- measuring -------------------------------------------------------------------------------------------

def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def _timed(fn, variants, warmup: int, requests: int, budget: float) -> list[float]:
    """Latencies in ms of `requests` calls cycling through `variants` (fewer when over `budget` seconds, at
    least 20), after `warmup` untimed calls."""
    for i in range(warmup):
        fn(variants[i % len(variants)])
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(requests):
        t = time.perf_counter()
        fn(variants[i % len(variants)])
        samples.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() - started > budget and len(samples) >= 20:
            break
    return samples


class _LastError(logging.Handler):
    """Keeps the last exception FAB's @safe logged (it answers HTTP 500), for the report."""

    last = ""

    def emit(self, record):
        if record.exc_info and record.exc_info[1] is not None:
            _LastError.last = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"


def _operations(app, setup: dict, user: str) -> list[dict]:
    """Each operation: a label, its variants and a callable that runs one variant and returns its rows."""
    from flask import g

    from bigledger_core.db import db
    from plugins.crm.pipeline import board, forecast
    from plugins.crm.pipeline.board import cards, columns

    pipeline_id = setup["pipeline"]
    client = app.test_client()
    login = client.post("/api/v1/security/login", json={"username": user, "password": PASSWORD, "provider": "db"})
    assert login.status_code == 200, login.get_data(as_text=True)
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}", "Accept-Language": "zh"}
    with app.app_context():
        user_obj = app.appbuilder.sm.find_user(username=user)
        db.session.expunge_all()

    def direct(fn):
        def call(v):
            with app.test_request_context():
                g.user = db.session.merge(user_obj, load=False)
                try:
                    return fn(db.session, v)
                finally:
                    db.session.remove()
        return call

    def http(v):
        _LastError.last = ""
        response = client.get(v["path"], query_string=v["query"], headers=headers)
        if response.status_code != 200:
            detail = _LastError.last or response.get_data(as_text=True)[:300]
            raise RuntimeError(f"HTTP {response.status_code}: {detail}")
        return response.get_json()["result"]

    open_stages = [stage_id for stage_id, _name, _p in setup["stages"][:-1]]
    # with "live", the call answers from the deals instead of the summary
    return [
        {"label": "board columns", "variants": [{"pipeline_id": pipeline_id}], "live": board,
         "call": direct(lambda s, v: columns(s, v["pipeline_id"], g.user))},
        {"label": "board cards", "variants": [{"stage_id": sid} for sid in open_stages],
         "call": direct(lambda s, v: cards(s, v["stage_id"], g.user, offset=0, limit=50))},
        {"label": "forecast", "variants": [{"path": "/api/v1/crm/forecast/",
                                            "query": {"period": "quarter", "group_by": "owner"}}],
         "live": forecast, "call": http},
        {"label": "conversion", "variants": [{"path": "/api/v1/crm/forecast/conversion",
                                              "query": {"pipeline_id": pipeline_id}}],
         "call": http},
    ]


def _replay(conn, statements) -> None:
    for sql, params in statements:
        conn.execute(sql, params).fetchall()


def _plan(conn, statements) -> list[str]:
    lines: list[str] = []
    for sql, params in statements:
        lines.append("-- " + " ".join(sql.split())[:600])
        lines += [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)]
    return lines


def measure(app, dsn: str, setup: dict, user: str, args) -> list[dict]:
    """Each operation as `user`, then the CRM statements it sent replayed on a raw psycopg connection."""
    statements, stop = capture(app)
    results = []
    try:
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as raw:
            for op in _operations(app, setup, user):
                for v in op["variants"]:
                    statements.clear()
                    v["rows"] = len(op["call"](v))
                    v["replay"] = crm_statements(statements)
                timed = _timed(op["call"], op["variants"], args.warmup, args.requests, args.budget)
                raw_ms = _timed(lambda v: _replay(raw, v["replay"]), op["variants"], args.warmup, len(timed),
                                args.budget)
                live = {}
                if op.get("live") is not None:  # the same call answered from the deals, fewer requests
                    covers = op["live"]._summary_covers
                    op["live"]._summary_covers = lambda *_args: False
                    try:
                        live_ms = _timed(op["call"], op["variants"], 1, min(args.requests, LIVE_REQUESTS),
                                         args.budget)
                    finally:
                        op["live"]._summary_covers = covers
                    live = {"live_p50_ms": round(statistics.median(live_ms), 2),
                            "live_p99_ms": round(_percentile(live_ms, 99), 2), "live_requests": len(live_ms)}
                p50, p99 = statistics.median(timed), _percentile(timed, 99)
                raw_p50 = statistics.median(raw_ms)
                target = TARGETS_MS[op["label"]]
                row = {"operation": op["label"], "user": user,
                       "rows": statistics.median(v["rows"] for v in op["variants"]),
                       "statements": len(op["variants"][0]["replay"]), "requests": len(timed),
                       "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "raw_p50_ms": round(raw_p50, 2),
                       "raw_p99_ms": round(_percentile(raw_ms, 99), 2), "ratio": round(p50 / raw_p50, 2),
                       "target_p99_ms": target, "target_met": p99 < target, **live,
                       "plan": _plan(raw, op["variants"][0]["replay"])}
                results.append(row)
                print(f"  {user:6} {op['label']:14} p50 {row['p50_ms']:9.2f} ms  p99 {row['p99_ms']:9.2f} ms  "
                      f"raw p50 {row['raw_p50_ms']:9.2f} ms  ({row['requests']} requests)"
                      + (f"  live p50 {live['live_p50_ms']:9.2f} ms  p99 {live['live_p99_ms']:9.2f} ms"
                         if live else ""), flush=True)
    finally:
        stop()
    return results


# -- report ----------------------------------------------------------------------------------------------

def _print_table(rows: list[dict]) -> None:
    header = ["operation", "user", "rows", "SQL", "p50 ms", "p99 ms", "raw p50 ms", "ratio", "target p99",
              "target met", "live p50 ms", "live p99 ms"]
    table = [[r["operation"], r["user"], f"{r['rows']:g}", r["statements"], f"{r['p50_ms']:.2f}",
              f"{r['p99_ms']:.2f}", f"{r['raw_p50_ms']:.2f}", f"{r['ratio']:.2f}", f"< {r['target_p99_ms']:g} ms",
              "yes" if r["target_met"] else "NO",
              f"{r['live_p50_ms']:.2f}" if "live_p50_ms" in r else "",
              f"{r['live_p99_ms']:.2f}" if "live_p99_ms" in r else ""] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *table)]
    for line in [header, ["-" * w for w in widths], *table]:
        print(" | ".join(str(x).ljust(w) for x, w in zip(line, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000, help="opportunities on PostgreSQL")
    parser.add_argument("--quick", action="store_true", help="20,000 opportunities")
    parser.add_argument("--requests", type=int, default=100, help="timed calls per operation and user")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds per operation after which fewer calls are timed (at least 20)")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bl_pipebench")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--explain", action="store_true", help="print the query plans (always in the JSON)")
    args = parser.parse_args()
    if args.quick:
        args.deals = 20_000
    logger = logging.getLogger("flask_appbuilder.api")
    logger.addHandler(_LastError())
    logger.propagate = False
    code, load_before, started = code_version(), os.getloadavg(), time.perf_counter()
    dsn, url, drop_database = scratch_database(args.postgres, args.database)
    result: dict = {"deals": args.deals}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = _app(url, Path(tmp))
            setup = _people_and_pipeline(app)
            print(f"postgresql: loading {args.deals:,} opportunities…", flush=True)
            start = time.perf_counter()
            result["load_timings"] = _load(dsn, args.deals, setup, args.seed)
            result["load_timings"].update(_summarize(app, dsn))
            result["load_s"] = round(time.perf_counter() - start, 1)
            print(f"  loaded in {result['load_s']} s {result['load_timings']}", flush=True)
            rows = []
            for user in ("admin", "rep1"):
                rows += measure(app, dsn, setup, user, args)
            result["rows"] = rows
            from bigledger_core.db import db

            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if not args.keep:
            drop_database()
    result["total_s"] = round(time.perf_counter() - started, 1)
    print()
    _print_table(result.get("rows", []))
    if "error" in result:
        print(f"FAILED {result['error']}")
    if args.explain:
        for row in result.get("rows", []):
            print(f"\n== {row['operation']} ({row['user']})")
            print("\n".join(row["plan"]))
    write_results("pipeline", [result], code=code, loadavg_before=load_before,
                  targets={"p99_ms": TARGETS_MS, "ratio_is": "p50 / raw SQL p50",
                           "live_is": "the same call answered from the deals, not the summary"})


if __name__ == "__main__":
    main()
