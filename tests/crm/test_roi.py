"""Source ROI: exact figures per channel for a small dataset (costs prorated by days, won deals in two
currencies never added), channel costs through the API with their checks, and the report's 400s."""
from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pytest

from bigledger_core.db import db
from plugins.crm.leads.conversion import convert_lead
from plugins.crm.leads.models import ChannelCost, Lead
from plugins.crm.leads.roi import roi
from plugins.crm.leads.services import create_lead
from plugins.crm.pipeline import config
from plugins.crm.pipeline.services import load_pipeline
from tests.conftest import add_user, api_token

SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")
D = Decimal


def _at(day: int, month: int = 1) -> dt.datetime:
    return dt.datetime(2024, month, day, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def dataset(app):
    """微信: 3 leads in 1–10 Jan (2 qualified, 1 converted and won for 10,000 CNY) and one on 20 Jan, cost 3,100 CNY
    for January. 展会: 2 leads converted, one won for 500 USD and one for 4,000 CNY, costs 2,000 CNY and 300 USD for
    1–10 Jan and 5,000 CNY in February. One lead without a channel."""
    with app.app_context():
        load_pipeline(db.session, config.parse(SEED))
        leads = {}
        for key, channel, campaign, day, status in [
                ("w1", "微信", "春季", 3, "qualified"), ("w2", "微信", "春季", 5, "qualified"),
                ("w3", "微信", None, 8, "new"), ("w4", "微信", None, 20, "qualified"),
                ("e1", "展会", "上海展", 2, "qualified"), ("e2", "展会", "上海展", 9, "qualified"),
                ("n1", None, None, 4, "new")]:
            lead, _ = create_lead(db.session, Lead(name=f"潜客{key}", company_name=f"公司{key}", channel=channel,
                                                   campaign=campaign, status=status, created_at=_at(day),
                                                   qualified_at=_at(day) if status == "qualified" else None))
            leads[key] = lead
        for key, amount, currency in [("w1", "10000", "CNY"), ("e1", "500", "USD"), ("e2", "4000", "CNY")]:
            deal = convert_lead(db.session, leads[key], amount=amount, currency=currency)
            deal.status = "won"
        db.session.add_all([
            ChannelCost(channel="微信", period_start=dt.date(2024, 1, 1), period_end=dt.date(2024, 1, 31),
                        amount=D("3100.00"), currency="CNY"),
            ChannelCost(channel="展会", campaign="上海展", period_start=dt.date(2024, 1, 1),
                        period_end=dt.date(2024, 1, 10), amount=D("2000.00"), currency="CNY"),
            ChannelCost(channel="展会", period_start=dt.date(2024, 1, 1), period_end=dt.date(2024, 1, 10),
                        amount=D("300.00"), currency="USD"),
            ChannelCost(channel="展会", period_start=dt.date(2024, 2, 1), period_end=dt.date(2024, 2, 29),
                        amount=D("5000.00"), currency="CNY")])
        db.session.commit()


def _figures(row) -> tuple:
    return (row["leads"], row["qualified"], row["converted"], row["won_deals"], row["won_revenue"], row["cost"],
            row["cost_per_lead"], row["roi"], row["won_other"], row["cost_other"])


def test_roi_per_channel_is_exact_with_prorated_costs_and_currencies_kept_apart(app, dataset):
    with app.app_context():
        report = roi(db.session, date_from=dt.date(2024, 1, 1), date_to=dt.date(2024, 1, 10), currency="cny")
    assert report["currency"] == "CNY"
    rows = {row["channel"]: _figures(row) for row in report["rows"]}
    assert list(rows) == ["", "展会", "微信"]
    assert rows[""] == (1, 0, 0, 0, D("0.00"), D("0.00"), D("0.00"), None, {}, {})
    assert rows["展会"] == (2, 2, 2, 1, D("4000.00"), D("2000.00"), D("1000.00"), D("1.0000"), {"USD": D("500.00")},
                          {"USD": D("300.00")})
    # 3,100 for 31 days, 10 of them in the report: 1,000
    assert rows["微信"] == (3, 2, 1, 1, D("10000.00"), D("1000.00"), D("333.33"), D("9.0000"), {}, {})
    assert _figures(report["totals"]) == (6, 4, 3, 2, D("14000.00"), D("3000.00"), D("500.00"), D("3.6667"),
                                          {"USD": D("500.00")}, {"USD": D("300.00")})


def test_roi_in_another_currency_and_without_dates_and_by_campaign(app, dataset):
    with app.app_context():
        usd = roi(db.session, date_from=dt.date(2024, 1, 1), date_to=dt.date(2024, 1, 10), currency="USD")
        everything = roi(db.session)
        campaigns = roi(db.session, date_from=dt.date(2024, 1, 1), date_to=dt.date(2024, 1, 10), by="campaign")
    fair = {row["channel"]: row for row in usd["rows"]}["展会"]
    assert (fair["won_revenue"], fair["cost"], fair["roi"], fair["won_other"], fair["cost_other"]) == \
        (D("500.00"), D("300.00"), D("0.6667"), {"CNY": D("4000.00")}, {"CNY": D("2000.00")})
    whole = {row["channel"]: row for row in everything["rows"]}
    assert (whole["微信"]["leads"], whole["微信"]["cost"], whole["展会"]["cost"]) == (4, D("3100.00"), D("7000.00"))
    keyed = {(row["channel"], row["campaign"]): (row["leads"], row["won_revenue"], row["cost"])
             for row in campaigns["rows"]}
    assert keyed == {("", ""): (1, D("0.00"), D("0.00")), ("展会", "上海展"): (2, D("4000.00"), D("2000.00")),
                     ("展会", ""): (0, D("0.00"), D("0.00")), ("微信", "春季"): (2, D("10000.00"), D("0.00")),
                     ("微信", ""): (1, D("0.00"), D("1000.00"))}


def _headers(client):
    return {"Authorization": f"Bearer {api_token(client, 'admin')}", "Accept-Language": "en"}


def test_the_roi_api_answers_and_names_each_bad_parameter(app, client, dataset):
    add_user(app, "admin", "Admin")
    headers = _headers(client)
    response = client.get("/api/v1/crm/roi/?date_from=2024-01-01&date_to=2024-01-10&currency=CNY", headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["totals"]["won_revenue"] == "14000.00" and body["totals"]["roi"] == "3.6667"
    assert {row["channel"]: row["cost"] for row in body["rows"]}["微信"] == "1000.00"
    for query, parameter in [("date_from=2024-13-01", "date_from"), ("date_to=yesterday", "date_to"),
                             ("date_from=2024-02-01&date_to=2024-01-01", "date_to"), ("currency=EURO", "currency"),
                             ("by=owner", "by"), ("format=pdf", "format")]:
        response = client.get(f"/api/v1/crm/roi/?{query}", headers=headers)
        assert response.status_code == 400, query
        assert response.get_json()["message"].startswith(f"{parameter}:"), response.get_json()
    csv = client.get("/api/v1/crm/roi/?date_from=2024-01-01&date_to=2024-01-10&format=csv", headers=headers)
    text = csv.get_data().decode("utf-8-sig")
    assert csv.status_code == 200 and "微信" in text and "333.33" in text


def test_channel_costs_through_the_api_are_checked(app, client):
    add_user(app, "admin", "Admin")
    headers = _headers(client)
    good = {"channel": " 微信 ", "campaign": "", "period_start": "2024-01-01", "period_end": "2024-01-31",
            "amount": 3100, "currency": "cny"}
    response = client.post("/api/v1/crm/channel-cost/", json=good, headers=headers)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["result"]["channel"] == "微信" and response.get_json()["result"]["currency"] == "CNY"
    overlapping = client.post("/api/v1/crm/channel-cost/", json={**good, "period_start": "2024-01-15",
                                                                 "period_end": "2024-02-15"}, headers=headers)
    assert overlapping.status_code == 400 and "period_start" in overlapping.get_json()["message"]
    backwards = client.post("/api/v1/crm/channel-cost/", json={**good, "channel": "展会", "period_end": "2023-12-01",
                                                               "currency": "C1Y", "amount": -1}, headers=headers)
    message = backwards.get_json()["message"]
    assert backwards.status_code == 400 and all(f in message for f in ("period_end", "currency", "amount"))
    listed = client.get("/api/v1/crm/channel-cost/", headers=headers).get_json()
    assert listed["count"] == 1


def test_the_roi_screen_shows_the_table_and_downloads_excel(app, admin_client, dataset):
    page = admin_client.get("/crm/roi/?date_from=2024-01-01&date_to=2024-01-10", headers={"Accept-Language": "en"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="bl-roi-table"' in html and "333.33" in html and "USD 500.00" in html
    bad = admin_client.get("/crm/roi/?date_from=nope", headers={"Accept-Language": "en"})
    assert bad.status_code == 400 and "date_from" in bad.get_data(as_text=True)
    xlsx = admin_client.get("/crm/roi/export/xlsx?date_from=2024-01-01&date_to=2024-01-10")
    assert xlsx.status_code == 200
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(xlsx.get_data())).active
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[0][0] == "Channel" or values[0][0] == "渠道"
    assert any(row[0] == "微信" and 333.33 in row for row in values[1:])
    assert admin_client.get("/crm/channel-cost/list/").status_code == 200
