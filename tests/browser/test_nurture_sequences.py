"""A marketer builds a nurture sequence in the browser: the sequence form, two steps whose form shows the
fields of their kind, activation, a lead found by name and enrolled, and the enrollment on the list."""
from sqlalchemy import select

from bigledger_core.db import db
from plugins.crm.leads.models import Lead
from plugins.crm.leads.services import create_lead
from plugins.crm.nurture.models import EmailTemplate, Enrollment, Sequence
from tests.browser.conftest import log_in
from tests.conftest import add_user


def test_a_sequence_with_two_steps_is_activated_and_a_lead_enrolled(app, live_server, page):
    marketer = add_user(app, "marketer", "Marketing")
    with app.app_context():
        db.session.add(EmailTemplate(name="欢迎 Welcome", subject_zh="欢迎", html_zh="<p>{{ lead.name }}</p>",
                                     subject_en="Welcome", html_en="<p>{{ lead.name }}</p>"))
        lead, _created = create_lead(db.session, Lead(name="赵敏", email="zhao.min@example.com", owner_id=marketer))
        db.session.commit()
        lead_id = lead.id
    log_in(page, live_server, "marketer")

    page.goto(f"{live_server}/sequenceview/add")
    page.fill("#name", "浏览器培育")
    page.fill("#quiet_start", "21:00")
    page.fill("#quiet_end", "08:00")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    with app.app_context():
        pk = db.session.scalar(select(Sequence.id).where(Sequence.name == "浏览器培育"))
    assert pk is not None

    page.goto(f"{live_server}/sequenceview/show/{pk}")
    assert page.locator("#bl-seq-no-steps").is_visible()
    page.select_option("#bl-seq-add-step select[name=kind]", "email")
    page.click("#bl-seq-add-step button")
    page.wait_for_selector("#bl-step-form")
    assert page.locator("#bl-step-template_id-row").is_visible()
    assert not page.locator("#bl-step-days-row").is_visible()
    page.select_option("#bl-step-kind", "wait")  # the fields follow the kind chosen
    assert page.locator("#bl-step-days-row").is_visible() and page.locator("#bl-step-business_days-row").is_visible()
    assert not page.locator("#bl-step-template_id-row").is_visible()
    page.select_option("#bl-step-kind", "email")
    page.select_option("#bl-step-template_id", label="欢迎 Welcome")
    page.click("button[name=save-step]")
    page.wait_for_selector("#bl-seq-step-table")

    page.select_option("#bl-seq-add-step select[name=kind]", "wait")
    page.click("#bl-seq-add-step button")
    page.wait_for_selector("#bl-step-form")
    page.fill("#bl-step-days", "2")
    page.check("#bl-step-business_days")
    page.click("button[name=save-step]")
    page.wait_for_selector("#bl-seq-step-table")
    summaries = page.locator(".bl-seq-step-summary").all_inner_texts()
    assert summaries == ["Send “欢迎 Welcome”", "Wait 2 business days"]

    page.click("#bl-seq-activate")
    page.wait_for_load_state()
    assert page.locator("#bl-seq").get_attribute("data-status") == "active"
    assert page.locator("#bl-seq-status").inner_text() == "Running"

    page.click("#bl-seq-enroll")
    page.fill("#bl-seq-enroll-q", "赵")
    page.click("#bl-seq-enroll-search button")
    page.wait_for_load_state()
    page.check(f"#bl-seq-enroll-leads input[value='{lead_id}']")
    page.click("#bl-seq-enroll-submit")
    page.wait_for_load_state()
    assert "Enrolled in “浏览器培育”: 1." in page.locator(".alert-success").first.inner_text()
    assert page.locator("a.bl-enrollment-lead", has_text="赵敏").is_visible()
    assert page.locator("#bl-enrollment-filters select[name=sequence]").input_value() == str(pk)
    with app.app_context():
        enrollment = db.session.scalars(select(Enrollment)).one()
        assert (enrollment.lead_id, enrollment.sequence_id, enrollment.status) == (lead_id, pk, "active")
