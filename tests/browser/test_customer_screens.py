"""A sales manager works with a customer in the browser: the 360 page, a document, the timeline filter,
a custom field in the contact form, and the list's search box."""
import datetime as dt

from bigledger_core.db import db
from plugins.crm.models import (
    Activity,
    Company,
    Contact,
    ContactCompany,
    CustomField,
    Phone,
)
from tests.browser.conftest import log_in
from tests.conftest import add_user


def test_the_360_page_upload_and_timeline_filter(app, live_server, page, tmp_path):
    add_user(app, "admin", "Admin")
    with app.app_context():
        group = Company(name="华夏零售集团", name_en="Huaxia Retail Group")
        shop = Company(name="华夏零售（苏州）", parent=group)
        zhang = Contact(full_name="张伟", title="采购总监")
        db.session.add_all([group, shop, zhang])
        db.session.flush()
        db.session.add_all([ContactCompany(contact_id=zhang.id, company_id=shop.id),
                            Phone(contact_id=zhang.id, raw="138 0013 8000")])
        base = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        db.session.add_all([Activity(kind="call" if n % 3 else "meeting", subject=f"跟进 {n}", contact_id=zhang.id,
                                     occurred_at=base + dt.timedelta(hours=n)) for n in range(90)])
        db.session.commit()
        group_id, zhang_id = group.id, zhang.id
    log_in(page, live_server)
    page.goto(f"{live_server}/crm/customer/company/{group_id}")
    assert "华夏零售（苏州）" in page.locator("#bl-hierarchy").inner_text()
    assert "1" in page.locator("#bl-hierarchy").inner_text()

    page.goto(f"{live_server}/crm/customer/contact/{zhang_id}")
    assert "+8613800138000" in page.locator("#bl-details").inner_text()
    contract = tmp_path / "合同.pdf"
    contract.write_bytes(b"%PDF-1.4 contract")
    page.set_input_files("#bl-upload input[type=file]", str(contract))
    page.click("#bl-upload button[name=upload]")
    page.wait_for_load_state()
    assert "合同.pdf" in page.locator("#bl-documents").inner_text()

    page.check("#bl-timeline-filter input[value=meeting]")
    page.click("#bl-timeline-filter button")
    page.wait_for_load_state()
    kinds = page.locator("#bl-timeline tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds and set(kinds) == {"meeting"}
    page.click("#bl-timeline-pager a")  # 30 meetings: a second page
    page.wait_for_load_state()
    assert "page=2" in page.url and "kind=meeting" in page.url


def test_a_custom_field_in_the_contact_form_and_the_list_search(app, live_server, page):
    add_user(app, "admin", "Admin")
    with app.app_context():
        db.session.add(CustomField(entity="contact", key="wechat", label="微信号", label_en="WeChat ID",
                                   type="text", pattern=r"[A-Za-z][-_A-Za-z0-9]{5,19}"))
        db.session.commit()
    log_in(page, live_server)
    page.goto(f"{live_server}/contactview/add")
    page.fill("input[name=full_name]", "王芳")
    page.fill("input[name=custom__wechat]", "1x")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_load_state()
    assert "does not match the required format" in page.content()
    page.fill("input[name=full_name]", "王芳")
    page.fill("input[name=custom__wechat]", "wangfang_88")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_load_state()
    page.goto(f"{live_server}/contactview/list/?_flt_0_custom=wechat%3Dwangfang_88")
    assert "王芳" in page.locator("table.table-hover, table.table").last.inner_text()
    with app.app_context():
        assert db.session.query(Contact).one().custom == {"wechat": "wangfang_88"}
