"""Schema: every module branch goes up and down on an empty database, on SQLite and PostgreSQL."""
from sqlalchemy import inspect

from bigledger_core.db import db
from bigledger_core.migrate import current, downgrade, upgrade
from tests.conftest import build_app


def _tables():
    return set(inspect(db.engine).get_table_names())


def test_every_branch_goes_up_and_down(empty_url, tmp_path):
    app = build_app(empty_url, tmp_path)
    with app.app_context():
        assert _tables() == set()
        assert current() == {"core": None, "crm": None, "finance_bridge": None, "inventory_bridge": None,
                             "pos_bridge": None, "project_bridge": None, "sample": None}
        assert upgrade() == ["core", "crm", "finance_bridge", "inventory_bridge", "pos_bridge", "project_bridge",
                             "sample"]
        assert {"ab_user", "ab_role", "bl_module", "bl_team", "bl_team_member", "sample_note", "crm_contact",
                "bl_outbox_event"} <= _tables()
        assert current() == {"core": "core_0002", "crm": "crm_0009", "finance_bridge": "finance_0002",
                             "inventory_bridge": "inventory_0001", "pos_bridge": "pos_0001",
                             "project_bridge": "project_0001", "sample": "sample_0001"}

        downgrade("sample@base")  # a module's tables go with its branch; the rest stays
        assert "sample_note" not in _tables() and "ab_user" in _tables()
        assert current() == {"core": "core_0002", "crm": "crm_0009", "finance_bridge": "finance_0002",
                             "inventory_bridge": "inventory_0001", "pos_bridge": "pos_0001",
                             "project_bridge": "project_0001", "sample": None}

        upgrade(modules=["sample"])
        assert "sample_note" in _tables()

        downgrade("base")
        assert _tables() <= {"alembic_version"}
        upgrade()
        assert "sample_note" in _tables()
        db.engine.dispose()


def test_enabling_a_module_creates_its_tables(empty_url, tmp_path):
    app = build_app(empty_url, tmp_path)
    with app.app_context():
        upgrade(modules=["core"])
        assert "sample_note" not in _tables()
    from bigledger_core.modules import disable_module, enable_module

    with app.test_request_context():
        disable_module("sample", by="test")
        enable_module("sample", by="test")
        assert "sample_note" in _tables()
        db.engine.dispose()
