"""The job scheduler: APScheduler 3 on the application database, one active process among several.

Every `bigledger scheduler` process competes for one lock: a PostgreSQL advisory lock held on a
dedicated connection (the server frees it the moment the process dies), or an exclusive file lock next
to the SQLite database. The holder is the active scheduler; the others retry every
`BIGLEDGER_SCHEDULER_POLL_SECONDS`. Each run of a job is recorded with a unique (job, scheduled time)
before it starts, so a scheduled run never executes twice, even across a takeover.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import importlib
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import delete, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import db, utcnow
from .errors import PluginError
from .models import JobRun, ScheduledJob, SchedulerNode

log = logging.getLogger(__name__)
JOBSTORE_TABLE = "bl_scheduler_jobs"
_TRIGGERS = {"interval": IntervalTrigger, "cron": CronTrigger, "date": DateTrigger}
_service: SchedulerService | None = None  # the service of this process, for `call_job`


@dataclass(frozen=True)
class JobSpec:
    """A job a module contributes through `bigledger_jobs`.

    `func` is "package.module:function" (called with no arguments inside an app context); `trigger` is
    "interval", "cron" or "date" with `trigger_args` for it (e.g. {"minutes": 5} or {"hour": 2}).
    """

    id: str
    func: str
    trigger: str
    trigger_args: dict[str, Any] = field(default_factory=dict)
    label: dict[str, str] = field(default_factory=dict)
    misfire_grace_time: int | None = 60
    coalesce: bool = True
    max_instances: int = 1
    record_runs: bool = True
    module: str = ""

    def make_trigger(self):
        args = dict(self.trigger_args)
        args.setdefault("timezone", dt.UTC)
        return _TRIGGERS[self.trigger](**args)

    def resolve(self) -> Callable[[], Any]:
        module, _, name = self.func.partition(":")
        return getattr(importlib.import_module(module), name)


def job_specs(host, modules: list[str]) -> dict[str, JobSpec]:
    """The jobs of the enabled `modules`, by id; a malformed spec raises PluginError naming its plugin."""
    specs: dict[str, JobSpec] = {}
    for plugin, answer in host.call_each("bigledger_jobs", modules=modules):
        for raw in answer or []:
            try:
                spec = raw if isinstance(raw, JobSpec) else JobSpec(**raw)
                spec = JobSpec(**{**spec.__dict__, "module": plugin})
                if spec.trigger not in _TRIGGERS:
                    raise ValueError(f"trigger must be one of {', '.join(_TRIGGERS)}, not {spec.trigger!r}")
                if ":" not in spec.func:
                    raise ValueError(f"func must be 'package.module:function', not {spec.func!r}")
                spec.make_trigger()
            except (TypeError, ValueError) as exc:
                raise PluginError(plugin, f"bigledger_jobs: job {getattr(raw, 'id', None) or raw.get('id')!r}: "
                                          f"{exc}") from None
            if spec.id in specs:
                raise PluginError(plugin, f"bigledger_jobs: job id {spec.id!r} is already used by "
                                          f"{specs[spec.id].module}")
            specs[spec.id] = spec
    return specs


def describe_trigger(spec: JobSpec) -> str:
    return str(spec.make_trigger())


def call_job(job_id: str) -> None:
    """The callable APScheduler stores for every job (a stable text reference); runs job `job_id`."""
    if _service is None:
        raise RuntimeError("no scheduler service in this process")
    _service.run_job(job_id, utcnow(), record=False)


# -- the lock -----------------------------------------------------------------------------------------

class PostgresLeaderLock:
    """`pg_try_advisory_lock` on a dedicated connection; lost when the connection is."""

    def __init__(self, url: str):
        parsed = make_url(url).set(drivername="postgresql")
        self.dsn = parsed.render_as_string(hide_password=False)
        self.key = int.from_bytes(hashlib.sha256(b"bigledger.scheduler").digest()[:8], "big", signed=True)
        self.conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                                            application_name="bigledger-scheduler")
            return bool(self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0])
        except psycopg.Error as exc:
            log.warning("scheduler lock: %s", exc)
            self.release()
            return False

    def held(self) -> bool:
        try:
            return self.conn is not None and self.conn.execute("SELECT 1").fetchone() is not None
        except psycopg.Error:
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None


class FileLeaderLock:
    """An exclusive `flock` on a file next to the SQLite database; the kernel frees it with the process."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None


def leader_lock(app):
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "postgresql":
        return PostgresLeaderLock(app.config["SQLALCHEMY_DATABASE_URI"])
    database = url.database or ""
    path = Path(database + ".scheduler.lock") if database and database != ":memory:" else \
        Path(app.config["INSTANCE_PATH"]) / "scheduler.lock"
    return FileLeaderLock(path)


# -- runs ----------------------------------------------------------------------------------------------

class RecordingExecutor(ThreadPoolExecutor):
    """APScheduler's thread pool, running each scheduled time through `SchedulerService.run_job`."""

    def __init__(self, service: SchedulerService, max_workers: int = 10):
        super().__init__(max_workers)
        self.service = service

    def _do_submit_job(self, job, run_times):
        def callback(future):
            exc = future.exception()
            if exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        self._pool.submit(self._run, job, run_times).add_done_callback(callback)

    def _run(self, job, run_times) -> list[JobExecutionEvent]:
        events = []
        job_id = job.args[0]
        scheduled_manually = job.id != job_id
        for run_time in run_times:
            late = (utcnow() - run_time).total_seconds()
            if job.misfire_grace_time is not None and late > job.misfire_grace_time:
                self.service.record_outcome(job_id, "missed", f"started {late:.0f} s late", None)
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time))
                continue
            error = self.service.run_job(job_id, run_time, manual=scheduled_manually)
            code = EVENT_JOB_ERROR if error else EVENT_JOB_EXECUTED
            events.append(JobExecutionEvent(code, job.id, job._jobstore_alias, run_time))
        return events


class SchedulerService:
    """One `bigledger scheduler` process: standby until it holds the lock, then the active scheduler."""

    def __init__(self, app, node: str | None = None):
        self.app = app
        self.host = app.extensions["bigledger"]
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self.poll = float(app.config["BIGLEDGER_SCHEDULER_POLL_SECONDS"])
        self.lock = leader_lock(app)
        self.scheduler: BackgroundScheduler | None = None
        self.specs: dict[str, JobSpec] = {}
        self.modules: list[str] = []
        self.started_at = utcnow()
        self._stop = threading.Event()
        self.active = threading.Event()

    # -- the loop
    def run_forever(self) -> None:
        """Compete for the lock, run jobs while holding it, until `stop()` (or SIGTERM in the CLI)."""
        global _service
        _service = self
        with self.app.app_context():
            self._loop()

    def _loop(self) -> None:
        log.info("scheduler %s started (standby)", self.node)
        last_beat = 0.0
        try:
            while not self._stop.is_set():
                if self.scheduler is None:
                    if self.lock.try_acquire():
                        self._become_leader()
                elif not self.lock.held():
                    log.error("scheduler %s lost its lock: stepping down", self.node)
                    self._step_down()
                else:
                    self._control()
                if time.monotonic() - last_beat >= 5 * self.poll:
                    self._heartbeat()
                    last_beat = time.monotonic()
                self._stop.wait(self.poll)
        finally:
            self._step_down(wait=True)  # let running jobs finish before the lock goes
            self.lock.release()
            self._forget_node()
            log.info("scheduler %s stopped", self.node)

    def stop(self) -> None:
        self._stop.set()

    def _session(self) -> Session:
        with self.app.app_context():
            return Session(db.engine)

    def _become_leader(self) -> None:
        log.info("scheduler %s is now the active scheduler", self.node)
        with self._session() as session:
            interrupted = session.execute(update(JobRun).where(JobRun.status == "running").values(
                status="interrupted", finished_at=utcnow(),
                error="the scheduler running it stopped before it finished")).rowcount
            session.execute(update(ScheduledJob).where(ScheduledJob.last_outcome == "running").values(
                last_outcome="interrupted"))
            # whoever was active before is gone: it no longer holds the lock
            session.execute(delete(SchedulerNode).where(SchedulerNode.role == "active",
                                                        SchedulerNode.node != self.node))
            session.commit()
        if interrupted:
            log.warning("marked %d run(s) of the previous scheduler as interrupted", interrupted)
        with self.app.app_context():
            engine = db.engine
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBSTORE_TABLE),
                       "manual": MemoryJobStore()},
            executors={"default": RecordingExecutor(self)}, timezone=dt.UTC)
        scheduler.start(paused=True)
        self.scheduler = scheduler
        self._sync_jobs()
        scheduler.resume()
        self.active.set()
        self._heartbeat()

    def _step_down(self, wait: bool = False) -> None:
        if self.scheduler is not None:
            try:
                self.scheduler.shutdown(wait=wait)
            except Exception:  # already stopped
                log.debug("scheduler shutdown", exc_info=True)
        self.scheduler = None
        self.active.clear()

    # -- jobs
    def _enabled(self, session: Session) -> list[str]:
        from .modules import enabled_modules

        with self.app.app_context():
            return enabled_modules(self.host, session)

    def _sync_jobs(self) -> None:
        """Make the job store match the jobs of the enabled modules, keeping schedules that did not change."""
        with self._session() as session:
            self.modules = self._enabled(session)
            self.specs = job_specs(self.host, self.modules)
            rows = {row.id: row for row in session.scalars(select(ScheduledJob))}
            for spec in self.specs.values():
                row = rows.get(spec.id) or ScheduledJob(id=spec.id, paused=False)
                row.module, row.trigger = spec.module, describe_trigger(spec)
                row.label, row.label_en = spec.label.get("zh"), spec.label.get("en")
                session.add(row)
            session.commit()
            paused = {row.id for row in rows.values() if row.paused}
        for job in self.scheduler.get_jobs(jobstore="default"):
            if job.id not in self.specs:
                job.remove()
        for spec in self.specs.values():
            trigger = spec.make_trigger()
            job = self.scheduler.get_job(spec.id, jobstore="default")
            options = dict(name=spec.id, misfire_grace_time=spec.misfire_grace_time, coalesce=spec.coalesce,
                           max_instances=spec.max_instances)
            if job is None or str(job.trigger) != str(trigger):
                self.scheduler.add_job(call_job, trigger, args=[spec.id], id=spec.id, replace_existing=True,
                                       jobstore="default", **options)
            else:
                job.modify(**options)
            job = self.scheduler.get_job(spec.id, jobstore="default")
            if spec.id in paused and job.next_run_time is not None:
                job.pause()
            elif spec.id not in paused and job.next_run_time is None:
                job.resume()

    def _control(self) -> None:
        """Apply what admins asked for (pause, resume, run now) and follow modules switched on or off."""
        with self._session() as session:
            if self._enabled(session) != self.modules:
                self._sync_jobs()
            rows = session.execute(select(ScheduledJob.id, ScheduledJob.paused, ScheduledJob.run_requested_at)
                                   .where(ScheduledJob.id.in_(list(self.specs)))).all()
            for job_id, paused, requested in rows:
                job = self.scheduler.get_job(job_id, jobstore="default")
                if job is None:
                    continue
                if paused and job.next_run_time is not None:
                    job.pause()
                elif not paused and job.next_run_time is None:
                    job.resume()
                if requested is not None:
                    session.execute(update(ScheduledJob).where(ScheduledJob.id == job_id)
                                    .values(run_requested_at=None))
                    session.commit()
                    when = requested if requested.tzinfo else requested.replace(tzinfo=dt.UTC)
                    self.scheduler.add_job(call_job, DateTrigger(when), args=[job_id], jobstore="manual",
                                           id=f"{job_id}@manual@{when.timestamp()}", misfire_grace_time=None)

    def run_job(self, job_id: str, scheduled_at: dt.datetime, record: bool | None = None,
                manual: bool = False) -> str | None:
        """Run job `job_id` for `scheduled_at`; the error text, or None. Skips a run already recorded."""
        spec = self.specs.get(job_id)
        if spec is None:
            return f"job {job_id} is not offered by an enabled module"
        record = spec.record_runs or manual if record is None else record
        run_id = None
        if record:
            with self._session() as session:
                run = JobRun(job_id=job_id, scheduled_at=scheduled_at, started_at=utcnow(), status="running",
                             node=self.node)
                session.add(run)
                try:
                    session.commit()
                except IntegrityError:
                    log.warning("job %s at %s already ran: skipped", job_id, scheduled_at.isoformat())
                    return None
                run_id = run.id
        self.record_outcome(job_id, "running", None, None)
        started = time.monotonic()
        error = None
        with self.app.app_context():
            try:
                spec.resolve()()
                db.session.commit()
            except Exception:
                db.session.rollback()
                error = traceback.format_exc(limit=10)
                log.error("job %s failed:\n%s", job_id, error)
            finally:
                db.session.remove()
        duration = int((time.monotonic() - started) * 1000)
        outcome = "failed" if error else "succeeded"
        if run_id is not None:
            with self._session() as session:
                session.execute(update(JobRun).where(JobRun.id == run_id).values(
                    status=outcome, finished_at=utcnow(), error=error))
                session.commit()
        self.record_outcome(job_id, outcome, error, duration)
        return error

    def record_outcome(self, job_id: str, outcome: str, error: str | None, duration: int | None) -> None:
        values: dict[str, Any] = {"last_outcome": outcome}
        if outcome == "running":
            values["last_run_at"] = utcnow()
        else:
            values.update(last_error=error, last_duration_ms=duration)
        with self._session() as session:
            session.execute(update(ScheduledJob).where(ScheduledJob.id == job_id).values(**values))
            session.commit()

    # -- nodes
    def _heartbeat(self) -> None:
        role = "active" if self.scheduler is not None else "standby"
        try:
            with self._session() as session:
                row = session.get(SchedulerNode, self.node)
                if row is None:
                    session.add(SchedulerNode(node=self.node, role=role, started_at=self.started_at,
                                              heartbeat_at=utcnow()))
                else:
                    row.role, row.heartbeat_at = role, utcnow()
                if role == "active":  # processes that stopped beating long ago are gone
                    session.execute(delete(SchedulerNode).where(
                        SchedulerNode.heartbeat_at < utcnow() - dt.timedelta(seconds=max(60.0, 20 * self.poll))))
                session.commit()
        except Exception:  # the database may be briefly away; the next beat tries again
            log.warning("scheduler heartbeat failed", exc_info=True)

    def _forget_node(self) -> None:
        try:
            with self._session() as session:
                row = session.get(SchedulerNode, self.node)
                if row is not None:
                    session.delete(row)
                    session.commit()
        except Exception:
            log.debug("could not remove scheduler node row", exc_info=True)


def start_in_thread(app) -> SchedulerService:
    """Run a scheduler inside this process (the development server): it competes for the lock too."""
    service = SchedulerService(app)
    threading.Thread(target=service.run_forever, name="bigledger-scheduler", daemon=True).start()
    return service


# -- what the admin screen and the CLI show -------------------------------------------------------------

@dataclass
class JobStatus:
    id: str
    module: str
    label: str
    trigger: str
    paused: bool
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    last_outcome: str | None
    last_error: str | None
    last_duration_ms: int | None
    run_requested: bool


def job_statuses(app, session: Session, locale: str = "en") -> list[JobStatus]:
    """Every job of the enabled modules with its state, read from the database (no scheduler needed)."""
    from sqlalchemy import Column, Float, MetaData, String, Table

    from .modules import enabled_modules

    host = app.extensions["bigledger"]
    specs = job_specs(host, enabled_modules(host, session))
    rows = {row.id: row for row in session.scalars(select(ScheduledJob).where(ScheduledJob.id.in_(list(specs))))}
    store = Table(JOBSTORE_TABLE, MetaData(), Column("id", String(191)), Column("next_run_time", Float))
    next_runs = dict(session.execute(select(store.c.id, store.c.next_run_time)
                                     .where(store.c.id.in_(list(specs)))).all())
    statuses = []
    for spec in specs.values():
        row = rows.get(spec.id)
        stamp = next_runs.get(spec.id)
        statuses.append(JobStatus(
            id=spec.id, module=spec.module,
            label=spec.label.get(locale) or spec.label.get("en") or spec.id, trigger=describe_trigger(spec),
            paused=bool(row and row.paused),
            next_run_at=dt.datetime.fromtimestamp(stamp, dt.UTC) if stamp and not (row and row.paused)
            else None,
            last_run_at=_aware(row.last_run_at) if row else None, last_outcome=row.last_outcome if row else None,
            last_error=row.last_error if row else None, last_duration_ms=row.last_duration_ms if row else None,
            run_requested=bool(row and row.run_requested_at)))
    return statuses


def _aware(value):
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def request_job(session: Session, job_id: str, *, paused: bool | None = None, run_now: bool = False) -> None:
    """Ask the active scheduler to pause, resume or run a job now (it applies this within a second)."""
    row = session.get(ScheduledJob, job_id)
    if row is None:
        row = ScheduledJob(id=job_id, module=job_id.split(".", 1)[0], paused=False)
        session.add(row)
    if paused is not None:
        row.paused = paused
    if run_now:
        row.run_requested_at = utcnow()


def nodes(session: Session) -> list[SchedulerNode]:
    return list(session.scalars(select(SchedulerNode).order_by(SchedulerNode.role, SchedulerNode.node)))
