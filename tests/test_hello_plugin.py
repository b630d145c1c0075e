"""The example third-party plugin, really installed: menu item, REST endpoint, event listener, zh/en strings."""
import importlib
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from sqlalchemy import select

from bigledger_core.db import db
from bigledger_core.modules import disable_module, enable_module
from tests.conftest import add_user, api_token, build_app, login, migrate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example into its own folder (not the shared virtualenv)."""
    target = tmp_path_factory.mktemp("hello-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True)
    return target


@pytest.fixture
def hello_app(installed, empty_url, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    importlib.invalidate_caches()
    app = build_app(empty_url, tmp_path, BIGLEDGER_EXTRA_PLUGINS=[])
    migrate(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    for name in [m for m in sys.modules if m.startswith("bigledger_hello")]:
        del sys.modules[name]


def test_the_installed_plugin_is_discovered_by_its_entry_point(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    importlib.invalidate_caches()
    (hello,) = [ep for ep in entry_points(group="bigledger.plugins") if ep.name == "hello"]
    assert hello.value == "bigledger_hello.plugin" and hello.dist.name == "bigledger-hello"


def test_menu_rest_event_listener_and_strings(hello_app):
    app = hello_app
    assert "hello" in app.extensions["bigledger"].modules
    add_user(app, "admin", "Admin")
    client = app.test_client()
    login(client, "admin")

    # menu item and screen, in English then Chinese
    client.get("/lang/en")
    home = client.get("/").get_data(as_text=True)
    assert "Greetings" in home and "Hello example" in home
    assert client.get("/hellogreetingview/list/").status_code == 200
    client.get("/lang/zh")
    assert "问候" in client.get("/").get_data(as_text=True)

    # REST endpoint in the caller's language
    assert app.test_client().get("/api/v1/hello/greet").status_code == 401
    auth = {"Authorization": f"Bearer {api_token(app.test_client(), 'admin')}"}
    api = app.test_client()
    assert api.get("/api/v1/hello/greet", headers={**auth, "Accept-Language": "en"}).get_json() == \
        {"message": "Hello, Admin!", "user": "admin"}
    assert api.get("/api/v1/hello/greet", headers={**auth, "Accept-Language": "zh-CN"}).get_json()["message"] == \
        "你好，Admin！"

    # event listener
    from bigledger_hello.models import HelloGreeting

    with app.test_request_context():
        disable_module("pos_bridge", by="admin")
        enable_module("pos_bridge", by="admin")
        messages = db.session.scalars(select(HelloGreeting.message).order_by(HelloGreeting.id)).all()
    assert messages == ["模块 pos_bridge 已停用 / module pos_bridge switched off",
                        "模块 pos_bridge 已启用 / module pos_bridge switched on"]

    # switched off: no route, no menu, data kept
    with app.test_request_context():
        disable_module("hello", by="admin")
    assert api.get("/api/v1/hello/greet", headers=auth).status_code == 404
    assert client.get("/hellogreetingview/list/").status_code == 404
    assert "问候" not in client.get("/").get_data(as_text=True)
    with app.app_context():
        assert db.session.query(HelloGreeting).count() == 2
