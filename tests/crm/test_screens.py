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
