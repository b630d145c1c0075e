"""The `bigledger` command, run as a real process the way an operator runs it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


DEMO_TABLES = ("ab_user", "bl_team", "sample_note", "crm_deal", "crm_stage_history", "crm_activity", "crm_lead")

def bigledger(*args, env=None, ok=True, exe="bigledger"):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BIGLEDGER_")}
    full_env.update({"BIGLEDGER_ENV": "development", "LANG": "en_US.UTF-8", "PYTHONPATH": str(ROOT)})
    full_env.update(env or {})
    result = subprocess.run([str(BIN / exe), *args], capture_output=True, text=True, env=full_env, cwd=ROOT,
                            timeout=120)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def instance(empty_url, tmp_path):
    """Environment for one instance on an empty database, with the sample plugin."""
    return {"BIGLEDGER_INSTANCE_PATH": str(tmp_path / "inst"), "BIGLEDGER_DATABASE_URL": empty_url,
            "BIGLEDGER_EXTRA_PLUGINS": "tests.sample_plugin.plugin"}


@pytest.fixture
def upgraded(database_url, tmp_path):
    """Environment for one instance whose database `bigledger db upgrade` has already set up."""
    return {"BIGLEDGER_INSTANCE_PATH": str(tmp_path / "inst"), "BIGLEDGER_DATABASE_URL": database_url,
            "BIGLEDGER_EXTRA_PLUGINS": "tests.sample_plugin.plugin"}


def test_help_lists_every_command_including_plugin_groups():
    out = bigledger("--help", env={"BIGLEDGER_EXTRA_PLUGINS": "tests.sample_plugin.plugin"}).stdout
    for command in ["run", "scheduler", "db", "create-admin", "demo", "modules", "sample"]:
        assert f"  {command} " in out
    for args in [["run"], ["db"], ["db", "upgrade"], ["db", "downgrade"], ["db", "current"], ["create-admin"],
                 ["demo"], ["modules"], ["modules", "list"], ["modules", "enable"], ["modules", "disable"]]:
        sub = bigledger(*args, "--help").stdout
        assert "Usage: bigledger " + " ".join(args) in sub and len(sub.splitlines()) > 3


def test_set_up_an_instance_from_nothing(instance):
    out = bigledger("db", "upgrade", env=instance).stdout
    assert "upgraded: core, crm, finance_bridge, inventory_bridge, pos_bridge, project_bridge, sample" in out
    assert "core" in bigledger("db", "current", env=instance).stdout

    created = bigledger("create-admin", env=instance).stdout
    assert "admin 'admin' created" in created and "generated password (shown once): " in created
    again = bigledger("create-admin", "--if-missing", env=instance).stdout
    assert "exists" in again and "password" not in again
    refused = bigledger("create-admin", env=instance, ok=False)
    assert refused.returncode == 1 and refused.stderr.strip() == "Error: user 'admin' already exists"

    explicit = bigledger("create-admin", "--username", "ops", "--email", "ops@example.com", "--password",
                         "Ops-pass-99", env=instance).stdout
    assert "created" in explicit and "Ops-pass-99" not in explicit

    first = bigledger("demo", env=instance).stdout
    assert "demo users created" in first and "demo data: sample" in first
    engine = create_engine(instance["BIGLEDGER_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        counts = [conn.scalar(text(f"SELECT count(*) FROM {t}")) for t in DEMO_TABLES]
    second = bigledger("demo", env=instance).stdout
    assert "demo users created" not in second
    with engine.connect() as conn:
        assert [conn.scalar(text(f"SELECT count(*) FROM {t}")) for t in DEMO_TABLES] == counts
        assert counts[3] >= 6 and conn.scalar(text("SELECT count(*) FROM crm_deal WHERE status = 'won'")) >= 1
        assert conn.scalar(text("SELECT name_en FROM bl_team WHERE name = '华东销售部'")) == "East China Sales"
    engine.dispose()

    assert bigledger("sample", "count", env=instance).stdout.strip() == "1"


@pytest.mark.one_backend
def test_modules_from_the_command_line(upgraded):
    instance = upgraded
    listing = bigledger("modules", "list", env=instance).stdout
    assert "pos_bridge" in listing and "销售终端桥接 / POS bridge" in listing
    assert bigledger("modules", "disable", "pos_bridge", env=instance).stdout.strip() == "pos_bridge disabled"
    assert "disabled" in [line.split()[2] for line in bigledger("modules", "list", env=instance).stdout.splitlines()
                          if line.startswith("pos_bridge")]
    refused = bigledger("modules", "disable", "crm", env=instance, ok=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: Cannot disable crm:") and "finance_bridge" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    unknown = bigledger("modules", "enable", "warehouse", env=instance, ok=False)
    assert unknown.returncode == 1 and "Unknown module warehouse" in unknown.stderr
    assert bigledger("modules", "enable", "pos_bridge", env=instance).stdout.strip() == "pos_bridge enabled"


@pytest.mark.one_backend  # both databases go up and down in test_migrations
def test_downgrade_a_module_branch(upgraded):
    bigledger("db", "downgrade", "sample@base", env=upgraded)
    current = bigledger("db", "current", env=upgraded).stdout
    assert [line.split() for line in current.splitlines()] == [
        ["core", "core_0002"], ["crm", "crm_0009"], ["finance_bridge", "finance_0002"],
        ["inventory_bridge", "inventory_0001"], ["pos_bridge", "pos_0001"], ["project_bridge", "project_0001"],
        ["sample", "-"]]


def test_errors_are_one_clear_line_with_a_nonzero_exit(tmp_path):
    bad = bigledger("modules", "list", env={"BIGLEDGER_DATABASE_URL": "postgres//x",
                                            "BIGLEDGER_INSTANCE_PATH": str(tmp_path)}, ok=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "Error: BIGLEDGER_DATABASE_URL is not a valid database URL: 'postgres//x' " \
                                 "(expected e.g. postgresql+psycopg://user@host:5432/db)"
    broken = bigledger("modules", "list", env={"BIGLEDGER_MODULES": "pos_bridge",
                                               "BIGLEDGER_INSTANCE_PATH": str(tmp_path)}, ok=False)
    assert broken.returncode == 1 and broken.stderr.strip() == \
        "Error: plugin 'pos_bridge' requires 'crm', which BIGLEDGER_MODULES leaves out"
    production = bigledger("modules", "list", env={"BIGLEDGER_ENV": "production",
                                                   "BIGLEDGER_INSTANCE_PATH": str(tmp_path)}, ok=False)
    assert production.returncode == 1 and "BIGLEDGER_SECRET_KEY is not set" in production.stderr
    scheduler = bigledger("scheduler", env={"BIGLEDGER_INSTANCE_PATH": str(tmp_path / "new")}, ok=False)
    assert scheduler.returncode == 1 and scheduler.stderr.strip() == \
        "Error: the database is not initialised: run `bigledger db upgrade` first"
    not_ready = bigledger("run", "--port", "8123", env={"BIGLEDGER_INSTANCE_PATH": str(tmp_path / "new")}, ok=False)
    assert not_ready.returncode == 1 and "run `bigledger db upgrade` first" in not_ready.stderr


def test_instances_side_by_side_keep_separate_databases(templates, tmp_path):
    """Two instance folders, each with its own default database (as `bigledger db upgrade` leaves it);
    the second is driven through the Flask CLI, where the same commands are a `bigledger` group."""
    one, two = {"BIGLEDGER_INSTANCE_PATH": str(tmp_path / "one")}, {"BIGLEDGER_INSTANCE_PATH": str(tmp_path / "two")}
    for env in (one, two):
        Path(env["BIGLEDGER_INSTANCE_PATH"]).mkdir()
        shutil.copyfile(templates("sqlite"), Path(env["BIGLEDGER_INSTANCE_PATH"]) / "bigledger.db")
    bigledger("modules", "disable", "pos_bridge", env=one)

    def pos_bridge(listing: str) -> list[str]:
        return [line.split()[2] for line in listing.splitlines() if line.startswith("pos_bridge")]

    assert pos_bridge(bigledger("modules", "list", env=one).stdout) == ["disabled"]
    flask = bigledger("--app", "bigledger_core.wsgi", "bigledger", "modules", "list", env=two, exe="flask").stdout
    assert pos_bridge(flask) == ["enabled"] and "crm" in flask


def test_bulk_work_sets_the_collector_aside_and_puts_it_back_afterwards():
    """An import runs with the process's existing objects out of the garbage collector's way; afterwards
    (or after a failure) the collector works as before, so the rest of the process is not affected."""
    import gc

    from bigledger_core.cli import bulk_work

    before = gc.get_threshold()
    with bulk_work():
        assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == 50_000
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    try:
        with bulk_work():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
