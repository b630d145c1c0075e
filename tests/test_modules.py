"""Switching modules on and off: routes, menus, hooks, data, dependencies, the screen and the CLI."""
import pytest
from sqlalchemy import select

from bigledger_core.db import db
from bigledger_core.errors import ModuleStateError
from bigledger_core.modules import disable_module, enable_module, enabled_modules
from tests.conftest import add_user, api_token, csrf_token, login
from tests.sample_plugin import plugin as sample
from tests.sample_plugin.models import SampleNote


def _switch(app, action, name):
    with app.test_request_context():
        (enable_module if action == "enable" else disable_module)(name, by="test")


def test_a_disabled_module_has_no_route_menu_hook_and_keeps_its_data(app, admin_client):
    client = admin_client
    with app.app_context():
        db.session.add(SampleNote(title="kept across switching"))
        db.session.commit()
    token = api_token(client, "admin")
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/sample/ping").status_code == 200
    assert "Sample notes" in client.get("/").get_data(as_text=True)
    assert client.get("/api/v1/sample_note/", headers=auth).status_code == 200

    _switch(app, "disable", "sample")

    assert client.get("/sample/ping").status_code == 404
    assert client.get("/samplenoteview/list/").status_code == 404
    assert client.get("/api/v1/sample_note/", headers=auth).status_code == 404
    assert "Sample notes" not in client.get("/").get_data(as_text=True)
    menu = client.get("/api/v1/menu/", headers=auth).get_json()["result"]
    assert "Sample" not in [item["name"] for item in menu]
    health = client.get("/health").get_json()
    assert "sample" not in health["modules"] and "sample.sample" not in health["checks"]
    with app.app_context():
        assert db.session.scalar(select(SampleNote.title)) == "kept across switching"

    _switch(app, "enable", "sample")

    assert client.get("/sample/ping").status_code == 200
    listing = client.get("/api/v1/sample_note/", headers=auth).get_json()
    assert [row["title"] for row in listing["result"]] == ["kept across switching"]
    assert "Sample notes" in client.get("/").get_data(as_text=True)


def test_switching_emits_an_event_to_enabled_subscribers_only(app):
    sample.RECEIVED.clear()
    _switch(app, "disable", "pos_bridge")
    assert [(e.name, e.payload) for e in sample.RECEIVED] == [
        ("bigledger_module_switched", {"module": "pos_bridge", "enabled": False, "by": "test"})]
    assert sample.RECEIVED[0].id
    _switch(app, "disable", "sample")
    _switch(app, "enable", "pos_bridge")
    assert len(sample.RECEIVED) == 1  # sample was off: its hook was not called
    sample.RECEIVED.clear()


def test_a_failing_subscriber_does_not_break_the_switch(app, monkeypatch):
    def explode(event):
        raise RuntimeError("subscriber down")

    monkeypatch.setattr(sample, "bigledger_module_switched", explode)
    hookimpl = [i for i in app.extensions["bigledger"].pm.hook.bigledger_module_switched.get_hookimpls()
                if i.plugin_name == "sample"][0]
    monkeypatch.setattr(hookimpl, "function", explode)
    _switch(app, "disable", "project_bridge")
    with app.test_request_context():
        assert "project_bridge" not in enabled_modules()


def test_dependencies_are_checked_both_ways_with_the_module_in_the_way(app):
    with app.test_request_context(headers={"Accept-Language": "en"}):
        with pytest.raises(ModuleStateError) as err:
            disable_module("crm", by="test")
        message = str(err.value)
        assert message.startswith("Cannot disable crm:")
        for name in ["finance_bridge", "pos_bridge", "inventory_bridge", "project_bridge", "sample"]:
            assert f"({name})" in message
    for name in ["finance_bridge", "pos_bridge", "inventory_bridge", "project_bridge", "sample"]:
        _switch(app, "disable", name)
    _switch(app, "disable", "crm")
    with app.test_request_context(headers={"Accept-Language": "en"}):
        with pytest.raises(ModuleStateError, match=r"Cannot enable pos_bridge: it requires .*\(crm\), which is disabled"):
            enable_module("pos_bridge", by="test")
        with pytest.raises(ModuleStateError, match="Unknown module warehouse"):
            enable_module("warehouse", by="test")
        with pytest.raises(ModuleStateError, match="core module cannot be disabled"):
            disable_module("core", by="test")


def test_dependency_messages_are_translated(app):
    with app.test_request_context(headers={"Accept-Language": "zh-CN,zh;q=0.9"}):
        with pytest.raises(ModuleStateError) as err:
            disable_module("crm", by="test")
        message = str(err.value)
    assert "无法停用 crm" in message and "财务桥接 (finance_bridge)" in message


def test_a_module_left_out_of_bigledger_modules_has_no_routes(make_app):
    app = make_app(BIGLEDGER_MODULES=["crm", "pos_bridge"], BIGLEDGER_EXTRA_PLUGINS=[])
    assert "sample" not in app.extensions["bigledger"].modules
    assert app.test_client().get("/sample/ping").status_code == 404


def test_the_modules_screen_lists_and_switches_modules(app, admin_client):
    client = admin_client
    page = client.get("/modules/").get_data(as_text=True)
    for name in ["crm", "finance_bridge", "pos_bridge", "inventory_bridge", "project_bridge", "sample"]:
        assert f'data-module="{name}"' in page
    token = csrf_token(client, "/modules/")
    response = client.post("/modules/pos_bridge/disable", data={"csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    with app.test_request_context():
        assert "pos_bridge" not in enabled_modules()
    response = client.post("/modules/crm/disable", data={"csrf_token": token}, follow_redirects=True)
    assert "finance_bridge" in response.get_data(as_text=True)  # the refusal names who is in the way
    with app.test_request_context():
        assert "crm" in enabled_modules()


def test_the_modules_screen_refuses_a_post_without_csrf_token(app, admin_client):
    response = admin_client.post("/modules/pos_bridge/disable")
    assert response.status_code == 400
    with app.test_request_context():
        assert "pos_bridge" in enabled_modules()


def test_only_admins_may_use_the_modules_screen(app, client):
    add_user(app, "rep", "Sales Rep")
    login(client, "rep")
    assert client.get("/modules/").status_code in (302, 403)
    with app.test_request_context():
        assert "pos_bridge" in enabled_modules()


def test_non_strict_start_shows_a_failed_plugin_on_the_modules_screen(make_app, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    app = make_app(BIGLEDGER_STRICT_PLUGINS=False,
                   BIGLEDGER_EXTRA_PLUGINS=["tests.sample_plugin.plugin", "broken_plugin"])
    add_user(app, "admin", "Admin")
    client = app.test_client()
    login(client, "admin")
    page = client.get("/modules/").get_data(as_text=True)
    assert 'data-module="broken_plugin"' in page and "ImportError: needs libfoo" in page
    assert client.get("/health").get_json()["failed_plugins"] == ["broken_plugin"]
