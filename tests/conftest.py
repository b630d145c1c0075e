"""Test fixtures. Every test that touches a database runs on SQLite and, when
BIGLEDGER_TEST_DATABASE_URL is set, again on PostgreSQL. Each test gets a fresh database cloned from
a migrated template (a file copy on SQLite, CREATE DATABASE … TEMPLATE on PostgreSQL), and tests share
one app per backend and worker (see Slot)."""
from __future__ import annotations

import copy
import fcntl
import itertools
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bigledger_core.app import create_app
from bigledger_core.db import db

pytest_plugins = ["tests.smtp_server", "tests.imap_server"]

SAMPLE_PLUGIN = "tests.sample_plugin.plugin"
PG_URL = os.environ.get("BIGLEDGER_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
PASSWORD = "Secret-pass-1"
_counter = itertools.count()


def pytest_collection_modifyitems(config, items):
    """Tests marked `one_backend` (and every real-browser test) run on one database: PostgreSQL when it is
    configured, else SQLite. Their subject is a screen or a command, which the database layer under it does not
    change; that layer is tested on both."""
    chosen = BACKENDS[-1]
    kept, dropped = [], []
    for item in items:
        if "browser" in item.path.parts:
            item.add_marker(pytest.mark.one_backend)
        backend = getattr(item, "callspec", None) and item.callspec.params.get("backend")
        (dropped if backend and backend != chosen and item.get_closest_marker("one_backend") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _pg(url: str):
    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                           autocommit=True)


def _pg_url(name: str) -> str:
    return make_url(PG_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


def _drop_pg(name: str) -> None:
    with _pg(PG_URL) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_app(url: str, instance: Path, **overrides):
    config = {"BIGLEDGER_ENV": "development", "INSTANCE_PATH": str(instance), "SQLALCHEMY_DATABASE_URI": url,
              "BIGLEDGER_EXTRA_PLUGINS": [SAMPLE_PLUGIN], "WTF_CSRF_ENABLED": True, "TESTING": True,
              "BIGLEDGER_MODULES": None, "BIGLEDGER_STRICT_PLUGINS": True,
              "BIGLEDGER_EVENT_FIRST_ATTEMPT": "inline",
              # a cheap password hash: tests create and log in many users; deployments keep the default
              "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"}
    config.update(overrides)
    return create_app(config)


def migrate(app) -> None:
    from bigledger_core.migrate import upgrade
    from bigledger_core.security import sync_security

    with app.app_context():
        upgrade()
        sync_security(app.appbuilder)
        db.session.remove()
        db.engine.dispose()


@contextmanager
def _exclusive(path: Path):
    """Hold an exclusive lock on `path` (a file every test worker of this run can see)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _shared_tpl() -> str:
    return f"{make_url(PG_URL).database}_tpl"


@pytest.fixture(scope="session")
def templates(tmp_path_factory):
    """A migrated template database per backend, built on first use: migrated once per test run (the first
    worker to need it builds it while the others wait), then copied for each worker."""
    built: dict[str, str] = {}
    # the folder all workers of this run share (each worker's own base folder is below it)
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") \
        else tmp_path_factory.getbasetemp()

    def get(backend: str) -> str:
        if backend not in built:
            folder = shared / f"template-{backend}"
            with _exclusive(shared / f"template-{backend}.lock"):
                ready = folder / "ready"
                if backend == "sqlite":
                    if not ready.exists():
                        folder.mkdir(exist_ok=True)
                        migrate(build_app(f"sqlite:///{folder / 'template.db'}", folder))
                        ready.touch()
                    built[backend] = str(folder / "template.db")
                else:
                    if not ready.exists():
                        folder.mkdir(exist_ok=True)
                        _drop_pg(_shared_tpl())
                        with _pg(PG_URL) as conn:
                            conn.execute(f'CREATE DATABASE "{_shared_tpl()}"')
                        migrate(build_app(_pg_url(_shared_tpl()), folder))
                        ready.touch()
                    name = f"{_shared_tpl()}_{_worker()}"  # a worker's own copy: clones of it never wait
                    _drop_pg(name)
                    with _pg(PG_URL) as conn:
                        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_shared_tpl()}"')
                    built[backend] = name
        return built[backend]

    yield get
    for backend, name in built.items():
        if backend == "postgresql":
            _drop_pg(name)


def pytest_sessionfinish(session):
    """The run's shared PostgreSQL template goes when the whole run ends (in the controller, not a worker)."""
    if PG_URL and not os.environ.get("PYTEST_XDIST_WORKER"):
        _drop_pg(_shared_tpl())


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@contextmanager
def _fresh_pg(template: str | None = None):
    """A new PostgreSQL database (a copy of `template`, or empty), dropped afterwards."""
    name = f"{make_url(PG_URL).database}_{_worker()}_{os.getpid()}_{next(_counter)}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with _pg(PG_URL) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    try:
        yield _pg_url(name)
    finally:
        _drop_pg(name)


class Slot:
    """Where one backend's tests run in this worker: a database at a fixed address and an instance
    folder, both put back to the migrated template before each test, and the app built on them once.

    Building the app (every view, API schema and route) costs more than most tests, so tests share it;
    what a test can change is put back: the database, the instance folder, the configuration and the
    rate-limit counters."""

    def __init__(self, backend: str, template: str, folder: Path):
        self.backend, self.template, self.instance = backend, template, folder / "instance"
        if backend == "sqlite":
            self.path = folder / "test.db"
            self.url = f"sqlite:///{self.path}"
        else:
            self.name = f"{make_url(PG_URL).database}_{_worker()}_{os.getpid()}_slot"
            self.url = _pg_url(self.name)
        self.app = None
        self.config: dict = {}
        self.variants: dict[str, tuple] = {}  # apps built with other settings, by those settings

    def reset(self) -> str:
        """Put the database and the instance folder back; returns the database URL."""
        self.close()
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self.template, self.path)
        else:
            _drop_pg(self.name)
            with _pg(PG_URL) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')
        shutil.rmtree(self.instance, ignore_errors=True)
        self.instance.mkdir(parents=True)
        return self.url

    def shared_app(self):
        """The app on this slot, as freshly built."""
        if self.app is None:
            self.app = build_app(self.url, self.instance)
            self.config = dict(self.app.config)
        app = self.app
        app.config.clear()
        app.config.update({key: copy.deepcopy(value) for key, value in self.config.items()})
        app.appbuilder.sm.limiter.reset()
        return app

    def app_with(self, overrides: dict):
        """An app on this slot built with `overrides`, as freshly built: the first test asking for these settings
        builds it, later ones get it back with its configuration and rate-limit counters put back."""
        key = repr(sorted(overrides.items()))
        if key not in self.variants:
            app = build_app(self.url, self.instance, **overrides)
            self.variants[key] = (app, dict(app.config))
        app, config = self.variants[key]
        app.config.clear()
        app.config.update({name: copy.deepcopy(value) for name, value in config.items()})
        app.appbuilder.sm.limiter.reset()
        return app

    def close(self) -> None:
        for app in [self.app, *(app for app, _config in self.variants.values())]:
            if app is not None:
                with app.app_context():
                    db.session.remove()
                    db.engine.dispose()

    def drop(self) -> None:
        self.close()
        if self.backend == "postgresql":
            _drop_pg(self.name)


@pytest.fixture(scope="session")
def slots(templates, tmp_path_factory):
    made: dict[str, Slot] = {}

    def get(backend: str) -> Slot:
        if backend not in made:
            made[backend] = Slot(backend, templates(backend), tmp_path_factory.mktemp(f"slot-{backend}"))
        return made[backend]

    yield get
    for slot in made.values():
        slot.drop()


@pytest.fixture
def slot(backend, slots):
    return slots(backend)


@pytest.fixture
def database_url(slot):
    """A fresh, fully migrated database for one test (the same address in every test of a worker)."""
    yield slot.reset()
    slot.close()


@pytest.fixture
def empty_url(backend, tmp_path):
    """An empty database (no tables) for one test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with _fresh_pg() as url:
        yield url


@pytest.fixture
def make_app(database_url, slot):
    """An app on this test's database with other settings: `make_app(**config)` builds a new one;
    `make_app.reused(**config)` hands back the one an earlier test of this worker built with the same settings, as
    freshly built (configuration and rate limits put back), for plugin sets that keep nothing between requests."""
    apps = []

    def make(**overrides):
        app = build_app(overrides.pop("SQLALCHEMY_DATABASE_URI", database_url), slot.instance, **overrides)
        apps.append(app)
        return app

    def reused(**overrides):
        app = slot.app_with(overrides)
        apps.append(app)
        return app

    make.reused = reused

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(database_url, slot):
    """The app with default test settings on this test's database."""
    return slot.shared_app()


@pytest.fixture
def client(app):
    return app.test_client()


def add_user(app, username: str, role: str, password: str = PASSWORD):
    """Create a user with one role; returns its id."""
    with app.app_context():
        sm = app.appbuilder.sm
        user = sm.add_user(username, username.title(), "Test", f"{username}@example.com", sm.find_role(role), password)
        assert user, f"could not create {username}"
        return user.id


def csrf_token(client, path: str = "/login/") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client, username: str, password: str = PASSWORD):
    """Log in through the real login form (with its CSRF token); returns the response."""
    return client.post("/login/", data={"username": username, "password": password,
                                        "csrf_token": csrf_token(client)}, follow_redirects=False)


@pytest.fixture
def admin_client(app, client):
    add_user(app, "admin", "Admin")
    response = login(client, "admin")
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


def api_token(client, username: str, password: str = PASSWORD) -> str:
    response = client.post("/api/v1/security/login",
                           json={"username": username, "password": password, "provider": "db"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]
