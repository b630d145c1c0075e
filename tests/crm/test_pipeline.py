"""The sales pipeline: the product page's YAML, deals moving through stages with their activities, wins
and losses with reasons, events, reloading a pipeline that holds deals, line items and weighted amounts."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from bigledger_core.db import db
from plugins.crm.models import Activity, Company
from plugins.crm.pipeline import config
from plugins.crm.pipeline.models import Deal, DealLine, Pipeline, Stage, StageHistory
from plugins.crm.pipeline.services import (
    PipelineError,
    StageChangeRefused,
    create_deal,
    load_pipeline,
    lose_deal,
    move_deal,
    reopen_deal,
    win_deal,
)
from tests.conftest import add_user
from tests.sample_plugin import plugin as sample

SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")


def test_the_product_pages_yaml_loads_into_five_stages_with_ten_activities():
    spec = config.parse(SEED)
    assert [s.name for s in spec.stages] == ["寻找客户", "资质认定", "提案", "谈判", "成交"]
    assert [s.probability for s in spec.stages] == [Decimal(x) for x in ("0.1", "0.25", "0.5", "0.75", "1")]
    assert sum(len(s.activities) for s in spec.stages) == 10
    assert spec.stages[1].activities == ["需求分析", "预算确认"]
    assert config.dump(spec) == SEED  # exported back exactly as written


def test_english_keys_and_every_probability_spelling():
    spec = config.parse("pipeline:\n  stages:\n    - name: Prospect\n      probability: 10\n"
                        "    - name: Proposal\n      probability: 0.5\n      activities: [Send proposal]\n"
                        "    - name: Won\n      probability: 100%\n")
    assert [s.probability for s in spec.stages] == [Decimal("0.1"), Decimal("0.5"), Decimal(1)]
    assert spec.key_language == "en"
    assert config.dump(spec).startswith("pipeline:\n  stages:\n    - name: Prospect\n      probability: 10%\n")


@pytest.mark.parametrize("text, expected", [
    ("销售管道:\n  阶段: []\n", "must list at least one stage"),
    ("销售管道:\n  阶段:\n    - 名称: 寻找客户\n      概率: 120%\n    - 名称: 成交\n      概率: 100%\n",
     "stage 1 (寻找客户): “概率” (probability) must be between 0% and 100%, not “120%”"),
    ("销售管道:\n  阶段:\n    - 名称: 提案\n      概率: 50%\n    - 名称: 提案\n      概率: 100%\n",
     "stage 2 (提案): the name “提案” is already used by stage 1"),
    ("销售管道:\n  阶段:\n    - 名称: 提案\n      概率: 50%\n      颜色: 红\n    - 名称: 成交\n      概率: 100%\n",
     "stage 1 (提案): unknown key “颜色”"),
    ("销售管道:\n  阶段:\n    - 名称: 提案\n      概率: 50%\n    - 名称: 成交\n      概率: 90%\n",
     "stage 2 (成交): the last stage is where won deals go, so its “概率” (probability) must be 100%"),
    ("销售管道:\n  阶段:\n    - 概率: 50%\n", "stage 1: “名称” (name) is missing"),
    ("销售管道: [\n", "not valid YAML (line 2, column 1)"),
])
def test_bad_files_are_refused_naming_the_stage_and_key(text, expected):
    with pytest.raises(config.PipelineConfigError) as caught:
        config.parse(text)
    assert expected in str(caught.value)


@pytest.fixture
def seeded(app):
    sample.CRM_EVENTS.clear()
    add_user(app, "rep", "Sales Rep")
    with app.app_context():
        rep = app.appbuilder.sm.find_user(username="rep")
        pipeline = load_pipeline(db.session, config.parse(SEED))
        company = Company(name="华信科技有限公司", owner_id=rep.id)
        db.session.add(company)
        db.session.commit()
        return {"pipeline": pipeline.id, "company": company.id, "rep": rep.id}


def _deal(seeded, **values) -> Deal:
    deal = create_deal(db.session, Deal(name="ERP 升级", company_id=seeded["company"], owner_id=seeded["rep"],
                                        **values), user_id=seeded["rep"])
    db.session.commit()
    return deal


def _tasks(deal) -> list[tuple[str, str, bool]]:
    rows = db.session.execute(select(Activity.subject, Activity.kind, Activity.done)
                              .where(Activity.deal_id == deal.id).order_by(Activity.id)).all()
    return [tuple(r) for r in rows]


def test_a_deal_starts_in_the_first_stage_with_its_tasks_and_entering_a_stage_creates_its_activities(app, seeded):
    with app.app_context():
        deal = _deal(seeded)
        assert deal.stage.name == "寻找客户" and deal.probability == Decimal("0.1")
        assert _tasks(deal) == [("初次联系", "task", False), ("资质认定电话", "task", False)]
        move_deal(db.session, deal, "资质认定", user_id=seeded["rep"])
        db.session.commit()
        assert deal.probability == Decimal("0.25")
        assert [t[0] for t in _tasks(deal)][2:] == ["需求分析", "预算确认"]
        task = db.session.scalar(select(Activity).where(Activity.subject == "需求分析"))
        assert task.user_id == seeded["rep"] and task.due_at is not None and task.company_id == seeded["company"]
        history = db.session.scalars(select(StageHistory).where(StageHistory.deal_id == deal.id)
                                     .order_by(StageHistory.id)).all()
        assert [(h.stage_name, h.left_at is not None) for h in history] == [("寻找客户", True), ("资质认定", False)]
        received = [(e.name, e.payload["stage"]) for e in sample.CRM_EVENTS]
        assert received == [("crm_deal_created", "寻找客户"), ("crm_deal_stage_changed", "资质认定")]
        assert sample.CRM_EVENTS[1].payload["from_stage"] == "寻找客户"


def test_a_plugin_can_veto_a_stage_change_with_its_reasons(app, seeded):
    with app.app_context():
        deal = _deal(seeded)
        sample.STAGE_VETO[:] = ["信用额度不足 / credit hold"]
        try:
            with pytest.raises(StageChangeRefused, match="credit hold"):
                move_deal(db.session, deal, "提案")
            with pytest.raises(StageChangeRefused, match="credit hold"):
                win_deal(db.session, deal, reason="签约")
        finally:
            sample.STAGE_VETO.clear()
        assert ("ERP 升级", "提案") in sample.STAGE_CHECKS
        db.session.rollback()
        assert db.session.get(Deal, deal.id).stage.name == "寻找客户"


def test_required_activities_block_moving_past_the_stage_until_done(app, seeded):
    with app.app_context():
        stage = db.session.scalar(select(Stage).where(Stage.name == "寻找客户"))
        stage.activities_required = True
        db.session.commit()
        deal = _deal(seeded)
        with pytest.raises(StageChangeRefused) as caught:
            move_deal(db.session, deal, "提案")
        assert "“寻找客户”需要先完成这些活动：初次联系、资质认定电话" in str(caught.value)
        db.session.rollback()
        for task in db.session.scalars(select(Activity).where(Activity.deal_id == deal.id)):
            task.done = True
        db.session.commit()
        move_deal(db.session, deal, "提案")
        move_deal(db.session, deal, "寻找客户")  # moving back is always allowed
        db.session.commit()
        assert deal.stage.name == "寻找客户"
        assert len(_tasks(deal)) == 4  # re-entering a stage does not repeat its tasks


def test_winning_and_losing_need_a_reason_and_emit_events(app, seeded):
    with app.app_context():
        deal = _deal(seeded)
        with pytest.raises(StageChangeRefused, match="请说明赢单的原因"):
            move_deal(db.session, deal, "成交")
        win_deal(db.session, deal, reason="价格和服务最优")
        db.session.commit()
        assert (deal.status, deal.stage.name, deal.probability) == ("won", "成交", Decimal(1))
        with pytest.raises(StageChangeRefused, match="请先重新打开"):
            move_deal(db.session, deal, "提案")
        other = _deal(seeded)
        with pytest.raises(StageChangeRefused, match="请说明丢单的原因"):
            lose_deal(db.session, other, reason=" ")
        lose_deal(db.session, other, reason="预算取消")
        db.session.commit()
        assert (other.status, other.stage.name, other.probability) == ("lost", "寻找客户", Decimal(0))
        reopen_deal(db.session, other)
        db.session.commit()
        assert other.status == "open" and other.closed_at is None
        events = {e.name: e.payload for e in sample.CRM_EVENTS}
        assert events["crm_deal_won"]["reason"] == "价格和服务最优"
        assert events["crm_deal_lost"]["reason"] == "预算取消"


def test_line_items_give_amount_mrr_and_weighted_amount(app, seeded):
    with app.app_context():
        deal = _deal(seeded, amount=Decimal(5000))
        assert deal.amount == Decimal("5000.00")  # entered while there are no lines
        deal.lines = [DealLine(product="实施服务", quantity=Decimal(10), unit_price=Decimal(1200),
                               discount=Decimal("0.1")),
                      DealLine(product="云订阅", quantity=Decimal(20), unit_price=Decimal(99),
                               billing_period="month", term_months=12)]
        db.session.commit()
        assert deal.amount == Decimal("10800.00") + Decimal("1980.00") * 12
        assert deal.mrr == Decimal("1980.00") and deal.arr == Decimal("23760.00")
        assert deal.weighted_amount == (deal.amount * Decimal("0.1")).quantize(Decimal("0.01"))


def test_reloading_keeps_deals_by_stage_name_and_refuses_to_drop_a_stage_with_deals(app, seeded):
    with app.app_context():
        deal = _deal(seeded)
        move_deal(db.session, deal, "提案")
        db.session.commit()
        without = SEED.replace("    - 名称: 提案\n      概率: 50%\n      活动: [\"发送提案\", \"跟进\"]\n", "")
        with pytest.raises(PipelineError, match="阶段“提案”中还有 1 个商机"):
            load_pipeline(db.session, config.parse(without))
        db.session.rollback()
        reordered = SEED.replace("概率: 25%", "概率: 30%")
        load_pipeline(db.session, config.parse(reordered))
        db.session.commit()
        assert deal.stage.name == "提案"
        assert db.session.scalar(select(Stage.probability).where(Stage.name == "资质认定")) == Decimal("0.3")
        load_pipeline(db.session, config.parse(without), move_to={"提案": "谈判"})
        db.session.commit()
        db.session.refresh(deal)
        assert deal.stage.name == "谈判"
        assert [s.name for s in db.session.get(Pipeline, seeded["pipeline"]).stages] == \
            ["寻找客户", "资质认定", "谈判", "成交"]
        names = db.session.scalars(select(StageHistory.stage_name).where(StageHistory.deal_id == deal.id)
                                   .order_by(StageHistory.id)).all()
        assert names == ["寻找客户", "提案", "谈判"]  # the dropped stage stays in the history



def test_the_demo_loads_both_pipelines_and_deals_in_every_state_once(app):
    from bigledger_core.demo import load_demo

    with app.app_context():
        load_demo()
        load_demo()
        statuses = sorted(db.session.scalars(select(Deal.status)).all())
        assert statuses == ["lost", "open", "open", "open", "open", "won"]
        assert db.session.scalar(select(Pipeline).where(Pipeline.is_default.is_(True))).name == "销售管道"
        assert db.session.scalar(select(Pipeline.name).where(Pipeline.name.like("续约%"))) == "续约 Renewals"
        won = db.session.scalar(select(Deal).where(Deal.status == "won"))
        assert won.stage.name == "成交" and won.amount == Decimal("36000.00")
