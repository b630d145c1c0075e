"""The scheduler: jobs from plugins, recorded runs, admin controls, and fail-over between two real
`bigledger scheduler` processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from bigledger_core.db import db
from bigledger_core.errors import PluginError
from bigledger_core.models import JobRun, ScheduledJob
from bigledger_core.scheduler import SchedulerService, job_specs, job_statuses
from tests.conftest import SAMPLE_PLUGIN, add_user, csrf_token, login

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate.__doc__ or predicate}")


@pytest.fixture
def ticking(monkeypatch, tmp_path):
    log = tmp_path / "ticks.log"
    monkeypatch.setenv("SAMPLE_TICK_SECONDS", "0.05")
    monkeypatch.setenv("SAMPLE_TICK_LOG", str(log))
    return log


@pytest.fixture
def service(make_app, ticking):
    app = make_app(BIGLEDGER_SCHEDULER_POLL_SECONDS=0.2)
    svc = SchedulerService(app, node="test-node")
    thread = threading.Thread(target=svc.run_forever, daemon=True)
    thread.start()
    assert svc.active.wait(10), "the only scheduler did not become active"
    yield svc
    svc.stop()
    thread.join(10)


def runs(app, job_id: str = "sample.tick") -> list[JobRun]:
    with app.app_context(), Session(db.engine) as session:
        return list(session.scalars(select(JobRun).where(JobRun.job_id == job_id).order_by(JobRun.scheduled_at)))


def test_plugin_jobs_run_and_every_run_is_recorded(service, ticking):
    app = service.app
    wait_for(lambda: len([r for r in runs(app) if r.status == "succeeded"]) >= 3)
    recorded = runs(app)
    assert len({r.scheduled_at for r in recorded}) == len(recorded)
    assert all(r.node == "test-node" for r in recorded)
    with app.app_context():
        row = db.session.get(ScheduledJob, "sample.tick")
        assert row.module == "sample" and row.label == "样例节拍" and row.label_en == "Sample tick"
        assert row.last_outcome in {"succeeded", "running"} and "interval" in row.trigger
        statuses = {s.id: s for s in job_statuses(app, db.session)}
    assert {"core.deliver_events", "core.send_messages", "core.purge", "sample.tick"} <= set(statuses)
    assert statuses["sample.tick"].next_run_at is not None and statuses["core.purge"].next_run_at is not None
    assert "core.poll_imap" not in statuses  # no IMAP server configured


def test_pause_resume_and_run_now_from_the_jobs_screen(service, client):
    app = service.app
    add_user(app, "admin", "Admin")
    login(client, "admin")
    page = client.get("/system/jobs/").get_data(as_text=True)
    assert "样例节拍" in page and "sample.tick" in page and "test-node" in page
    token = csrf_token(client, "/system/jobs/")
    assert client.post("/system/jobs/sample.tick/pause", data={"csrf_token": token}).status_code == 302
    wait_for(lambda: service.scheduler.get_job("sample.tick").next_run_time is None, 5)
    time.sleep(0.3)
    count = len(runs(app))
    time.sleep(1.5)
    assert len(runs(app)) == count, "a paused job ran"
    assert "Paused" in client.get("/system/jobs/?_l_=en").get_data(as_text=True)
    assert client.post("/system/jobs/sample.tick/run", data={"csrf_token": token}).status_code == 302
    wait_for(lambda: len(runs(app)) == count + 1, 5)  # run now works while paused
    client.post("/system/jobs/sample.tick/resume", data={"csrf_token": token})
    wait_for(lambda: len(runs(app)) >= count + 3, 10)
    refused = client.post("/system/jobs/sample.nope/run", data={"csrf_token": token}, follow_redirects=True)
    assert "未知的任务或命令：sample.nope run" in refused.get_data(as_text=True)


@pytest.fixture
def failing_job(monkeypatch):
    monkeypatch.setenv("SAMPLE_FAIL_JOB", "1")


def test_schedules_and_pauses_survive_a_restart(make_app, ticking):
    from bigledger_core.scheduler import request_job

    app = make_app(BIGLEDGER_SCHEDULER_POLL_SECONDS=0.2)

    def run_once():
        svc = SchedulerService(app, node="restart-node")
        thread = threading.Thread(target=svc.run_forever, daemon=True)
        thread.start()
        assert svc.active.wait(10)
        time.sleep(0.5)
        stored = {job.id: job.next_run_time for job in svc.scheduler.get_jobs()}
        svc.stop()
        thread.join(10)
        return stored

    with app.app_context():
        request_job(db.session, "core.purge", paused=True)
        db.session.commit()
    first = run_once()
    assert first["core.purge"] is None and first["sample.tick"] is not None  # paused, as asked
    with app.app_context():
        stored = dict(db.session.execute(text("SELECT id, next_run_time FROM bl_scheduler_jobs")).all())
    assert {"core.deliver_events", "core.purge", "sample.tick"} <= set(stored)
    assert stored["core.purge"] is None
    second = run_once()
    assert second["core.purge"] is None, "the pause was lost across the restart"
    assert set(second) == set(first)


def test_a_failing_job_shows_its_error_and_the_next_run_proceeds(failing_job, service):
    app = service.app
    wait_for(lambda: len([r for r in runs(app, "sample.fail") if r.status == "failed"]) >= 2, 15)
    assert "RuntimeError: sample job failed on purpose" in runs(app, "sample.fail")[0].error
    with app.app_context():
        row = db.session.get(ScheduledJob, "sample.fail")
        assert row.last_outcome in {"failed", "running"} and "failed on purpose" in (row.last_error or "failed on purpose")
    assert any(r.status == "succeeded" for r in runs(app))  # the other job is unaffected


def test_malformed_jobs_are_refused_naming_the_plugin(app, monkeypatch):
    host = app.extensions["bigledger"]
    bad = [{"id": "sample.bad", "func": "no_colon", "trigger": "interval", "trigger_args": {"seconds": 1}}]
    monkeypatch.setattr(host, "call_each", lambda hook, modules=None, **kw: [("sample", bad)])
    with app.app_context(), pytest.raises(PluginError) as err:
        job_specs(host, ["sample"])
    assert "sample" in str(err.value) and "'package.module:function'" in str(err.value)
    bad[0].update(func="x:y", trigger="hourly")
    with app.app_context(), pytest.raises(PluginError, match="trigger must be one of interval, cron, date"):
        job_specs(host, ["sample"])


def _env(database_url: str, tmp_path: Path, ticks: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGLEDGER_")}
    env.update({"BIGLEDGER_ENV": "development", "BIGLEDGER_DATABASE_URL": database_url,
                "BIGLEDGER_INSTANCE_PATH": str(tmp_path / "inst"), "BIGLEDGER_EXTRA_PLUGINS": SAMPLE_PLUGIN,
                "BIGLEDGER_SCHEDULER_POLL_SECONDS": "0.5", "SAMPLE_TICK_SECONDS": "0.6",
                "SAMPLE_TICK_LOG": str(ticks), "PYTHONPATH": str(ROOT)})
    return env


def test_a_standby_scheduler_takes_over_when_the_active_one_is_killed(database_url, tmp_path):
    ticks = tmp_path / "ticks.log"
    env = _env(database_url, tmp_path, ticks)
    engine = create_engine(database_url)

    def query(sql: str, **params):
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()

    def start():
        return subprocess.Popen([str(BIN / "bigledger"), "scheduler"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    first = start()
    second = None
    try:
        def active():
            """an active scheduler"""
            rows = query("SELECT node FROM bl_scheduler_node WHERE role = 'active'")
            return rows[0][0] if rows else None

        leader = wait_for(active, 20)
        assert leader.endswith(f":{first.pid}")
        second = start()
        standby = f"%:{second.pid}"
        wait_for(lambda: query("SELECT 1 FROM bl_scheduler_node WHERE node LIKE :n AND role = 'standby'",
                               n=standby), 20)
        wait_for(lambda: query("SELECT count(*) FROM bl_job_run WHERE job_id = 'sample.tick' "
                               "AND status = 'succeeded'")[0][0] >= 2, 20)

        def mid_run():
            """the leader in the middle of a run"""
            return query("SELECT id FROM bl_job_run WHERE status = 'running'")

        interrupted_id = wait_for(mid_run, 10, 0.02)[0][0]
        first.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(10)

        def taken_over():
            """the standby to run the job"""
            return query("SELECT min(started_at) FROM bl_job_run WHERE node LIKE :n", n=standby)[0][0]

        wait_for(taken_over, 10, 0.05)
        takeover = time.monotonic() - killed_at
        assert takeover < 10, f"takeover took {takeover:.1f} s"
        wait_for(lambda: query("SELECT count(*) FROM bl_job_run WHERE node LIKE :n AND status = 'succeeded'",
                               n=standby)[0][0] >= 3, 20)
        assert active().endswith(f":{second.pid}")
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, second.stderr.read()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    rows = query("SELECT id, scheduled_at, status FROM bl_job_run WHERE job_id = 'sample.tick'")
    scheduled = [row[1] for row in rows]
    assert len(scheduled) == len(set(scheduled)), "a scheduled run executed twice"
    statuses = {row[0]: row[2] for row in rows}
    assert statuses[interrupted_id] == "interrupted"
    # every run that finished wrote one tick; the killed run wrote none
    assert len(ticks.read_text().split()) == sum(1 for s in statuses.values() if s == "succeeded")
    assert query("SELECT count(*) FROM bl_scheduler_node")[0][0] == 0  # both gone from the screen
    engine.dispose()
