"""An admin steers scheduled jobs and retries a dead event delivery in the browser."""
import threading
import time

import pytest

from bigledger_core.db import db
from bigledger_core.events import emit
from bigledger_core.scheduler import SchedulerService
from tests.browser.conftest import log_in
from tests.conftest import add_user
from tests.sample_plugin import plugin as sample


@pytest.fixture
def scheduler(app):
    app.config["BIGLEDGER_SCHEDULER_POLL_SECONDS"] = 0.2
    service = SchedulerService(app, node="browser-test-node")
    thread = threading.Thread(target=service.run_forever, daemon=True)
    thread.start()
    assert service.active.wait(10)
    yield service
    service.stop()
    thread.join(10)


def test_admin_pauses_resumes_and_runs_a_job(app, scheduler, live_server, page):
    add_user(app, "admin", "Admin")
    log_in(page, live_server)
    page.click("text=System")
    page.click("text=Scheduled jobs")
    page.wait_for_url(f"{live_server}/system/jobs/")
    assert "browser-test-node" in page.locator("#bl-scheduler-nodes").inner_text()
    purge = page.locator("tr[data-job='core.purge']")
    assert "UTC" in purge.locator(".bl-next-run").inner_text()

    purge.locator("button[name=pause]").click()
    page.wait_for_load_state()
    assert "Job core.purge is paused." in page.locator(".alert").first.inner_text()
    assert "Paused" in page.locator("tr[data-job='core.purge'] .bl-next-run").inner_text()
    page.locator("tr[data-job='core.purge'] button[name=resume]").click()
    page.wait_for_load_state()
    for _ in range(50):  # the active scheduler applies it within a poll
        if "UTC" in page.locator("tr[data-job='core.purge'] .bl-next-run").inner_text():
            break
        time.sleep(0.2)
        page.reload()
    assert "UTC" in page.locator("tr[data-job='core.purge'] .bl-next-run").inner_text()

    page.locator("tr[data-job='core.purge'] button[name=run]").click()
    page.wait_for_load_state()
    assert "will run within a few seconds" in page.locator(".alert").first.inner_text()
    for _ in range(50):
        page.reload()
        if "Succeeded" in page.locator("tr[data-job='core.purge'] .bl-outcome").inner_text():
            break
        time.sleep(0.2)
    assert "Succeeded" in page.locator("tr[data-job='core.purge'] .bl-outcome").inner_text()


def test_admin_retries_a_dead_delivery(app, live_server, page):
    app.config["BIGLEDGER_EVENT_MAX_ATTEMPTS"] = 1
    sample.BEHAVIOUR["bigledger_inbound_message"] = "raise"
    sample.INBOUND.clear()
    try:
        with app.app_context():
            emit(db.session, "bigledger_inbound_message", {"id": 9, "message_id": "m9@example.com",
                                                          "sender": ["李娜", "lina@example.com"],
                                                          "subject": "试用申请", "source": "test"})
            db.session.commit()
    finally:
        sample.BEHAVIOUR["bigledger_inbound_message"] = "ok"
    add_user(app, "admin", "Admin")
    log_in(page, live_server)
    page.goto(f"{live_server}/deliveriesview/list/")
    # the CRM's lead inbox receives the mail too (and succeeds); the sample subscriber's delivery is dead
    row = page.locator("table tr", has_text="bigledger_inbound_message").filter(has_text="sample")
    assert "dead" in row.inner_text()
    row.locator("input[type=checkbox]").check()
    page.click("text=Actions")
    page.click("a:has-text('Retry')")
    assert "Deliver the selected events again?" in page.locator("#modal-confirm").inner_text()
    page.click("#modal-confirm-ok")
    page.wait_for_url(f"{live_server}/deliveriesview/list/")
    assert "1 deliveries will be retried." in page.locator(".alert").first.inner_text()
    assert "pending" in page.locator("table tr", has_text="bigledger_inbound_message").filter(
        has_text="sample").inner_text()
