"""Forecast and pipeline analytics: exact figures per quarter, owner and team from deals moved through the
pipeline commands (history timestamps set to known days), record rules, the REST API, the CSV and XLSX
download and the screen with its SVG charts in zh and en."""
from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import select, update

from bigledger_core.db import db
from bigledger_core.models import Team
from plugins.crm.models import Company
from plugins.crm.pipeline import config
from plugins.crm.pipeline.forecast import (
    ForecastParameterError,
    cycle_metrics,
    default_currency,
    forecast,
    stage_conversion,
)
from plugins.crm.pipeline.models import Deal, StageHistory
from plugins.crm.pipeline.services import (
    create_deal,
    load_pipeline,
    lose_deal,
    move_deal,
    win_deal,
)
from tests.conftest import add_user, api_token, login

SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
STAGES = ["寻找客户", "资质认定", "提案", "谈判", "成交"]

# name: (owner, amount, currency, path through the stages, history days from 1 Jan 2024, expected close,
#        outcome, forecast category)
DEALS = {
    "A": ("rep", "100000", "CNY", ["资质认定", "提案", "谈判"], [0, 5, 15, 25], dt.date(2024, 2, 15), None, None),
    "B": ("rep", "50000", "CNY", ["资质认定", "提案"], [0, 10, 20], dt.date(2024, 3, 10), None, None),
    "C": ("rep2", "20000", "CNY", [], [0], dt.date(2024, 2, 1), None, None),
    "D": ("rep2", "40000", "CNY", ["资质认定"], [0, 20], dt.date(2024, 5, 20), None, "commit"),
    "E": ("rep", "30000", "CNY", ["资质认定", "提案"], [0, 10, 40], dt.date(2024, 4, 2), None, "omitted"),
    "F": ("rep", "99999", "USD", ["资质认定", "提案", "谈判"], [0, 10, 20, 30], dt.date(2024, 1, 20), None, None),
    "G": ("rep", "80000", "CNY", ["资质认定", "提案", "谈判"], [0, 10, 30, 60, 90], None, "won", None),
    "H": ("rep2", "60000", "CNY", ["提案"], [60, 80, 100], None, "won", None),
    "I": ("rep", "10000", "CNY", ["资质认定"], [9, 20, 50], None, "lost", None),
}


def _at(days: int) -> dt.datetime:
    return START + dt.timedelta(days=days)


@pytest.fixture
def sales(app):
    """Nine deals of two reps (rep in team 华东销售组, rep2 in none) with known history."""
    for name, role in (("rep", "Sales Rep"), ("rep2", "Sales Rep"), ("admin", "Admin")):
        add_user(app, name, role)
    with app.app_context():
        sm = app.appbuilder.sm
        users = {name: sm.find_user(username=name) for name in ("rep", "rep2")}
        team = Team(name="华东销售组", name_en="East China sales", members=[users["rep"]])
        db.session.add(team)
        pipeline = load_pipeline(db.session, config.parse(SEED))
        company = Company(name="华信科技有限公司", owner_id=users["rep"].id)
        db.session.add(company)
        db.session.commit()
        ids = {}
        for name, (owner, amount, currency, path, days, close, outcome, category) in DEALS.items():
            user = users[owner]
            deal = create_deal(db.session, Deal(name=f"商机 {name}", company_id=company.id, owner_id=user.id,
                                                team_id=team.id if owner == "rep" else None,
                                                amount=Decimal(amount), currency=currency, expected_close=close),
                               user_id=user.id)
            for stage in path:
                move_deal(db.session, deal, stage, user_id=user.id)
            if outcome == "won":
                win_deal(db.session, deal, reason="签约", user_id=user.id)
            elif outcome == "lost":
                lose_deal(db.session, deal, reason="预算取消", user_id=user.id)
            deal.forecast_category = category
            db.session.commit()
            ids[name] = deal.id
            _timeline(deal.id, days, closed=outcome is not None)
        db.session.commit()
        return {"pipeline": pipeline.id, "team": team.id, "rep": users["rep"].id, "rep2": users["rep2"].id,
                "deals": ids}


def _timeline(deal_id: int, days: list[int], *, closed: bool) -> None:
    """Give a deal's history rows (in the order written) the entry days given: each stay ends when the next
    begins; the deal was created on the first day and closed on the last."""
    rows = db.session.scalars(select(StageHistory).where(StageHistory.deal_id == deal_id)
                              .order_by(StageHistory.id)).all()
    assert len(rows) == len(days)
    for index, row in enumerate(rows):
        row.entered_at = _at(days[index])
        row.left_at = _at(days[index + 1]) if index + 1 < len(days) else None
    values = {"created_at": _at(days[0])}
    if closed:
        values["closed_at"] = _at(days[-1])
    db.session.execute(update(Deal).where(Deal.id == deal_id).values(**values))


def _user(app, name):
    return app.appbuilder.sm.find_user(username=name)


def _pick(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


M = Decimal


def test_forecast_per_quarter_weighted_commit_best_case_and_closed_won(app, sales):
    with app.app_context():
        rows = forecast(db.session, period="quarter")
        assert [r["period"] for r in rows] == ["2024-Q1", "2024-Q2"]  # the USD deal is not added in
        q1, q2 = rows
        assert q1["period_start"] == dt.date(2024, 1, 1) and q1["currency"] == "CNY"
        assert (q1["open_deals"], q1["pipeline"], q1["weighted"]) == (3, M("170000.00"), M("102000.00"))
        assert (q1["commit"], q1["best_case"], q1["omitted"]) == (M("100000.00"), M("150000.00"), M("0.00"))
        assert (q1["won_deals"], q1["closed_won"]) == (1, M("80000.00"))
        # D is commit by its own category (25 %); E is omitted and counts nowhere else
        assert (q2["open_deals"], q2["pipeline"], q2["weighted"]) == (1, M("40000.00"), M("10000.00"))
        assert (q2["commit"], q2["best_case"], q2["omitted"]) == (M("40000.00"), M("40000.00"), M("30000.00"))
        assert (q2["won_deals"], q2["closed_won"]) == (1, M("60000.00"))

        usd = forecast(db.session, period="quarter", currency="USD")
        assert [(r["period"], r["pipeline"], r["weighted"], r["commit"]) for r in usd] == \
            [("2024-Q1", M("99999.00"), M("74999.25"), M("99999.00"))]
        assert default_currency(db.session) == "CNY"

        months = forecast(db.session, period="month", date_from=dt.date(2024, 2, 1), date_to=dt.date(2024, 3, 31))
        assert [(r["period"], r["pipeline"], r["closed_won"]) for r in months] == \
            [("2024-02", M("120000.00"), M("0.00")), ("2024-03", M("50000.00"), M("80000.00"))]


def test_forecast_per_owner_and_team(app, sales):
    with app.app_context():
        rows = forecast(db.session, period="quarter", group_by="owner")
        figures = [(r["period"], r["owner"], r["pipeline"], r["weighted"], r["commit"], r["best_case"],
                    r["closed_won"]) for r in rows]
        assert figures == [
            ("2024-Q1", "rep", M("150000.00"), M("100000.00"), M("100000.00"), M("150000.00"), M("80000.00")),
            ("2024-Q1", "rep2", M("20000.00"), M("2000.00"), M("0.00"), M("0.00"), M("0.00")),
            ("2024-Q2", "rep", M("0.00"), M("0.00"), M("0.00"), M("0.00"), M("0.00")),
            ("2024-Q2", "rep2", M("40000.00"), M("10000.00"), M("40000.00"), M("40000.00"), M("60000.00")),
        ]
        assert _pick(rows, period="2024-Q2", owner="rep")["omitted"] == M("30000.00")
        assert rows[0]["owner_id"] == sales["rep"] and rows[0]["owner_name"] == "Rep Test"

        teams = forecast(db.session, period="quarter", group_by="team")
        east = _pick(teams, period="2024-Q1", team_id=sales["team"])
        assert (east["team"], east["team_en"], east["pipeline"], east["closed_won"]) == \
            ("华东销售组", "East China sales", M("150000.00"), M("80000.00"))
        assert _pick(teams, period="2024-Q1", team_id=None)["pipeline"] == M("20000.00")


def test_a_sales_rep_sees_the_figures_of_their_own_and_their_teams_deals_only(app, sales):
    with app.test_request_context():
        rep = _user(app, "rep")
        rows = forecast(db.session, period="quarter", group_by="owner", user=rep)
        assert {r["owner"] for r in rows} == {"rep"}
        assert _pick(rows, period="2024-Q1")["pipeline"] == M("150000.00")
        conversion = stage_conversion(db.session, sales["pipeline"], user=rep)
        assert conversion[0]["entered"] == 6  # A B E F G I
        metrics = cycle_metrics(db.session, user=rep)["summary"]
        assert [(m["won"], m["lost"], m["open_deals"]) for m in metrics] == [(1, 1, 3)]
    with app.test_request_context():
        rows = forecast(db.session, period="quarter", user=_user(app, "rep2"))
        assert [(r["period"], r["pipeline"], r["closed_won"]) for r in rows] == \
            [("2024-Q1", M("20000.00"), M("0.00")), ("2024-Q2", M("40000.00"), M("60000.00"))]


def test_stage_conversion_from_the_stage_history(app, sales):
    with app.app_context():
        rows = stage_conversion(db.session, sales["pipeline"])
        assert [(r["stage"], r["entered"], r["advanced"], r["lost"], r["rate"]) for r in rows] == [
            ("寻找客户", 9, 8, 0, 0.8889),   # all but C moved on
            ("资质认定", 7, 5, 1, 0.7143),   # H skipped it; D is still there; I was lost in it
            ("提案", 6, 4, 0, 0.6667),       # A F G negotiate, H was won straight from here
            ("谈判", 3, 1, 0, 0.3333),
            ("成交", 2, None, 0, None),
        ]
        assert rows[0]["next_stage"] == "资质认定" and rows[-1]["won_stage"] is True
        later = stage_conversion(db.session, sales["pipeline"], date_from=dt.date(2024, 2, 1))
        assert [(r["entered"], r["advanced"]) for r in later] == [(1, 1), (0, 0), (2, 1), (1, 1), (2, None)]


def test_time_in_stage_win_rate_sales_cycle_and_velocity(app, sales):
    with app.app_context():
        metrics = cycle_metrics(db.session, pipeline_id=sales["pipeline"])
        assert [(s["stage"], s["stays"], s["avg_days"]) for s in metrics["time_in_stage"]] == [
            ("寻找客户", 8, 12.0), ("资质认定", 6, 18.33), ("提案", 4, 17.5), ("谈判", 1, 30.0), ("成交", 0, None)]
        (overall,) = metrics["summary"]
        assert metrics["currency"] == "CNY"
        assert (overall["open_deals"], overall["won"], overall["lost"]) == (5, 2, 1)
        assert overall["win_rate"] == 0.6667
        assert overall["avg_won_amount"] == M("70000.00")
        assert overall["sales_cycle_days"] == 65.0
        # 5 open × 2/3 won × 70,000 ÷ 65 days
        assert overall["velocity"] == (M(5) * M(2) / M(3) * M(70000) / M(65)).quantize(M("0.01"))
        assert overall["velocity"] == M("3589.74")

        q1 = cycle_metrics(db.session, date_from=dt.date(2024, 1, 1), date_to=dt.date(2024, 3, 31))["summary"][0]
        assert (q1["won"], q1["lost"], q1["win_rate"], q1["sales_cycle_days"]) == (1, 1, 0.5, 90.0)

        by_owner = cycle_metrics(db.session, group_by="owner")["summary"]
        assert [(m["owner"], m["win_rate"], m["sales_cycle_days"], m["open_deals"]) for m in by_owner] == \
            [("rep", 0.5, 90.0, 3), ("rep2", 1.0, 40.0, 2)]


def test_bad_parameters_are_refused_naming_them(app, sales):
    with app.app_context():
        for call, parameter in ((lambda: forecast(db.session, period="year"), "period"),
                                (lambda: forecast(db.session, group_by="stage"), "group_by"),
                                (lambda: forecast(db.session, date_from=dt.date(2024, 2, 1),
                                                  date_to=dt.date(2024, 1, 1)), "date_to"),
                                (lambda: stage_conversion(db.session, 999), "pipeline_id")):
            with pytest.raises(ForecastParameterError) as caught:
                call()
            assert caught.value.parameter == parameter


def _api(client, token, path, **query):
    return client.get(path, query_string=query, headers={"Authorization": f"Bearer {token}",
                                                         "Accept-Language": query.pop("lang", "en")})


def test_the_rest_api_gives_the_same_figures_and_400_for_a_bad_parameter(app, sales, client):
    token = api_token(client, "admin")
    response = _api(client, token, "/api/v1/crm/forecast/", period="quarter", group_by="owner")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["currency"] == "CNY" and body["totals"]["pipeline"] == "210000.00"
    first = body["result"][0]
    assert (first["period"], first["owner"], first["weighted"], first["best_case"], first["closed_won"]) == \
        ("2024-Q1", "rep", "100000.00", "150000.00", "80000.00")

    conversion = _api(client, token, "/api/v1/crm/forecast/conversion", pipeline_id=sales["pipeline"]).get_json()
    assert [r["rate"] for r in conversion["result"]] == [0.8889, 0.7143, 0.6667, 0.3333, None]
    assert _api(client, token, "/api/v1/crm/forecast/conversion").get_json()["pipeline_id"] == sales["pipeline"]
    metrics = _api(client, token, "/api/v1/crm/forecast/metrics").get_json()
    assert metrics["summary"][0]["velocity"] == "3589.74" and metrics["summary"][0]["win_rate"] == 0.6667

    bad = _api(client, token, "/api/v1/crm/forecast/", period="year")
    assert bad.status_code == 400 and bad.get_json()["message"].startswith("period:")
    bad = _api(client, token, "/api/v1/crm/forecast/", period="year", lang="zh")
    assert bad.status_code == 400 and "period" in bad.get_json()["message"] and "按季度" in bad.get_json()["message"]
    for query, parameter in (({"date_from": "2024-13-01"}, "date_from"), ({"currency": "yuan"}, "currency"),
                             ({"format": "pdf"}, "format"), ({"group_by": "stage"}, "group_by")):
        bad = _api(client, token, "/api/v1/crm/forecast/", **query)
        assert bad.status_code == 400 and bad.get_json()["message"].startswith(f"{parameter}:"), query
    bad = _api(client, token, "/api/v1/crm/forecast/conversion", pipeline_id="999")
    assert bad.status_code == 400 and bad.get_json()["message"].startswith("pipeline_id:")
    assert client.get("/api/v1/crm/forecast/").status_code == 401


def test_the_api_applies_the_record_rules(app, sales, client):
    token = api_token(client, "rep2")
    body = _api(client, token, "/api/v1/crm/forecast/", group_by="owner").get_json()
    assert {r["owner"] for r in body["result"]} == {"rep2"}
    assert body["totals"]["pipeline"] == "60000.00"


def test_csv_and_xlsx_download_of_the_forecast_table(app, sales, client):
    token = api_token(client, "admin")
    response = _api(client, token, "/api/v1/crm/forecast/", period="quarter", group_by="owner", format="csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    text = response.get_data().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Period", "Currency", "Owner", "Open deals", "Pipeline amount", "Weighted pipeline", "Commit",
                       "Best case", "Omitted", "Won deals", "Closed won"]
    assert rows[1] == ["2024-Q1", "CNY", "Rep Test", "2", "150000.00", "100000.00", "100000.00", "150000.00",
                       "0.00", "1", "80000.00"]
    assert len(rows) == 5

    response = _api(client, token, "/api/v1/crm/forecast/", period="quarter", format="xlsx", lang="zh")
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.get_data())).active
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[0][:5] == ["期间", "币种", "进行中的商机", "管道金额", "加权管道金额"]
    assert values[1][:5] == ["2024-Q1", "CNY", 3, 170000, 102000]
    assert values[2][2:9] == [1, 40000, 10000, 40000, 40000, 30000, 1]


def test_the_screen_shows_tables_and_svg_charts_in_zh_and_en(app, sales, client):
    login(client, "admin")
    client.get("/lang/zh")  # the language menu
    page = client.get("/crm/forecast/?period=quarter&group_by=owner")
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:500]
    assert "销售预测" in html and "<svg" in html and 'id="bl-forecast-chart"' in html
    assert "加权管道金额" in html and "2024-Q1" in html and "150,000.00" in html and "88.9%" in html
    assert "http://" not in html.split('id="bl-forecast-chart"')[1].split("</svg>")[0].replace(
        "http://www.w3.org/2000/svg", "")
    client.get("/lang/en")
    en = client.get("/crm/forecast/?period=month").get_data(as_text=True)
    assert "Forecast" in en and "Weighted pipeline" in en and "<svg" in en and "2024-02" in en
    bad = client.get("/crm/forecast/?period=year")
    assert bad.status_code == 400 and "period:" in bad.get_data(as_text=True)
    download = client.get("/crm/forecast/export/csv?period=quarter")
    assert download.status_code == 200 and download.get_data().decode("utf-8-sig").startswith("Period,Currency")


def test_a_sales_rep_may_open_the_screen_and_sees_only_their_figures(app, sales, client):
    login(client, "rep2")
    html = client.get("/crm/forecast/?group_by=owner", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "<svg" in html and "Rep2 Test" in html and "Rep Test<" not in html
