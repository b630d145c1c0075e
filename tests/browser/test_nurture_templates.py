"""E-mail templates in a real browser: a probe is refused under its field and nothing is saved, a good template
is saved, the preview shows the HTML inside a sandboxed frame where a lead's markup stays text, and the test
mail is queued to oneself."""
from __future__ import annotations

from sqlalchemy import select

from bigledger_core.db import db
from bigledger_core.models import Message
from plugins.crm.leads.models import Lead
from plugins.crm.nurture.models import EmailTemplate
from tests.browser.conftest import log_in
from tests.conftest import add_user


def test_a_marketer_writes_previews_and_test_sends_a_template(app, live_server, page):
    add_user(app, "admin", "Admin")
    with app.app_context():
        db.session.add(Lead(name="<img src=x onerror=alert(1)>Alex", email="alex@example.com", language="en",
                            company_name="Acme"))
        db.session.commit()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, live_server)
    page.goto(f"{live_server}/crm/email-templates/add")
    page.fill("input[name=name]", "Welcome")
    page.fill("input[name=subject_en]", "Hello {{ lead.name }}")
    page.fill("textarea[name=html_en]", "<p>Hello {{ lead.name }}</p>\n<p>{{ ''.__class__.__mro__ }}</p>")
    page.locator("form button[type=submit], form input[type=submit]").first.click()
    page.wait_for_load_state()
    assert "body (English), line 2, column 10: `__class__` is not allowed" in page.content()
    with app.app_context():
        assert db.session.scalar(select(EmailTemplate)) is None
    page.fill("textarea[name=html_en]", "<p>Hello {{ lead.name }} from <b>{{ lead.company_name }}</b></p>")
    page.locator("form button[type=submit], form input[type=submit]").first.click()
    page.wait_for_url(f"{live_server}/")  # saved: back where the add page was opened from
    with app.app_context():
        pk = db.session.scalar(select(EmailTemplate.id))
    page.goto(f"{live_server}/crm/email-templates/preview/{pk}")
    assert page.locator("#bl-template-preview-subject").inner_text() == "Hello <img src=x onerror=alert(1)>Alex"
    frame = page.frame_locator("#bl-template-preview-html")
    assert frame.locator("p").inner_text() == "Hello <img src=x onerror=alert(1)>Alex from Acme"
    assert frame.locator("img").count() == 0 and frame.locator("b").inner_text() == "Acme"
    assert "Hello <img src=x onerror=alert(1)>Alex from Acme" in page.locator("#bl-template-preview-text").inner_text()
    with page.expect_navigation():
        page.click("#bl-template-send-test-button")
    assert "admin@example.com" in page.locator(".alert-success").inner_text()
    assert dialogs == []
    with app.app_context():
        message = db.session.scalar(select(Message))
        assert (message.to_address, message.source) == ("admin@example.com", "nurture:test")
