"""The pipeline board in a real browser, in Chinese and in English: drag a card to the next column and it
is saved; a refused move snaps back with the reason shown; dropping on the won column asks why."""
from pathlib import Path

import pytest
from playwright.sync_api import expect

from bigledger_core.db import db
from plugins.crm.models import Company
from plugins.crm.pipeline import config
from plugins.crm.pipeline.models import Deal
from plugins.crm.pipeline.services import create_deal, load_pipeline
from tests.browser.conftest import log_in
from tests.conftest import add_user

SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")
TEXT = {
    "en": {"title": "Pipeline board", "refused": "The move was refused:",
           "cancelled": "Not moved: a won deal needs a reason."},
    "zh": {"title": "销售看板", "refused": "移动被拒绝：", "cancelled": "未移动：赢单需要填写原因。"},
}


@pytest.fixture
def board(app):
    """The seed pipeline whose first stage requires its activities; one deal there, one in the second stage."""
    rep = add_user(app, "rep", "Sales Rep")
    with app.app_context():
        pipeline = load_pipeline(db.session, config.parse(SEED))
        pipeline.stages[0].activities_required = True
        company = Company(name="华信科技有限公司", owner_id=rep)
        db.session.add(company)
        db.session.flush()
        stuck = create_deal(db.session, Deal(name="新开拓", company_id=company.id, owner_id=rep,
                                             stage_id=pipeline.stages[0].id), user_id=rep)
        ready = create_deal(db.session, Deal(name="ERP 升级", company_id=company.id, owner_id=rep, amount=120000,
                                             stage_id=pipeline.stages[1].id), user_id=rep)
        db.session.commit()
        return {"pipeline": pipeline.id, "stages": [s.id for s in pipeline.stages], "stuck": stuck.id,
                "ready": ready.id}


def _card(page, stage, deal):
    return page.locator(f"section.bl-column[data-stage='{stage}'] li.bl-card[data-id='{deal}']")


@pytest.mark.parametrize("language", ["zh", "en"])
def test_drag_a_card_and_see_it_saved_and_a_refused_move_explained(app, live_server, page, board, language):
    text, stages = TEXT[language], board["stages"]
    log_in(page, live_server, "rep")
    page.goto(f"{live_server}/lang/{language}")
    page.goto(f"{live_server}/crm/board/")
    assert text["title"] in page.locator("#bl-board-title").inner_text()
    _card(page, stages[1], board["ready"]).wait_for()

    # a move that is allowed: saved, totals follow, and it is still there after a reload
    page.drag_and_drop(f"li.bl-card[data-id='{board['ready']}']", f"section.bl-column[data-stage='{stages[2]}']")
    page.locator("#bl-board-message.alert-success").wait_for()
    assert "提案" in page.locator("#bl-board-message").inner_text()
    expect(page.locator(f"section.bl-column[data-stage='{stages[2]}'] .bl-count")).to_have_text("1")
    with app.app_context():
        assert db.session.get(Deal, board["ready"]).stage_id == stages[2]
    page.reload()
    _card(page, stages[2], board["ready"]).wait_for()

    # the first stage's activities are not done: the move is refused, the card snaps back, the reason shows
    _card(page, stages[0], board["stuck"]).wait_for()
    page.drag_and_drop(f"li.bl-card[data-id='{board['stuck']}']", f"section.bl-column[data-stage='{stages[1]}']")
    message = page.locator("#bl-board-message.alert-danger")
    message.wait_for()
    assert text["refused"] in message.inner_text() and "初次联系、资质认定电话" in message.inner_text()
    assert _card(page, stages[0], board["stuck"]).count() == 1
    assert _card(page, stages[1], board["stuck"]).count() == 0
    with app.app_context():
        assert db.session.get(Deal, board["stuck"]).stage_id == stages[0]

    # dropping on the won column asks why: cancelled, the card goes back; answered, the deal is won
    page.drag_and_drop(f"li.bl-card[data-id='{board['ready']}']", f"section.bl-column[data-stage='{stages[4]}']")
    page.locator("#bl-win-modal textarea").wait_for(state="visible")
    page.click("#bl-win-modal button[name=cancel]")
    page.locator("#bl-board-message.alert-warning").wait_for()
    assert page.locator("#bl-board-message").inner_text() == text["cancelled"]
    _card(page, stages[2], board["ready"]).wait_for()

    page.drag_and_drop(f"li.bl-card[data-id='{board['ready']}']", f"section.bl-column[data-stage='{stages[4]}']")
    page.locator("#bl-win-modal textarea").wait_for(state="visible")
    page.fill("#bl-win-modal textarea", "价格和服务都合适")
    page.click("#bl-win-modal button[name=win]")
    page.locator("#bl-board-message.alert-success").wait_for()
    page.locator(f"li.bl-card[data-id='{board['ready']}']").wait_for(state="detached")  # won deals are hidden
    with app.app_context():
        deal = db.session.get(Deal, board["ready"])
        assert (deal.status, deal.close_reason) == ("won", "价格和服务都合适")
    page.goto(f"{live_server}/crm/board/{board['pipeline']}?won=1")
    _card(page, stages[4], board["ready"]).wait_for()


def test_quick_create_and_load_more(app, live_server, page, board):
    with app.app_context():
        rep = app.appbuilder.sm.find_user(username="rep")
        company = db.session.query(Company).one()
        for n in range(60):
            create_deal(db.session, Deal(name=f"批量 {n:02d}", company_id=company.id, owner_id=rep.id,
                                         stage_id=board["stages"][3]), user_id=rep.id)
        db.session.commit()
    log_in(page, live_server, "rep")
    page.goto(f"{live_server}/lang/en")
    page.goto(f"{live_server}/crm/board/{board['pipeline']}")
    column = page.locator(f"section.bl-column[data-stage='{board['stages'][3]}']")
    column.locator("li.bl-card").nth(49).wait_for()
    expect(column.locator(".bl-count")).to_have_text("60")
    column.locator("li.bl-card").nth(49).scroll_into_view_if_needed()  # the next page loads as it scrolls in
    column.locator("li.bl-card").nth(59).wait_for()
    assert column.locator("li.bl-card").count() == 60

    form = page.locator("#bl-quick-create")
    form.locator("input[name=name]").fill("年度维保")
    form.locator("input[name=customer_q]").fill("华信")
    page.wait_for_function("document.querySelector('#bl-quick-create select[name=customer]').value !== ''")
    form.locator("input[name=amount]").fill("8800")
    form.locator("button[type=submit]").click()
    page.locator("#bl-board-message.alert-success").wait_for()
    first = page.locator(f"section.bl-column[data-stage='{board['stages'][0]}']")
    assert "年度维保" in first.locator("li.bl-card").first.inner_text()
    expect(first.locator(".bl-count")).to_have_text("2")
    with app.app_context():
        deal = db.session.query(Deal).filter_by(name="年度维保").one()
        assert deal.stage_id == board["stages"][0] and deal.amount == 8800

    # a customer on credit hold: the deal is created all the same, and the board says what to watch
    from plugins.finance_bridge.services import set_credit_hold

    with app.app_context():
        company_id = db.session.query(Company.id).scalar()
        set_credit_hold(db.session, company_id, True, "逾期 90 天 / 90 days overdue")
        db.session.commit()
    form.locator("input[name=name]").fill("备件采购")
    form.locator("input[name=customer_q]").fill("华信")
    page.wait_for_function("document.querySelector('#bl-quick-create select[name=customer]').value !== ''")
    form.locator("button[type=submit]").click()
    warning = page.locator("#bl-board-message.alert-warning")
    warning.wait_for()
    expect(warning).to_contain_text("备件采购")
    expect(warning.locator("ul.bl-reasons li")).to_contain_text("90 days overdue")
    assert "备件采购" in first.locator("li.bl-card").first.inner_text()
