"""Importing contacts at scale: the real `bigledger crm import contacts FILE` command, end to end.

    .venv/bin/python -m benchmarks.contacts_import [--rows 100000] [--big-rows 300000] [--quick]
        [--postgres URL] [--no-sqlite] [--no-postgres]

Writes a CSV file (UTF-8 with BOM, Chinese headers: 姓名, 职位, 手机, 邮箱, 公司) of realistic contacts (Chinese,
Western and Malay names, phones written the ways people write them in CN, MY and SG, e-mails, one company per
20 rows), migrates an empty database (a fresh PostgreSQL database, dropped at the end; a SQLite file in a
temporary folder), and runs the command as a user would, in its own process:

* **import**: `--rows` new contacts (their companies, phones and e-mails made on the way);
* **re-import**: the same file again, which updates every contact instead of duplicating it;
* **import, bigger file**: `--big-rows` new contacts into another empty database, for the peak memory.

Each run reports rows per second from the command's start to its exit (the process starting, the app being
built, the file read, every row checked and written) and the process's peak resident memory. The database is
then checked: as many contacts, phones and e-mails as the file has rows, each once.

Beside them on PostgreSQL: `COPY` of the same file's rows, as they are, into a table of its five columns (the
database taking the bytes, nothing checked or normalized); on SQLite, `executemany` of the same rows into such
a table. Targets (from the issue): at least 5,000 rows/s, and peak memory flat in the file's size (the bigger
file's peak within 20% of the smaller's). Reported, not asserted.

Prints a table and writes `benchmarks/results/contacts_import.json`.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .common import ROOT, code_version, scratch_database, write_results

RATE_TARGET = 5000.0
MEMORY_FLAT = 1.2  # the bigger file's peak memory at most this times the smaller's
HEADERS = ("姓名", "职位", "手机", "邮箱", "公司")

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉兰金凤晶志国宏斌春梅燕鹏飞"
WESTERN = ("James Tan", "Mary Lim", "David Wong", "Sarah Lee", "Michael Ng", "Emily Chua", "Daniel Goh")
MALAY = ("Ahmad bin Ismail", "Siti binti Rahman", "Muhammad Faiz", "Nur Aisyah", "Hafiz bin Osman")
TITLES = ("采购经理", "总经理", "财务总监", "销售代表", "IT 主管", "Operations Manager", "Procurement Lead", "")
COMPANY_WORDS = ("华信", "恒通", "瑞丰", "金桥", "新纪元", "东方", "宏达", "永盛", "Sunrise", "Harbour", "Maju")
COMPANY_KINDS = ("科技有限公司", "贸易有限公司", "实业集团", " Sdn Bhd", " Pte Ltd")


def write_file(path: Path, rows: int, seed: int) -> None:
    """`rows` contacts, each with its own phone and e-mail; one company per 20 rows."""
    rnd = random.Random(seed)
    companies = [f"{rnd.choice(COMPANY_WORDS)}{rnd.choice(COMPANY_WORDS)}{n}{rnd.choice(COMPANY_KINDS)}"
                 for n in range(max(rows // 20, 1))]
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS)
        for n in range(rows):
            roll = rnd.random()
            if roll < 0.8:
                name = rnd.choice(SURNAMES) + rnd.choice(GIVEN) + (rnd.choice(GIVEN) if rnd.random() < 0.6 else "")
            else:
                name = rnd.choice(WESTERN if roll < 0.9 else MALAY)
            country = rnd.random()
            if country < 0.7:  # mainland China mobiles, written three ways
                digits = f"13{n % 10}{n:08d}"
                phone = rnd.choice((f"{digits[:3]} {digits[3:7]} {digits[7:]}", f"+86 {digits}", digits))
            elif country < 0.85:  # Malaysia
                phone = f"+60 12-{n % 1000:03d} {n // 1000 % 10000:04d}"
            else:  # Singapore
                phone = f"+65 9{n % 1000:03d} {n // 1000 % 10000:04d}"
            writer.writerow((name, rnd.choice(TITLES), phone, f"contact{n}@example{n % 97}.com",
                             companies[n // 20 % len(companies)]))


def _migrate(url: str, instance: Path) -> None:
    from bigledger_core.app import create_app
    from bigledger_core.db import db
    from bigledger_core.migrate import upgrade
    from bigledger_core.security import sync_security

    app = create_app({"BIGLEDGER_ENV": "development", "INSTANCE_PATH": str(instance), "SQLALCHEMY_DATABASE_URI": url,
                      "BIGLEDGER_MODULES": None})
    with app.app_context():
        upgrade()
        sync_security(app.appbuilder)
        db.session.remove()
        db.engine.dispose()


def run_command(url: str, instance: Path, path: Path) -> dict:
    """`bigledger crm import contacts PATH` in its own process: seconds from start to exit, its exit status, its
    peak resident memory (MB) and its last lines of output."""
    env = {**os.environ, "BIGLEDGER_ENV": "development", "BIGLEDGER_DATABASE_URL": url,
           "BIGLEDGER_INSTANCE_PATH": str(instance), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", "from bigledger_core.cli import main; main()", "crm", "import",
                                "contacts", str(path)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output = process.stdout.read().decode("utf-8", "replace")
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "exit": os.waitstatus_to_exitcode(status),
            "peak_mb": round(usage.ru_maxrss / 1024, 1),
            "output": [line for line in re.split(r"[\r\n]+", output) if line.strip()][-3:]}


def counts(backend: str, target: str) -> dict:
    """How many contacts, phones and e-mails the database holds, and how many distinct ones."""
    sql = ("SELECT (SELECT count(*) FROM crm_contact), (SELECT count(*) FROM crm_phone), "
           "(SELECT count(DISTINCT e164) FROM crm_phone), (SELECT count(*) FROM crm_email), "
           "(SELECT count(DISTINCT address) FROM crm_email), (SELECT count(*) FROM crm_company)")
    if backend == "postgresql":
        import psycopg

        with psycopg.connect(target) as conn:
            row = conn.execute(sql).fetchone()
    else:
        with sqlite3.connect(target) as conn:
            row = conn.execute(sql).fetchone()
    keys = ("contacts", "phones", "distinct_phones", "emails", "distinct_emails", "companies")
    return dict(zip(keys, row, strict=True))


def raw_load(backend: str, target: str, path: Path) -> float:
    """Seconds to load the file's rows, as they are, into a table of its columns: COPY on PostgreSQL,
    executemany in one transaction on SQLite."""
    columns = ", ".join(f"c{i} text" for i in range(len(HEADERS)))
    if backend == "postgresql":
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS bench_import_rows; CREATE TABLE bench_import_rows ({columns})")
            started = time.perf_counter()
            with conn.cursor() as cur, path.open("rb") as source, cur.copy(
                    "COPY bench_import_rows FROM STDIN (FORMAT csv, HEADER true, ENCODING 'UTF8')") as copy:
                while block := source.read(1 << 20):
                    copy.write(block)
            seconds = time.perf_counter() - started
            conn.execute("DROP TABLE bench_import_rows")
        return seconds
    with sqlite3.connect(target) as conn, path.open(encoding="utf-8-sig", newline="") as source:
        conn.execute(f"CREATE TABLE bench_import_rows ({columns})")
        started = time.perf_counter()
        reader = csv.reader(source)
        next(reader)
        conn.executemany(f"INSERT INTO bench_import_rows VALUES ({', '.join('?' * len(HEADERS))})", reader)
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_import_rows")
    return seconds


def measure(backend: str, postgres: str, folder: Path, files: dict[str, tuple[Path, int]]) -> list[dict]:
    """The three runs on `backend`, each line with what the database held afterwards."""
    lines = []
    databases = []
    try:
        for label, key in (("import", "small"), ("re-import", "small"), ("import, bigger file", "big")):
            path, rows = files[key]
            if label != "re-import":  # an empty database
                if backend == "postgresql":
                    dsn, url, drop = scratch_database(postgres, f"bigledger_import_{uuid.uuid4().hex[:8]}")
                    databases.append(drop)
                    target = dsn
                else:
                    target = str(folder / f"{key}.db")
                    url = f"sqlite:///{target}"
                instance = folder / f"instance-{backend}-{key}"
                _migrate(url, instance)
            run = run_command(url, instance, path)
            held = counts(backend, target)
            raw = raw_load(backend, target, path)
            rate = rows / run["seconds"]
            whole = held["contacts"] == held["distinct_phones"] == held["distinct_emails"] == rows \
                and held["phones"] == held["emails"] == rows
            lines.append({"backend": backend, "run": label, "rows": rows, **run, "rows_per_s": round(rate),
                          "raw": "COPY" if backend == "postgresql" else "executemany", "raw_s": round(raw, 2),
                          "raw_rows_per_s": round(rows / raw), "held": held, "each_row_once": whole,
                          "rate_met": run["exit"] == 0 and whole and rate >= RATE_TARGET})
            print(f"  {backend:10} {label:20} {rows:>9,} rows  {run['seconds']:7.1f} s  {rate:8,.0f} rows/s  "
                  f"peak {run['peak_mb']:6.1f} MB  exit {run['exit']}  {lines[-1]['raw']} {raw:5.2f} s  "
                  f"each row once: {'yes' if whole else 'NO'}", flush=True)
    finally:
        for drop in databases:
            drop()
    small, big = lines[0]["peak_mb"], lines[2]["peak_mb"]
    for line in lines:
        line["memory_flat"] = big <= small * MEMORY_FLAT
    return lines


def print_table(lines: list[dict]) -> None:
    from .contacts import _print_rows

    header = ["backend", "run", "rows", "s", "rows/s", "peak MB", "raw", "raw rows/s", "each row once",
              "≥ 5,000 rows/s", "memory flat"]
    _print_rows(header, [[r["backend"], r["run"], f"{r['rows']:,}", f"{r['seconds']:.1f}", f"{r['rows_per_s']:,}",
                          f"{r['peak_mb']:.1f}", f"{r['raw']} {r['raw_s']:.2f} s", f"{r['raw_rows_per_s']:,}",
                          "yes" if r["each_row_once"] else "NO", "yes" if r["rate_met"] else "no",
                          "yes" if r["memory_flat"] else "no"] for r in lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the file imported and re-imported")
    parser.add_argument("--big-rows", type=int, default=300_000, help="rows of the bigger file (peak memory)")
    parser.add_argument("--quick", action="store_true", help="10,000 and 30,000 rows")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.big_rows = 10_000, 30_000
    code, load_before = code_version(), os.getloadavg()
    lines: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {}
        for key, rows in (("small", args.rows), ("big", args.big_rows)):
            path = folder / f"contacts-{rows}.csv"
            write_file(path, rows, args.seed + rows)
            files[key] = (path, rows)
            print(f"{path.name}: {rows:,} rows, {path.stat().st_size / 1e6:.1f} MB", flush=True)
        for backend in ("sqlite", "postgresql"):
            if not getattr(args, f"no_{backend.replace('postgresql', 'postgres')}"):
                lines += measure(backend, args.postgres, folder, files)
    print()
    print_table(lines)
    write_results("contacts_import", lines, code=code, loadavg_before=load_before,
                  targets={"rows_per_s": RATE_TARGET, "memory_flat_within": MEMORY_FLAT})


if __name__ == "__main__":
    main()
