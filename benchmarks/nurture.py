"""Nurturing at scale on PostgreSQL: the scheduler turning due sequence steps into queued e-mails.

    .venv/bin/python -m benchmarks.nurture [--quick] [--enrollments 100000] [--batch 1000]
        [--postgres URL] [--database bl_nurturebench] [--keep]

Creates the database `bl_nurturebench` (default server postgresql://postgres@127.0.0.1:5432/postgres;
dropped first when it exists, and at the end unless --keep), migrates it, and makes one bilingual template
(subject and HTML with merge fields — lead name, company, owner — and two links) and an active sequence
"e-mail, then wait 3 days". Loads N leads (100,000; 10,000 with --quick; half zh, half en, in
Asia/Shanghai) and N enrollments due now with COPY.

Then times one scheduler run (`run_due`) at 11:00 Shanghai time (outside quiet hours): for every enrollment
it inserts the step run under its unique key, renders the template in the lead's language, rewrites the
links for click tracking, adds the open pixel and the unsubscribe link, queues the message, and moves the
enrollment on to its wait — one transaction per batch. Target (from the issue): under 60 s for 100,000.

The physical limit is a bare INSERT of the same messages (the rows the run wrote, read back) into a table
with bl_message's columns and indexes, from the same client over the same connection type, in batches of the
same size: ratio = run_due / bare INSERT. Prints a table and writes `benchmarks/results/nurture.json`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import tempfile
import time
import traceback
from pathlib import Path

import psycopg

from .common import code_version, copy_load, scratch_database, write_results

TARGET_S = 60.0
NOW = dt.datetime(2027, 3, 2, 3, 0, tzinfo=dt.UTC)  # a Tuesday, 11:00 in Shanghai
FAMILY = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英")
WESTERN = ("Alice Tan", "Ben Wong", "Chloe Lim", "David Ng", "Emma Lee", "Farid Osman", "Grace Ong", "Hafiz Ali")
COMPANIES = ("星辰科技", "远航贸易", "Lotus Retail", "Harbour Logistics", "华信制造", "Mekong Foods")
HTML_ZH = ("<p>{{ lead.name }}，您好！</p><p>感谢您关注 {{ lead.company_name }} 的数字化方案。"
           "<a href='https://bigledger.example/cases'>看看同行案例</a>，或"
           "<a href='https://bigledger.example/demo?utm_source=nurture'>预约演示</a>。</p>"
           "<p>{{ owner.name }}</p>")
HTML_EN = ("<p>Dear {{ lead.name }},</p><p>Thank you for your interest in going digital at "
           "{{ lead.company_name }}. <a href='https://bigledger.example/cases'>See how others did it</a> or "
           "<a href='https://bigledger.example/demo?utm_source=nurture'>book a demo</a>.</p><p>{{ owner.name }}</p>")
LEAD_COLUMNS = ("id", "name", "company_name", "email", "language", "timezone", "status", "score", "email_opens",
                "email_clicks", "source", "consent", "conversion", "search_text", "custom", "owner_id",
                "created_at", "updated_at", "version")
ENROLLMENT_COLUMNS = ("id", "sequence_id", "lead_id", "status", "step_id", "next_run_at", "source", "enrolled_at")
MESSAGE_COLUMNS = ("channel", "status", "to_address", "to_name", "from_address", "from_name", "subject",
                   "body_text", "body_html", "headers", "message_id", "idempotency_key", "source", "attempts",
                   "next_attempt_at", "created_at")


def _app(url: str, folder: Path):
    from bigledger_core.app import create_app
    from bigledger_core.db import db
    from bigledger_core.migrate import upgrade
    from bigledger_core.security import sync_security

    app = create_app({"BIGLEDGER_ENV": "development", "INSTANCE_PATH": str(folder), "SQLALCHEMY_DATABASE_URI": url,
                      "BIGLEDGER_MODULES": None, "BIGLEDGER_EVENT_FIRST_ATTEMPT": "off",
                      "BIGLEDGER_PUBLIC_URL": "https://crm.bigledger.example"})
    with app.app_context():
        upgrade()
        sync_security(app.appbuilder)
        db.session.remove()
    return app


def _sequence(app) -> dict:
    """The owner, the template and the active sequence (e-mail, wait 3 days)."""
    from bigledger_core.db import db
    from plugins.crm.nurture import services
    from plugins.crm.nurture.models import EmailTemplate, Sequence, SequenceStep

    with app.app_context():
        sm = app.appbuilder.sm
        owner = sm.add_user("owner", "陈", "经理", "owner@bigledger.example", sm.find_role("Admin"), "Bench-pass-1")
        template = EmailTemplate(name="welcome", subject_zh="{{ lead.name }}，欢迎了解 BigLedger", html_zh=HTML_ZH,
                                 subject_en="Welcome to BigLedger, {{ lead.name }}", html_en=HTML_EN)
        sequence = Sequence(name="新潜客培育", status="draft")
        db.session.add_all([template, sequence])
        db.session.flush()
        services.add_step(db.session, sequence, SequenceStep(kind="email", template_id=template.id))
        services.add_step(db.session, sequence, SequenceStep(kind="wait", days=3))
        services.activate(db.session, sequence)
        db.session.commit()
        return {"owner_id": owner.id, "sequence_id": sequence.id, "step_id": sequence.steps[0].id}


def _load(dsn: str, n: int, ids: dict, seed: int) -> dict:
    rng = random.Random(seed)
    now = NOW - dt.timedelta(days=1)

    def leads():
        for i in range(1, n + 1):
            english = i % 2 == 0
            name = rng.choice(WESTERN) if english else rng.choice(FAMILY) + rng.choice(GIVEN)
            yield (i, name, rng.choice(COMPANIES), f"lead{i}@example.com", "en" if english else "zh",
                   "Asia/Shanghai", "nurturing", 10, 0, 0, "form", True, "{}", name.lower(), "{}", ids["owner_id"],
                   now, now, 1)

    def enrollments():
        for i in range(1, n + 1):
            yield (i, ids["sequence_id"], i, "active", ids["step_id"], NOW - dt.timedelta(minutes=1), "rule", now)

    with psycopg.connect(dsn, autocommit=True) as conn:
        timings = copy_load(conn, [("crm_lead", LEAD_COLUMNS, leads),
                                   ("crm_enrollment", ENROLLMENT_COLUMNS, enrollments)])
        conn.execute("VACUUM (ANALYZE) crm_lead, crm_enrollment")
    return timings


def run(app, n: int, batch: int) -> dict:
    from sqlalchemy import func, select

    from bigledger_core.db import db
    from bigledger_core.models import Message
    from plugins.crm.nurture.services import run_due

    with app.app_context():
        start = time.perf_counter()
        counts = run_due(db.session, now=NOW, batch=batch, seconds=3600.0)
        elapsed = time.perf_counter() - start
        queued = db.session.scalar(select(func.count()).select_from(Message))
        db.session.remove()
    return {"run_s": round(elapsed, 2), "queued": queued, "per_second": round(queued / elapsed),
            "counts": counts, "complete": queued == n}


def bare_insert(dsn: str, batch: int) -> dict:
    """INSERT the messages the run wrote, as they are, into a copy of bl_message (same indexes), in batches
    of the run's size over one connection; rolled back."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM bl_message ORDER BY id").fetchall()
        rows = [tuple(json.dumps(v) if isinstance(v, dict) else v for v in row) for row in rows]
        conn.execute("CREATE TABLE bench_message (LIKE bl_message INCLUDING ALL)")
        sql = (f"INSERT INTO bench_message ({', '.join(MESSAGE_COLUMNS)}) "
               f"VALUES ({', '.join(['%s'] * len(MESSAGE_COLUMNS))})")
        start = time.perf_counter()
        with conn.cursor() as cur:
            for offset in range(0, len(rows), batch):
                cur.executemany(sql, rows[offset:offset + batch])
                conn.commit()
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE bench_message")
        conn.commit()
    return {"insert_s": round(elapsed, 2), "rows": len(rows)}


def _print_table(result: dict) -> None:
    r, b = result.get("run"), result.get("bare")
    if not r or not b:
        return
    ratio = round(r["run_s"] / b["insert_s"], 2) if b["insert_s"] else None
    result["ratio"] = ratio
    rows = [(f"run_due: {result['enrollments']:,} due e-mail steps", f"{r['run_s']} s", f"{b['insert_s']} s",
             f"{ratio}×", f"< {TARGET_S:.0f} s", f"{r['per_second']:,} messages/s, {r['queued']:,} queued")]
    header = ("operation", "measured", "limit", "ratio", "target", "notes")
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)))
    print("limit: a bare INSERT of the same messages into a table like bl_message, same batch size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrollments", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 enrollments")
    parser.add_argument("--batch", type=int, default=1000, help="enrollments per transaction")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bl_nurturebench")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if args.quick:
        args.enrollments = 10_000
    code, load_before, started = code_version(), os.getloadavg(), time.perf_counter()
    dsn, url, drop_database = scratch_database(args.postgres, args.database)
    result: dict = {"enrollments": args.enrollments, "batch": args.batch}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = _app(url, Path(tmp))
            ids = _sequence(app)
            print(f"postgresql: loading {args.enrollments:,} leads and enrollments…", flush=True)
            result["load_timings"] = _load(dsn, args.enrollments, ids, args.seed)
            result["run"] = run(app, args.enrollments, args.batch)
            print(f"  run: {result['run']}", flush=True)
            from bigledger_core.db import db

            with app.app_context():
                db.engine.dispose()
            result["bare"] = bare_insert(dsn, args.batch)
            print(f"  bare insert: {result['bare']}", flush=True)
    except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if not args.keep:
            drop_database()
    result["total_s"] = round(time.perf_counter() - started, 1)
    print()
    _print_table(result)
    if "error" in result:
        print(f"FAILED {result['error']}")
    write_results("nurture", [result], code=code, loadavg_before=load_before, quick=args.quick,
                  targets={"run_s": TARGET_S, "ratio_is": "run_due / bare INSERT of the same rows"})


if __name__ == "__main__":
    main()
