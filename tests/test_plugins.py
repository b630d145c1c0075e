"""The plugin host: discovery, manifests, hook validation, requirements, and the errors for bad plugins."""
import textwrap

import pytest

from bigledger_core.app import create_app
from bigledger_core.errors import ConfigError, PluginError
from bigledger_core.plugins import PluginHost

BUILT_IN = ["crm", "finance_bridge", "inventory_bridge", "pos_bridge", "project_bridge"]


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """Write plugin modules into an importable folder: write("name", "source")."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, body: str, requires=("crm",)) -> str:
        header = textwrap.dedent(f"""
            from bigledger_core import hookimpl

            @hookimpl
            def bigledger_manifest():
                return {{"name": "{name}", "version": "1", "label": {{"zh": "测试", "en": "Test"}},
                         "requires": {list(requires)!r}}}
        """)
        (tmp_path / f"{name}.py").write_text(header + textwrap.dedent(body), encoding="utf-8")
        return name

    return write


def test_built_in_modules_are_discovered_through_entry_points_in_requirement_order():
    host = PluginHost()
    assert host.modules[0] == "core"
    assert set(BUILT_IN) <= set(host.modules)
    for bridge in ["finance_bridge", "pos_bridge", "inventory_bridge", "project_bridge"]:
        assert "crm" in host.manifests[bridge].requires
        assert host.modules.index("crm") < host.modules.index(bridge)
    crm = host.manifests["crm"]
    assert crm.label == {"zh": "客户关系管理", "en": "Customer relationship management"}
    assert crm.source.startswith("plugins.crm.plugin (bigledger-crm")


def test_a_misspelt_hook_is_refused_naming_the_plugin_and_the_hook(plugin_dir):
    plugin_dir("typo", """
        def bigledger_register_veiws(appbuilder):
            pass
    """)
    with pytest.raises(PluginError) as err:
        PluginHost(extra_plugins=["typo"])
    message = str(err.value)
    assert "'typo'" in message and "bigledger_register_veiws" in message
    assert "did you mean 'bigledger_register_views'" in message


def test_a_hook_with_a_wrong_argument_is_refused_naming_the_plugin_and_the_hook(plugin_dir):
    plugin_dir("badargs", """
        @hookimpl
        def bigledger_register_views(app_builder):
            pass
    """)
    with pytest.raises(PluginError) as err:
        PluginHost(extra_plugins=["badargs"])
    assert "'badargs'" in str(err.value) and "bigledger_register_views" in str(err.value)
    assert "app_builder" in str(err.value)


def test_a_plugin_that_raises_on_import_is_named(plugin_dir, tmp_path):
    (tmp_path / "explodes.py").write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(PluginError) as err:
        PluginHost(extra_plugins=["explodes"])
    assert "'explodes'" in str(err.value) and "RuntimeError: boom at import" in str(err.value)


def test_non_strict_mode_starts_without_the_broken_plugin_and_lists_it(plugin_dir, tmp_path):
    (tmp_path / "explodes.py").write_text("raise RuntimeError('boom')\n")
    plugin_dir("needs_missing", "", requires=["no_such_module"])
    plugin_dir("typo2", "def bigledger_rolez():\n    return []\n")
    host = PluginHost(strict=False, extra_plugins=["explodes", "needs_missing", "typo2"])
    assert set(host.failed) == {"explodes", "needs_missing", "typo2"}
    assert "no_such_module" in host.failed["needs_missing"]
    assert "crm" in host.modules and "typo2" not in host.modules


def test_a_plugin_requiring_a_missing_module_is_named_with_the_missing_module(plugin_dir):
    plugin_dir("lonely", "", requires=["crm", "warehouse"])
    with pytest.raises(PluginError) as err:
        PluginHost(extra_plugins=["lonely"])
    assert str(err.value) == "plugin 'lonely' requires 'warehouse', which is not installed"


def test_a_requirement_cycle_is_refused_with_the_cycle(plugin_dir):
    plugin_dir("chicken", "", requires=["egg"])
    plugin_dir("egg", "", requires=["chicken"])
    with pytest.raises(PluginError) as err:
        PluginHost(extra_plugins=["chicken", "egg"])
    assert "requirement cycle" in str(err.value)
    assert "chicken -> egg -> chicken" in str(err.value) or "egg -> chicken -> egg" in str(err.value)


def test_a_manifest_without_both_labels_is_refused(plugin_dir, tmp_path):
    (tmp_path / "halflabel.py").write_text(textwrap.dedent("""
        from bigledger_core import hookimpl

        @hookimpl
        def bigledger_manifest():
            return {"name": "halflabel", "version": "1", "label": {"en": "Half"}}
    """))
    with pytest.raises(PluginError, match="'halflabel': manifest label needs both 'zh' and 'en'"):
        PluginHost(extra_plugins=["halflabel"])


def test_bigledger_modules_limits_the_deployment():
    host = PluginHost(offered=["crm", "pos_bridge"])
    assert host.modules == ["core", "crm", "pos_bridge"]


def test_bigledger_modules_with_an_unknown_name_is_refused_naming_it():
    with pytest.raises(ConfigError) as err:
        PluginHost(offered=["crm", "warehouse"])
    assert "warehouse" in str(err.value) and "BIGLEDGER_MODULES" in str(err.value)


def test_bigledger_modules_without_a_requirement_is_refused_naming_both():
    with pytest.raises(PluginError) as err:
        PluginHost(offered=["pos_bridge"])
    assert str(err.value) == "plugin 'pos_bridge' requires 'crm', which BIGLEDGER_MODULES leaves out"


def test_a_malformed_database_url_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("BIGLEDGER_DATABASE_URL", "postgres//oops")
    with pytest.raises(ConfigError, match="BIGLEDGER_DATABASE_URL is not a valid database URL: 'postgres//oops'"):
        create_app({"BIGLEDGER_ENV": "development", "INSTANCE_PATH": str(tmp_path)})
    monkeypatch.setenv("BIGLEDGER_DATABASE_URL", "oracle://scott@db/orcl")
    with pytest.raises(ConfigError, match="unsupported database 'oracle'"):
        create_app({"BIGLEDGER_ENV": "development", "INSTANCE_PATH": str(tmp_path)})


def test_production_refuses_the_default_secret_key(monkeypatch, tmp_path):
    monkeypatch.delenv("BIGLEDGER_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="BIGLEDGER_SECRET_KEY is not set"):
        create_app({"BIGLEDGER_ENV": "production", "INSTANCE_PATH": str(tmp_path)})
    monkeypatch.delenv("BIGLEDGER_MAIL_PROVIDER", raising=False)
    with pytest.raises(ConfigError, match="BIGLEDGER_MAIL_PROVIDER is not set"):
        create_app({"BIGLEDGER_ENV": "production", "INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "x" * 40})
    app = create_app({"BIGLEDGER_ENV": "production", "INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "x" * 40,
                      "BIGLEDGER_MAIL_PROVIDER": "file"})
    assert app.config["SECRET_KEY"] == "x" * 40 and app.config["BIGLEDGER_MAIL_PROVIDER"] == "file"
