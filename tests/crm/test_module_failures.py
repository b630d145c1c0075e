"""A module that fails while a page is built (its 360° panel, its timeline entries, its deal panel or line
checks) is left out of that page, which still shows everything else and says what is missing.

This test module is also a plugin: loaded as `broken_erp`, it raises in every display hook; its timeline
entries fail in the database itself, so the page must go on after a failed statement too."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from bigledger_core import hookimpl
from bigledger_core.db import db
from plugins.crm.models import Activity, Company
from tests.conftest import SAMPLE_PLUGIN, add_user, api_token, login

SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")


@hookimpl
def bigledger_manifest():
    return {"name": "broken_erp", "version": "1.0", "label": {"zh": "故障模块", "en": "Broken module"},
            "requires": ["crm"]}


@hookimpl
def crm_customer_panels(customer):
    raise ConnectionError("the ERP is down")


@hookimpl
def crm_timeline_entries(customer, limit):
    db.session.execute(text("SELECT * FROM a_table_that_is_not_there"))


@hookimpl
def crm_deal_panels(deal):
    raise TimeoutError("the ERP took too long")


@hookimpl
def crm_deal_line_checks(deal, lines):
    raise ConnectionError("the ERP is down")


@pytest.fixture
def broken(make_app):
    return make_app.reused(BIGLEDGER_EXTRA_PLUGINS=[SAMPLE_PLUGIN, __name__])


def test_the_360_view_and_the_deal_page_show_the_rest_when_a_module_fails(broken):
    from plugins.crm.pipeline import config
    from plugins.crm.pipeline.models import Deal, DealLine
    from plugins.crm.pipeline.services import create_deal, load_pipeline

    add_user(broken, "boss", "Admin")
    with broken.app_context():
        load_pipeline(db.session, config.parse(SEED))
        company = Company(name="华信科技有限公司")
        db.session.add(company)
        db.session.flush()
        db.session.add(Activity(kind="call", subject="回访 / Follow-up call", company_id=company.id,
                                occurred_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC)))
        deal = create_deal(db.session, Deal(name="ERP 升级 / ERP upgrade", company_id=company.id))
        deal.lines.append(DealLine(product="ERP 许可 / ERP licence", product_code="ERP-LIC", quantity=Decimal(2),
                                   unit_price=Decimal(100), position=0))
        db.session.commit()
        company_id, deal_id = company.id, deal.id
    client = broken.test_client()
    h = {"Authorization": f"Bearer {api_token(client, 'boss')}", "Accept-Language": "en"}
    view = client.get(f"/api/v1/crm/customer/company/{company_id}/360", headers=h)
    assert view.status_code == 200
    result = view.get_json()["result"]
    assert [p["module"] for p in result["panels"] if not p.get("failed")].count("sample") == 1
    [failed] = [p for p in result["panels"] if p.get("failed")]
    assert failed["module"] == "broken_erp" and failed["title"] == {"zh": "故障模块", "en": "Broken module"}
    assert "did not answer" in failed["rows"][0][1]
    assert result["timeline"]["missing"] == ["broken_erp"]
    assert "回访 / Follow-up call" in [e["title"] for e in result["timeline"]["entries"]]

    login(client, "boss")
    client.get("/lang/en")
    page = client.get(f"/crm/customer/company/{company_id}").get_data(as_text=True)
    assert 'data-module="broken_erp" data-failed="1"' in page and "Sample panel" in page
    assert "Not shown: entries from Broken module, which did not answer." in page
    assert "回访 / Follow-up call" in page
    deal_page = client.get(f"/dealview/show/{deal_id}")
    assert deal_page.status_code == 200
    html = deal_page.get_data(as_text=True)
    assert 'data-module="broken_erp" data-failed="1"' in html and "Not checked: this module did not answer." in html
    extras = client.get(f"/api/v1/crm/deal/{deal_id}/extras", headers=h).get_json()
    assert [p["module"] for p in extras["panels"] if p.get("failed")] == ["broken_erp"]
    [mine] = [c for c in extras["lines"][0]["checks"] if c["module"] == "broken_erp"]
    assert mine["status"] == "unknown"  # not checked, and not flagged for it
