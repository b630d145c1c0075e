"""Test fixtures. Every test that touches a database runs on SQLite and, when
BIGLEDGER_TEST_DATABASE_URL is set, again on PostgreSQL. Each test gets a fresh database cloned from
a migrated template (a file copy on SQLite, CREATE DATABASE … TEMPLATE on PostgreSQL)."""
from __future__ import annotations

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
              "BIGLEDGER_EVENT_FIRST_ATTEMPT": "inline"}
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


@pytest.fixture(scope="session")
def templates(tmp_path_factory):
    """A migrated template database per backend, built on first use."""
    built: dict[str, str] = {}

    def get(backend: str) -> str:
        if backend not in built:
            folder = tmp_path_factory.mktemp(f"template-{backend}")
            if backend == "sqlite":
                url = f"sqlite:///{folder / 'template.db'}"
                built[backend] = str(folder / "template.db")
            else:
                name = f"{make_url(PG_URL).database}_tpl_{_worker()}"
                _drop_pg(name)
                with _pg(PG_URL) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                url = _pg_url(name)
                built[backend] = name
            migrate(build_app(url, folder))
        return built[backend]

    yield get
    for backend, name in built.items():
        if backend == "postgresql":
            _drop_pg(name)


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


@pytest.fixture
def database_url(backend, templates, tmp_path):
    """A fresh, fully migrated database for one test."""
    template = templates(backend)
    if backend == "sqlite":
        target = tmp_path / "test.db"
        shutil.copyfile(template, target)
        yield f"sqlite:///{target}"
        return
    with _fresh_pg(template) as url:
        yield url


@pytest.fixture
def empty_url(backend, tmp_path):
    """An empty database (no tables) for one test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with _fresh_pg() as url:
        yield url


@pytest.fixture
def make_app(database_url, tmp_path):
    """Build an app on this test's database; `make_app(**config)` overrides settings."""
    apps = []

    def make(**overrides):
        app = build_app(overrides.pop("SQLALCHEMY_DATABASE_URI", database_url), tmp_path / "instance", **overrides)
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


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
