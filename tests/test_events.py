"""The transactional outbox: events are written with the change, delivered after commit, retried, and
visible to admins (screen and CLI)."""
from __future__ import annotations

import datetime as dt
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from bigledger_core.cli import cli
from bigledger_core.db import db, utcnow
from bigledger_core.events import EventError, deliver_due, emit
from bigledger_core.models import EventDelivery, OutboxEvent
from tests.conftest import SAMPLE_PLUGIN, add_user, csrf_token, login
from tests.sample_plugin import listener
from tests.sample_plugin import plugin as sample

LISTENER = "tests.sample_plugin.listener"


def payload(n: int = 1, **extra) -> dict:
    data = {"id": n, "message_id": f"m{n}@example.com", "sender": ["张伟", "zhangwei@example.com"],
            "subject": f"询价 #{n}", "source": "test"}
    data.update(extra)
    return data


@pytest.fixture(autouse=True)
def reset_subscribers():
    sample.BEHAVIOUR["bigledger_inbound_message"] = "ok"
    sample.INBOUND.clear()
    listener.RECEIVED.clear()
    sample.RELEASE.clear()
    yield
    sample.BEHAVIOUR["bigledger_inbound_message"] = "ok"
    sample.RELEASE.set()  # a subscriber still hanging returns without recording anything


@pytest.fixture
def two_subscribers(make_app):
    return make_app(BIGLEDGER_EXTRA_PLUGINS=[SAMPLE_PLUGIN, LISTENER])


def _aware(value):
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def make_due(app) -> None:
    """Move every retry's back-off into the past."""
    with app.app_context():
        db.session.execute(update(EventDelivery).where(EventDelivery.status == "failed")
                           .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()


def deliveries(app) -> dict[str, EventDelivery]:
    with app.app_context():
        rows = db.session.scalars(select(EventDelivery)).all()
        db.session.expunge_all()
        # the CRM subscribes to received mail too (its lead inbox); these tests watch the two test subscribers
        return {row.subscriber: row for row in rows if row.subscriber in ("sample", "listener")}


def test_a_rolled_back_transaction_leaves_no_event(two_subscribers):
    app = two_subscribers
    with app.app_context():
        emit(db.session, "bigledger_inbound_message", payload())
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
        assert db.session.scalar(select(func.count()).select_from(EventDelivery)) == 0
    assert sample.INBOUND == [] and listener.RECEIVED == []


def test_a_committed_event_reaches_every_subscriber_once_with_its_id(two_subscribers):
    app = two_subscribers
    with app.app_context():
        event = emit(db.session, "bigledger_inbound_message", payload())
        db.session.commit()
    assert [e.id for e in sample.INBOUND] == [event.id] and [e.id for e in listener.RECEIVED] == [event.id]
    received = listener.RECEIVED[0]
    assert received.payload["subject"] == "询价 #1" and received.payload["sender"] == ["张伟", "zhangwei@example.com"]
    assert received.name == "bigledger_inbound_message" and received.version == 1 and received.attempt == 1
    rows = deliveries(app)
    assert {name: (row.status, row.attempts) for name, row in rows.items()} == \
        {"sample": ("delivered", 1), "listener": ("delivered", 1)}
    # delivering again finds nothing due: no subscriber gets it twice
    assert deliver_due(app) == {"delivered": 0, "failed": 0, "dead": 0}
    assert len(sample.INBOUND) == 1 and len(listener.RECEIVED) == 1


def test_an_invalid_payload_is_refused_at_emit_and_nothing_is_written(app):
    with app.app_context():
        with pytest.raises(EventError) as err:
            emit(db.session, "bigledger_inbound_message", {"id": "seven", "message_id": "x"})
        message = str(err.value)
        assert "bigledger_inbound_message" in message and "id: Not a valid integer." in message
        assert "sender: Missing data for required field." in message
        with pytest.raises(EventError, match="'crm_deal_wonn' is not declared"):
            emit(db.session, "crm_deal_wonn", {})
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == 0


def test_a_failing_subscriber_is_retried_with_back_off_and_never_blocks_the_others(two_subscribers):
    app = two_subscribers
    app.config.update(BIGLEDGER_EVENT_RETRY_SECONDS=60, BIGLEDGER_EVENT_MAX_ATTEMPTS=3)
    sample.BEHAVIOUR["bigledger_inbound_message"] = "raise"
    with app.app_context():
        event = emit(db.session, "bigledger_inbound_message", payload())
        db.session.commit()  # the failure does not reach the code that committed
    assert [e.id for e in listener.RECEIVED] == [event.id] and sample.INBOUND == []
    failed = deliveries(app)["sample"]
    assert failed.status == "failed" and failed.attempts == 1
    assert "sample subscriber refused the message" in failed.last_error
    delay = _aware(failed.next_attempt_at) - utcnow()
    assert 50 < delay.total_seconds() <= 60  # first retry after BIGLEDGER_EVENT_RETRY_SECONDS
    assert deliver_due(app)["failed"] == 0  # not due before its back-off
    make_due(app)
    assert deliver_due(app) == {"delivered": 0, "failed": 1, "dead": 0}
    second = deliveries(app)["sample"]
    assert second.attempts == 2 and second.status == "failed"
    assert 110 < (_aware(second.next_attempt_at) - utcnow()).total_seconds() <= 120  # doubled
    make_due(app)
    assert deliver_due(app) == {"delivered": 0, "failed": 0, "dead": 1}
    dead = deliveries(app)["sample"]
    assert dead.status == "dead" and dead.attempts == 3 and dead.next_attempt_at is None
    assert len(listener.RECEIVED) == 1  # the healthy subscriber got it exactly once


def test_back_off_doubles_per_attempt(app):
    from bigledger_core.events import retry_delay

    app.config["BIGLEDGER_EVENT_RETRY_SECONDS"] = 30
    assert [retry_delay(app, n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_delay(app, 30).total_seconds() == 6 * 3600


def test_a_hanging_subscriber_times_out_without_holding_up_the_request_or_the_others(two_subscribers):
    app = two_subscribers
    app.config.update(BIGLEDGER_EVENT_FIRST_ATTEMPT="background", BIGLEDGER_EVENT_TIMEOUT=0.5)
    sample.BEHAVIOUR["bigledger_inbound_message"] = "hang"
    with app.app_context():
        event = emit(db.session, "bigledger_inbound_message", payload())
        db.session.commit()
    for _ in range(100):
        rows = deliveries(app)
        if rows["sample"].status != "pending" and rows["listener"].status != "pending":
            break
        time.sleep(0.1)
    assert rows["listener"].status == "delivered" and [e.id for e in listener.RECEIVED] == [event.id]
    assert rows["sample"].status == "failed" and "did not finish within 0.5 s" in rows["sample"].last_error


def test_a_switched_off_module_gets_its_events_when_switched_on_again(two_subscribers):
    from bigledger_core.modules import disable_module, enable_module

    app = two_subscribers
    app.config["BIGLEDGER_EVENT_FIRST_ATTEMPT"] = "off"
    with app.test_request_context():
        event = emit(db.session, "bigledger_inbound_message", payload())
        db.session.commit()
        disable_module("listener", by="test")
    assert deliver_due(app)["delivered"] == 3  # sample, the CRM's lead inbox, and module_switched to sample
    assert listener.RECEIVED == [] and deliveries(app)["listener"].status == "pending"
    with app.test_request_context():
        enable_module("listener", by="test")
    deliver_due(app)
    assert [e.id for e in listener.RECEIVED] == [event.id]


def make_dead(app) -> int:
    app.config.update(BIGLEDGER_EVENT_MAX_ATTEMPTS=1)
    sample.BEHAVIOUR["bigledger_inbound_message"] = "raise"
    with app.app_context():
        emit(db.session, "bigledger_inbound_message", payload(7))
        db.session.commit()
    sample.BEHAVIOUR["bigledger_inbound_message"] = "ok"
    dead = deliveries(app)["sample"]
    assert dead.status == "dead"
    return dead.id


def test_admins_see_dead_deliveries_and_retry_them_on_the_screen(app, client):
    delivery_id = make_dead(app)
    add_user(app, "admin", "Admin")
    login(client, "admin")
    page = client.get("/deliveriesview/list/?_flt_0_status=dead").get_data(as_text=True)
    assert "bigledger_inbound_message" in page and "dead" in page
    show = client.get(f"/deliveriesview/show/{delivery_id}").get_data(as_text=True)
    assert "sample subscriber refused the message" in show and "询价 #7" in show
    response = client.post("/deliveriesview/action_post", data={
        "action": "retry", "rowid": [str(delivery_id)], "csrf_token": csrf_token(client, "/deliveriesview/list/")})
    assert response.status_code == 302
    assert deliveries(app)["sample"].status == "pending"
    deliver_due(app)
    assert deliveries(app)["sample"].status == "delivered" and [e.payload["id"] for e in sample.INBOUND] == [7]


def test_sales_reps_cannot_see_deliveries(app, client):
    add_user(app, "rep", "Sales Rep")
    login(client, "rep")
    assert client.get("/deliveriesview/list/").status_code in (302, 403)
    assert client.get("/system/jobs/").status_code in (302, 403)


def test_cli_lists_and_retries_dead_deliveries(app):
    delivery_id = make_dead(app)
    runner = CliRunner()
    with app.app_context():
        listed = runner.invoke(cli, ["events", "list", "--status", "dead"], catch_exceptions=False)
        assert listed.exit_code == 0
        line = next(line for line in listed.output.splitlines() if line.startswith(str(delivery_id)))
        assert "bigledger_inbound_message" in line and "sample" in line and "dead" in line
        assert "RuntimeError: sample subscriber refused the message" in line
        assert "dead: 1" in listed.output
        usage = runner.invoke(cli, ["events", "retry"])
        assert usage.exit_code == 2 and "give delivery ids, --all-dead or --all-failed" in usage.output
        retried = runner.invoke(cli, ["events", "retry", "--all-dead"], catch_exceptions=False)
        assert retried.exit_code == 0 and "1 deliveries due again" in retried.output and "delivered: 1" in retried.output
    assert deliveries(app)["sample"].status == "delivered"


def test_delivered_events_are_purged_after_the_retention_period(two_subscribers):
    from bigledger_core.events import purge

    app = two_subscribers
    app.config["BIGLEDGER_EVENT_MAX_ATTEMPTS"] = 1
    with app.app_context():
        emit(db.session, "bigledger_inbound_message", payload(1))
        db.session.commit()
        sample.BEHAVIOUR["bigledger_inbound_message"] = "raise"
        emit(db.session, "bigledger_inbound_message", payload(2))
        db.session.commit()
        assert purge(db.session, dt.timedelta(days=30)) == 0  # too young
        assert purge(db.session, dt.timedelta(seconds=-1)) == 1  # only the fully delivered one
        db.session.commit()
        left = db.session.scalars(select(OutboxEvent.payload)).all()
        assert [p["id"] for p in left] == [2]
        assert {d.status for d in db.session.scalars(select(EventDelivery))} == {"delivered", "dead"}


def test_an_event_nobody_subscribes_to_is_checked_but_not_stored(app):
    from bigledger_core.modules import disable_module

    with app.test_request_context():
        for module in ("sample", "finance_bridge", "pos_bridge", "inventory_bridge", "project_bridge", "crm"):
            disable_module(module, by="test")  # the CRM reads its lead inbox from received mail
        with pytest.raises(EventError):
            emit(db.session, "bigledger_inbound_message", {"id": "x"})
        emit(db.session, "bigledger_inbound_message", payload())
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent).where(
            OutboxEvent.name == "bigledger_inbound_message")) == 0


def test_events_of_a_rolled_back_savepoint_are_dropped_and_the_rest_wait_for_the_real_commit(two_subscribers):
    app = two_subscribers
    with app.app_context():
        kept = emit(db.session, "bigledger_inbound_message", payload(1))
        savepoint = db.session.begin_nested()
        emit(db.session, "bigledger_inbound_message", payload(2))
        savepoint.rollback()
        with db.session.begin_nested():  # released, not committed: nothing is delivered yet
            inner = emit(db.session, "bigledger_inbound_message", payload(3))
        assert listener.RECEIVED == []
        db.session.commit()
        stored = sorted(p["id"] for p in db.session.scalars(select(OutboxEvent.payload)))
    assert stored == [1, 3]
    assert sorted(e.id for e in listener.RECEIVED) == sorted([kept.id, inner.id])
