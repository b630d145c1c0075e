"""The contact and company screens: custom fields an admin adds appear in the forms at once, are
validated there, and saving a likely duplicate warns with links to the records."""
from __future__ import annotations

from bigledger_core.db import db
from plugins.crm.models import Contact, CustomField, Email, Phone
from tests.conftest import add_user, csrf_token, login


def test_an_admin_adds_a_custom_field_and_it_is_in_the_contact_form_at_once(app, client):
    add_user(app, "admin", "Admin")
    login(client, "admin")
    token = csrf_token(client, "/customfieldview/add")
    response = client.post("/customfieldview/add", data={
        "csrf_token": token, "entity": "contact", "key": "wechat", "label": "微信号", "label_en": "WeChat ID",
        "type": "text", "required": "y", "pattern": r"[A-Za-z][-_A-Za-z0-9]{5,19}", "position": "1",
        "active": "y"}, follow_redirects=True)
    assert response.status_code == 200
    with app.app_context():
        assert db.session.query(CustomField).filter_by(key="wechat").one().required
    form = client.get("/contactview/add").get_data(as_text=True)
    assert 'name="custom__wechat"' in form and "微信号" in form

    bad = client.post("/contactview/add", data={"csrf_token": token, "full_name": "王芳", "custom__wechat": "1x"},
                      follow_redirects=True).get_data(as_text=True)
    assert "1x 不符合要求的格式" in bad
    missing = client.post("/contactview/add", data={"csrf_token": token, "full_name": "王芳"},
                          follow_redirects=True).get_data(as_text=True)
    assert "为必填项" in missing
    with app.app_context():
        assert db.session.query(Contact).count() == 0

    client.post("/contactview/add", data={"csrf_token": token, "full_name": "王芳", "custom__wechat": "wangfang_88"},
                follow_redirects=True)
    with app.app_context():
        contact = db.session.query(Contact).one()
        assert contact.custom == {"wechat": "wangfang_88"} and contact.owner.username == "admin"
        contact_id = contact.id
    edit = client.get(f"/contactview/edit/{contact_id}").get_data(as_text=True)
    assert 'value="wangfang_88"' in edit
    client.post(f"/contactview/edit/{contact_id}", data={"csrf_token": token, "full_name": "王芳",
                                                         "custom__wechat": "fang_wang_1"}, follow_redirects=True)
    with app.app_context():
        assert db.session.get(Contact, contact_id).custom == {"wechat": "fang_wang_1"}
    page = client.get(f"/crm/customer/contact/{contact_id}").get_data(as_text=True)
    assert "微信号" in page and "fang_wang_1" in page


def test_saving_a_likely_duplicate_warns_with_a_link(app, client):
    add_user(app, "admin", "Admin")
    with app.app_context():
        first = Contact(full_name="张伟")
        db.session.add(first)
        db.session.flush()
        db.session.add_all([Phone(contact_id=first.id, raw="13800138000"),
                            Email(contact_id=first.id, address="zw@example.com")])
        twin = Contact(full_name="张 伟")
        db.session.add(twin)
        db.session.flush()
        db.session.add(Email(contact_id=twin.id, address="ZW@example.com"))
        db.session.commit()
        first_id, twin_id = first.id, twin.id
    login(client, "admin")
    token = csrf_token(client, f"/contactview/edit/{twin_id}")
    page = client.post(f"/contactview/edit/{twin_id}", data={"csrf_token": token, "full_name": "张伟"},
                       follow_redirects=True).get_data(as_text=True)
    assert "可能重复" in page or "Possible duplicates" in page
    assert f'href="/crm/customer/contact/{first_id}"' in page


def test_a_list_exports_what_it_shows_with_its_filter(app, client):
    import csv
    import io

    from openpyxl import load_workbook

    add_user(app, "rep", "Sales Rep")
    add_user(app, "rep2", "Sales Rep")
    with app.app_context():
        sm = app.appbuilder.sm
        rep, rep2 = sm.find_user(username="rep").id, sm.find_user(username="rep2").id
        db.session.add_all([Contact(full_name="张伟", title="采购经理", owner_id=rep),
                            Contact(full_name="张敏", title="销售", owner_id=rep),
                            Contact(full_name="王芳", owner_id=rep),
                            Contact(full_name="张强", owner_id=rep2)])
        db.session.commit()
    login(client, "rep")
    listing = client.get("/contactview/list/?_flt_2_full_name=张").get_data(as_text=True)
    assert 'name="export-csv"' in listing and "_flt_2_full_name" in listing
    response = client.get("/contactview/export/csv?_flt_2_full_name=张")
    assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    names = sorted(row[rows[0].index("姓名")] for row in rows[1:])
    assert names == ["张伟", "张敏"]  # 王芳 is filtered out, 张强 belongs to another rep
    workbook = load_workbook(io.BytesIO(client.get("/contactview/export/xlsx").data), read_only=True)
    values = [row for row in workbook.active.iter_rows(values_only=True)]
    assert len(values) == 4 and "王芳" in {cell for row in values for cell in row}
    assert client.get("/contactview/export/pdf").status_code == 404


def test_a_manager_compares_and_merges_a_duplicate_from_the_360_page(app, client):
    add_user(app, "manager", "Sales Manager")
    with app.app_context():
        mine = app.appbuilder.sm.find_user(username="manager").id
        first = Contact(full_name="刘洋", title="经理", owner_id=mine)
        twin = Contact(full_name="刘洋", title="采购总监", owner_id=mine)
        db.session.add_all([first, twin])
        db.session.flush()
        db.session.add_all([Email(contact_id=first.id, address="liuyang@example.com"),
                            Email(contact_id=twin.id, address="LiuYang@example.com"),
                            Phone(contact_id=twin.id, raw="13500135000")])
        db.session.commit()
        first_id, twin_id = first.id, twin.id
    login(client, "manager")
    page = client.get(f"/crm/customer/contact/{first_id}").get_data(as_text=True)
    assert f"/crm/customer/contact/{first_id}/merge?other={twin_id}" in page
    compare = client.get(f"/crm/customer/contact/{first_id}/merge?other={twin_id}").get_data(as_text=True)
    assert "采购总监" in compare and 'name="take_title"' in compare
    token = csrf_token(client, f"/crm/customer/contact/{first_id}/merge?other={twin_id}")
    done = client.post(f"/crm/customer/contact/{first_id}/merge", data={
        "csrf_token": token, "other": twin_id, "take_title": "other"}, follow_redirects=True)
    assert done.status_code == 200
    with app.app_context():
        survivor = db.session.get(Contact, first_id)
        assert survivor.title == "采购总监" and [p.e164 for p in survivor.phones] == ["+8613500135000"]
        assert db.session.get(Contact, twin_id).merged_into_id == first_id


def test_a_sales_rep_cannot_merge_on_the_screen(app, client):
    add_user(app, "rep", "Sales Rep")
    with app.app_context():
        rep = app.appbuilder.sm.find_user(username="rep").id
        a, b = Contact(full_name="甲", owner_id=rep), Contact(full_name="乙", owner_id=rep)
        db.session.add_all([a, b])
        db.session.commit()
        a_id, b_id = a.id, b.id
    login(client, "rep")
    response = client.get(f"/crm/customer/contact/{a_id}/merge?other={b_id}")
    assert response.status_code in (302, 403)
    with app.app_context():
        assert db.session.get(Contact, b_id).merged_into_id is None


def test_lists_and_the_api_filter_by_custom_fields(app, client):
    from tests.conftest import api_token

    add_user(app, "admin", "Admin")
    with app.app_context():
        db.session.add(CustomField(entity="contact", key="tier", label="等级", label_en="Tier", type="select",
                                   options=[{"value": "gold", "label": "金卡"}, {"value": "silver", "label": "银卡"}]))
        db.session.add_all([Contact(full_name="金先生", custom={"tier": "gold", "score": 5}),
                            Contact(full_name="银女士", custom={"tier": "silver"}),
                            Contact(full_name="无等级")])
        db.session.commit()
    login(client, "admin")
    page = client.get("/contactview/list/?_flt_0_custom=tier%3Dgold").get_data(as_text=True)
    assert "金先生" in page and "银女士" not in page and "无等级" not in page
    page = client.get("/contactview/list/?_flt_1_custom=tier%3DSIL").get_data(as_text=True)
    assert "银女士" in page and "金先生" not in page
    page = client.get("/contactview/list/?_flt_0_custom=score%3D5").get_data(as_text=True)
    assert "金先生" in page and "银女士" not in page  # numbers compare as text
    h = {"Authorization": f"Bearer {api_token(client, 'admin')}"}
    result = client.get("/api/v1/crm/contact/?q=(filters:!((col:custom,opr:cf_eq,value:'tier=silver')))",
                        headers=h).get_json()["result"]
    assert [c["full_name"] for c in result] == ["银女士"]
    nothing = client.get("/api/v1/crm/contact/?q=(filters:!((col:custom,opr:cf_eq,value:'no-key')))", headers=h)
    assert nothing.get_json()["count"] == 0


def test_activity_types_and_company_statuses_are_chosen_from_translated_lists(app, client):
    from plugins.crm.models import Activity, Company

    add_user(app, "admin", "Admin")
    login(client, "admin")
    form = client.get("/companyview/add").get_data(as_text=True)
    assert '<option value="customer">客户</option>' in form
    token = csrf_token(client, "/companyview/add")
    client.post("/companyview/add", data={"csrf_token": token, "name": "新公司", "status": "partner"})
    with app.app_context():
        company = db.session.query(Company).one()
        assert company.status == "partner"
        company_id = company.id
    form = client.get("/activityview/add").get_data(as_text=True)
    assert '<option value="meeting">会议</option>' in form
    client.post("/activityview/add", data={"csrf_token": token, "kind": "meeting", "subject": "拜访",
                                           "company": str(company_id), "occurred_at": "2026-11-20 10:00:00"})
    with app.app_context():
        activity = db.session.query(Activity).one()
        assert (activity.kind, activity.user.username) == ("meeting", "admin")


def test_the_activity_list_exports_its_rows_too(app, client):
    import csv
    import io

    from plugins.crm.models import Activity

    add_user(app, "admin", "Admin")
    with app.app_context():
        zhang = Contact(full_name="张伟")
        db.session.add(zhang)
        db.session.flush()
        db.session.add_all([Activity(kind="call", subject="报价跟进", contact_id=zhang.id),
                            Activity(kind="note", subject="偏好微信联系", contact_id=zhang.id)])
        db.session.commit()
    login(client, "admin")
    response = client.get("/activityview/export/csv?_flt_3_kind=call")
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert response.status_code == 200 and len(rows) == 2
    assert "报价跟进" in rows[1] and "张伟" in rows[1]
