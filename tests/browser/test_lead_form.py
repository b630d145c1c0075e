"""The public lead form in a real browser: served without login and without anything from the internet,
embedded with the script snippet on another page, and sent by a person after a moment's thought."""
from __future__ import annotations

from sqlalchemy import select

from bigledger_core.db import db
from plugins.crm.leads.models import Lead, LeadForm


def _form(app) -> None:
    with app.app_context():
        db.session.add(LeadForm(name="官网", slug="website", title="联系我们", title_en="Contact us",
                                fields=[{"field": "name", "required": True}, {"field": "email", "required": True},
                                        {"field": "message"}],
                                consent_required=True, consent_text="我同意接收营销信息。",
                                consent_text_en="I agree to receive marketing messages.",
                                thank_you_en="Thank you, we will call you."))
        db.session.commit()


def test_a_visitor_sends_the_embedded_form_and_becomes_a_lead(app, live_server, page, tmp_path):
    _form(app)
    # a page on the visitor's website (another origin: a file) embedding the form with the snippet
    host = tmp_path / "landing.html"
    host.write_text(f'<!DOCTYPE html><html><body><h1>Landing</h1><script src="{live_server}/static/crm_assets/crm/'
                    f'lead_form_embed.js" data-bigledger-form="{live_server}/crm/f/website" data-lang="en"></script>'
                    '</body></html>', encoding="utf-8")
    page.goto(f"{host.as_uri()}?utm_source=wechat&utm_campaign=spring")
    frame = page.frame_locator("iframe")
    frame.locator("#bl-lf-consent-text").wait_for()
    assert "I agree to receive marketing messages." in frame.locator("#bl-lf-consent-text").inner_text()
    frame.locator("#bl-lf-name").fill("赵敏")
    frame.locator("#bl-lf-email").fill("zhao.min@example.com")
    frame.locator("#bl-lf-message").fill("<b>需要演示</b>")
    frame.locator("#bl-lf-consent").check()
    page.wait_for_timeout(2200)  # a person takes a moment; scripts that send at once are refused
    frame.locator("#bl-lead-form-send").click()
    frame.locator("#bl-lead-form-done").wait_for()
    assert "Thank you, we will call you." in frame.locator("#bl-lead-form-done").inner_text()
    with app.app_context():
        [lead] = db.session.scalars(select(Lead)).all()
        assert (lead.name, lead.email, lead.message, lead.utm_source, lead.utm_campaign, lead.consent) == (
            "赵敏", "zhao.min@example.com", "<b>需要演示</b>", "wechat", "spring", True)


def test_the_public_page_opens_without_login_in_chinese(app, live_server, page):
    _form(app)
    page.goto(f"{live_server}/crm/f/website?lang=zh")
    assert page.locator("h1").inner_text() == "联系我们"
    assert page.locator("label[for=bl-lf-name]").inner_text().startswith("姓名")
    box = page.locator("input[name=url]").bounding_box()
    assert box is None or box["x"] + box["width"] <= 1  # the honeypot stays out of sight
