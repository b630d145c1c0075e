"""The deal summary: kept in step with every deal change made through the pipeline commands, the ORM and bulk
statements (equal to a rebuild from scratch after a random run of them), read by the board's column totals and
the forecast with the same answers as the queries over the deals, and atomic under concurrent writers."""
from __future__ import annotations

import datetime as dt
import random
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from bigledger_core.db import db
from bigledger_core.models import Team
from plugins.crm.models import Company
from plugins.crm.pipeline import board as board_module
from plugins.crm.pipeline import config
from plugins.crm.pipeline import forecast as forecast_module
from plugins.crm.pipeline.board import columns
from plugins.crm.pipeline.forecast import forecast, whole_months
from plugins.crm.pipeline.models import (
    NO_MONTH,
    Deal,
    DealLine,
    DealSummary,
    Pipeline,
    Stage,
)
from plugins.crm.pipeline.services import (
    StageChangeRefused,
    create_deal,
    load_pipeline,
    lose_deal,
    move_deal,
    reopen_deal,
    win_deal,
)
from plugins.crm.pipeline.summary import KEY, rebuild
from tests.conftest import add_user

SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")
WITHOUT_PROPOSAL = SEED.replace("    - 名称: 提案\n      概率: 50%\n      活动: [\"发送提案\", \"跟进\"]\n", "")
CURRENCIES = ("CNY", "CNY", "CNY", "USD", "MYR")
CATEGORIES = (None, None, None, "commit", "best_case", "pipeline", "omitted")


@pytest.fixture
def people(app):
    """The seed pipeline; rep and mate in team East, other in team West, an admin; a company each."""
    ids = {name: add_user(app, name, role) for name, role in
           (("admin", "Admin"), ("rep", "Sales Rep"), ("mate", "Sales Rep"), ("other", "Sales Rep"))}
    with app.app_context():
        users = {name: db.session.get(app.appbuilder.sm.user_model, pk) for name, pk in ids.items()}
        east = Team(name="East", members=[users["rep"], users["mate"]])
        west = Team(name="West", members=[users["other"]])
        db.session.add_all([east, west])
        pipeline = load_pipeline(db.session, config.parse(SEED))
        companies = [Company(name=f"{name} 公司", owner_id=ids[name]) for name in ("rep", "mate", "other")]
        db.session.add_all(companies)
        db.session.commit()
        return {"pipeline": pipeline.id, "users": ids, "teams": {"East": east.id, "West": west.id},
                "companies": [c.id for c in companies]}


def _summary() -> list[tuple]:
    """The whole summary table, comparable across runs (numbers at their stored scale)."""
    rows = db.session.execute(select(DealSummary).order_by(*(getattr(DealSummary, k) for k in KEY))).scalars()
    return [(*(getattr(r, k) for k in KEY), r.count, Decimal(r.amount).quantize(Decimal("0.01")),
             Decimal(r.weighted).quantize(Decimal("0.000001"))) for r in rows]


def _assert_summary_is_rebuilt() -> None:
    db.session.commit()
    kept = _summary()
    assert all(row[len(KEY)] > 0 for row in kept), "a summary row with no deal was left behind"
    rebuild(db.session)
    db.session.commit()
    assert kept == _summary()


def _open_stages(pipeline_id: int) -> list[Stage]:
    return db.session.get(Pipeline, pipeline_id).stages[:-1]


def _deals(status=None) -> list[Deal]:
    query = select(Deal).order_by(Deal.id)
    return list(db.session.scalars(query if status is None else query.where(Deal.status == status)))


def _line(rng: random.Random) -> DealLine:
    # whole prices and a 0 or 10 % discount: amount × probability stays on whole cents, so float sums on
    # SQLite and exact sums on PostgreSQL round alike
    if rng.random() < 0.3:
        return DealLine(product="云订阅", quantity=Decimal(rng.randint(1, 5)), unit_price=Decimal(rng.randint(1, 50) * 10),
                        billing_period="month", term_months=rng.choice((12, 24)))
    return DealLine(product="实施服务", quantity=Decimal(rng.randint(1, 10)), unit_price=Decimal(rng.randint(1, 90) * 100),
                    discount=Decimal(rng.choice(("0", "0.1"))))


def _random_operation(rng: random.Random, people: dict, step: int) -> None:
    users, teams = people["users"], people["teams"]
    owner = rng.choice((None, users["rep"], users["mate"], users["other"]))
    team = rng.choice((None, teams["East"], teams["West"]))
    close = rng.choice((None, dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(720))))
    open_deals, closed = _deals("open"), _deals("won") + _deals("lost")
    choice = rng.random()
    if choice < 0.25 or not open_deals:
        stage = rng.choice(_open_stages(people["pipeline"]))
        deal = Deal(name=f"商机 {step}", company_id=rng.choice(people["companies"]), stage_id=stage.id, owner_id=owner,
                    team_id=team, currency=rng.choice(CURRENCIES), expected_close=close,
                    amount=Decimal(rng.randint(0, 500) * 100), forecast_category=rng.choice(CATEGORIES))
        if rng.random() < 0.5:
            deal.lines = [_line(rng) for _ in range(rng.randint(1, 3))]
        create_deal(db.session, deal, user_id=owner)
    elif choice < 0.40:
        deal = rng.choice(open_deals)
        try:
            move_deal(db.session, deal, rng.choice(_open_stages(people["pipeline"])), user_id=owner)
        except StageChangeRefused:
            db.session.rollback()
    elif choice < 0.47:
        win_deal(db.session, rng.choice(open_deals), reason="签约", user_id=owner)
    elif choice < 0.54:
        lose_deal(db.session, rng.choice(open_deals), reason="预算取消", user_id=owner)
    elif choice < 0.60 and closed:
        reopen_deal(db.session, rng.choice(closed), user_id=owner)
    elif choice < 0.80:  # edits through the ORM, on a deal whose attributes were expired by the last commit
        deal = rng.choice(_deals())
        db.session.expire(deal)
        field = rng.choice(("amount", "owner", "team", "close", "category", "probability", "currency", "closed_at"))
        if field == "amount":
            deal.amount = Decimal(rng.randint(1, 900) * 100)
        elif field == "owner":
            deal.owner_id = owner
        elif field == "team":
            deal.team_id = team
        elif field == "close":
            deal.expected_close = close
        elif field == "category":
            deal.forecast_category = rng.choice(CATEGORIES)
        elif field == "probability":
            deal.probability = Decimal(rng.choice(("0.1", "0.5", "0.6", "0.75", "0.9")))
        elif field == "currency":
            deal.currency = rng.choice(CURRENCIES)
        elif deal.status != "open":
            deal.closed_at = dt.datetime(2026, rng.randint(1, 12), rng.randint(1, 28), 23, 30, tzinfo=dt.UTC)
    elif choice < 0.88:  # line items change the amount (the line listener recomputes it before the flush)
        deal = rng.choice(_deals())
        if deal.lines and rng.random() < 0.4:
            deal.lines.remove(rng.choice(deal.lines))
        elif deal.lines and rng.random() < 0.5:
            rng.choice(deal.lines).quantity += 1
        else:
            deal.lines.append(_line(rng))
    elif choice < 0.93:
        db.session.delete(rng.choice(_deals()))
    else:  # a bulk statement through the session
        ids = [d.id for d in rng.sample(_deals(), min(3, len(_deals())))]
        db.session.execute(update(Deal).where(Deal.id.in_(ids)).values(expected_close=close, owner_id=owner))
    db.session.commit()


def _reload(people: dict, text: str, **kwargs) -> None:
    load_pipeline(db.session, config.parse(text), **kwargs)
    db.session.commit()


def test_the_summary_equals_a_rebuild_after_random_changes_and_pipeline_reloads(app, people):
    rng = random.Random(20240611)
    with app.app_context():
        assert _summary() == []
        for step in range(60):
            _random_operation(rng, people, step)
        _assert_summary_is_rebuilt()
        # a reload that drops a stage moves its deals; the dropped stage's rows go with them
        _reload(people, WITHOUT_PROPOSAL, move_to={"提案": "谈判"})
        _assert_summary_is_rebuilt()
        assert db.session.scalar(select(DealSummary.count).join(Stage, Stage.id == DealSummary.stage_id,
                                                                isouter=True).where(Stage.id.is_(None))) is None
        _reload(people, SEED)
        for step in range(60, 110):
            _random_operation(rng, people, step)
        _assert_summary_is_rebuilt()
        # a bulk delete through the session
        db.session.execute(delete(Deal).where(Deal.owner_id == people["users"]["other"]))
        _assert_summary_is_rebuilt()
        assert db.session.scalar(select(DealSummary.count).where(DealSummary.owner_id == people["users"]["other"])) \
            is None


def test_every_step_of_a_deal_moves_its_figures_in_the_summary(app, people):
    with app.app_context():
        rep, east = people["users"]["rep"], people["teams"]["East"]
        deal = Deal(name="ERP 升级", company_id=people["companies"][0], owner_id=rep, team_id=east,
                    expected_close=dt.date(2026, 5, 20), lines=[DealLine(product="实施服务", quantity=Decimal(2),
                                                                      unit_price=Decimal(1000))])
        create_deal(db.session, deal, user_id=rep)
        db.session.commit()
        stages = _open_stages(people["pipeline"])

        def rows():
            return [(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]) for r in _summary()]

        assert rows() == [(stages[0].id, "open", "CNY", rep, east, dt.date(2026, 5, 1), "pipeline", 1,
                           Decimal("2000.00"), Decimal("200.000000"))]
        move_deal(db.session, deal, stages[3].id, user_id=rep)
        deal.lines[0].quantity = Decimal(3)  # the amount follows the lines in the same flush
        db.session.commit()
        assert rows() == [(stages[3].id, "open", "CNY", rep, east, dt.date(2026, 5, 1), "commit", 1,
                           Decimal("3000.00"), Decimal("2250.000000"))]
        deal.owner_id, deal.team_id, deal.expected_close = None, None, None
        db.session.commit()
        assert rows() == [(stages[3].id, "open", "CNY", 0, 0, NO_MONTH, "commit", 1, Decimal("3000.00"),
                           Decimal("2250.000000"))]
        win_deal(db.session, deal, reason="签约")
        db.session.commit()
        closed = deal.closed_at.astimezone(dt.UTC) if deal.closed_at.tzinfo else deal.closed_at
        won_stage = db.session.get(Pipeline, people["pipeline"]).stages[-1].id
        assert rows() == [(won_stage, "won", "CNY", 0, 0, dt.date(closed.year, closed.month, 1), "commit", 1,
                           Decimal("3000.00"), Decimal("3000.000000"))]
        reopen_deal(db.session, deal)
        db.session.commit()
        assert [r[:3] for r in rows()] == [(stages[3].id, "open", "CNY")]
        db.session.delete(deal)
        db.session.commit()
        assert rows() == []


@pytest.fixture
def history(app, people):
    """Eighty deals of every kind (a seeded random run), the summary checked against a rebuild."""
    rng = random.Random(7)
    with app.app_context():
        for step in range(80):
            _random_operation(rng, people, step)
        _assert_summary_is_rebuilt()
    return people


class _Sql:
    """The SQL statements run inside the block."""

    def __enter__(self):
        self.statements = []
        event.listen(db.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc):
        event.remove(db.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, *_args):
        self.statements.append(statement)


def _both(monkeypatch, fn, **kwargs):
    """(answer from the summary, answer from the deals), and check which table each read."""
    with _Sql() as seen:
        from_summary = fn(**kwargs)
    assert any("crm_deal_summary" in s for s in seen.statements), kwargs
    with monkeypatch.context() as patch, _Sql() as seen:
        patch.setattr(board_module, "_summary_covers", lambda *_args: False)
        patch.setattr(forecast_module, "_summary_covers", lambda *_args: False)
        from_deals = fn(**kwargs)
    assert not any("crm_deal_summary" in s for s in seen.statements), kwargs
    return from_summary, from_deals


BOARD_FILTERS = [
    {}, {"status": "open,won"}, {"owner_id": "rep"}, {"team_id": "East"}, {"team_id": "West", "status": "open,won"},
    {"close_from": dt.date(2026, 4, 1), "close_to": dt.date(2026, 6, 30)}, {"close_from": dt.date(2026, 7, 1)},
    {"close_to": dt.date(2027, 2, 28), "owner_id": "mate"},
]


def _resolve(people, filters: dict) -> dict:
    resolved = dict(filters)
    if "owner_id" in filters:
        resolved["owner_id"] = people["users"][filters["owner_id"]]
    if "team_id" in filters:
        resolved["team_id"] = people["teams"][filters["team_id"]]
    return resolved


VIEWERS = [None, "admin", "rep", "other"]  # nobody (a job), an admin, a rep in a team of two, a rep alone


def test_board_columns_from_the_summary_equal_the_columns_from_the_deals(app, history, monkeypatch):
    with app.app_context(), app.test_request_context():
        for who in VIEWERS:
            user = app.appbuilder.sm.find_user(username=who) if who else None
            for filters in BOARD_FILTERS:
                kwargs = {"session": db.session, "pipeline_id": history["pipeline"], "user": user,
                          **_resolve(history, filters)}
                from_summary, from_deals = _both(monkeypatch, columns, **kwargs)
                assert from_summary == from_deals, (who, filters)
            assert sum(c["count"] for c in columns(db.session, history["pipeline"], user, status="open,won")) > 0


FORECAST_ARGS = [
    {}, {"period": "month"}, {"group_by": "owner"}, {"group_by": "team", "period": "month"},
    {"date_from": dt.date(2026, 1, 1), "date_to": dt.date(2026, 12, 31), "group_by": "owner"},
    {"date_to": dt.date(2026, 9, 30)}, {"date_from": dt.date(2026, 4, 1), "currency": "USD"},
    {"pipeline_id": True, "group_by": "team"},
]


def test_the_forecast_from_the_summary_equals_the_forecast_from_the_deals(app, history, monkeypatch):
    with app.app_context(), app.test_request_context():
        for who in VIEWERS:
            user = app.appbuilder.sm.find_user(username=who) if who else None
            for args in FORECAST_ARGS:
                kwargs = {"session": db.session, "user": user, **args}
                if args.get("pipeline_id"):
                    kwargs["pipeline_id"] = history["pipeline"]
                from_summary, from_deals = _both(monkeypatch, forecast, **kwargs)
                assert from_summary == from_deals, (who, args)
            assert forecast(db.session, user=user, period="month")


def test_date_ranges_that_are_not_whole_months_are_answered_from_the_deals(app, history):
    assert whole_months(None, None) and whole_months(dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    assert whole_months(dt.date(2024, 2, 1), dt.date(2024, 2, 29)) and whole_months(None, dt.date(2026, 12, 31))
    assert not whole_months(dt.date(2026, 2, 2), None) and not whole_months(None, dt.date(2024, 2, 28))
    with app.app_context():
        for kwargs in ({"close_from": dt.date(2026, 4, 15)}, {"close_to": dt.date(2026, 6, 29)},
                       {"close_from": dt.date(2026, 4, 1), "status": "open,won"}):
            with _Sql() as seen:
                columns(db.session, history["pipeline"], None, **kwargs)
            assert not any("crm_deal_summary" in s for s in seen.statements), kwargs
        with _Sql() as seen:
            forecast(db.session, date_from=dt.date(2026, 4, 15))
        assert not any("crm_deal_summary" in s for s in seen.statements)


def test_concurrent_changes_to_one_summary_row_add_up(app, people, backend):
    """Two transactions add a deal to the same summary row at once: the second waits for the first's row
    lock (PostgreSQL) or for the write lock (SQLite), then adds to what the first committed."""
    rep = people["users"]["rep"]
    with app.app_context():
        stage = _open_stages(people["pipeline"])[0]
        engine = db.engine

        def deal(name):
            return Deal(name=name, company_id=people["companies"][0], stage_id=stage.id, owner_id=rep,
                        expected_close=dt.date(2026, 3, 3), amount=Decimal(100))

        first = Session(engine)
        create_deal(first, deal("甲"), user_id=rep)  # flushed: the summary row is written and locked
        errors = []

        def second():
            try:
                with app.app_context(), Session(engine) as session:
                    create_deal(session, deal("乙"), user_id=rep)
                    session.commit()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        if backend == "sqlite":
            first.commit()
            second()
        else:
            thread = threading.Thread(target=second)
            thread.start()
            thread.join(1.0)
            assert thread.is_alive()  # waiting for the first transaction
            first.commit()
            thread.join(30)
        first.close()
        assert not errors
        db.session.expire_all()
        assert db.session.scalars(select(DealSummary.count).where(DealSummary.stage_id == stage.id)).all() == [2]
        _assert_summary_is_rebuilt()
