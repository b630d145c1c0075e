"""Documents on customers: upload limits, one stored copy per content, permission-checked download, and no
file left behind when documents or their records go."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from bigledger_core.db import db
from plugins.crm.documents import collect_garbage, path_for
from plugins.crm.models import Company, Contact, Document
from tests.conftest import add_user, api_token, csrf_token, login

PDF = b"%PDF-1.4\n% BigLedger test\n" + "报价单 quotation".encode() * 100


def _user_id(app, name):
    with app.app_context():
        return app.appbuilder.sm.find_user(username=name).id


@pytest.fixture
def customers(app):
    add_user(app, "admin", "Admin")
    add_user(app, "rep", "Sales Rep")
    add_user(app, "rep2", "Sales Rep")
    with app.app_context():
        mine = Company(name="华夏零售", owner_id=_user_id(app, "rep"))
        theirs = Contact(full_name="李娜", owner_id=_user_id(app, "rep2"))
        db.session.add_all([mine, theirs])
        db.session.commit()
        return {"company": mine.id, "contact": theirs.id}


def upload(client, token, kind, pk, data, name):
    return client.post(f"/api/v1/crm/document/{kind}/{pk}", headers={"Authorization": f"Bearer {token}",
                                                                       "Accept-Language": "en"},
                       data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_upload_download_and_one_copy_per_content(app, client, customers):
    token = api_token(client, "rep")
    first = upload(client, token, "company", customers["company"], PDF, "报价单.pdf")
    second = upload(client, token, "company", customers["company"], PDF, "quotation-copy.pdf")
    assert first.status_code == second.status_code == 201, first.get_data(as_text=True)
    assert first.get_json()["sha256"] == second.get_json()["sha256"]
    with app.app_context():
        stored = path_for(first.get_json()["sha256"])
        assert stored.read_bytes() == PDF and stored.is_relative_to(Path(app.config["INSTANCE_PATH"]))
        assert len(list((Path(app.config["INSTANCE_PATH"]) / "documents").glob("??/*"))) == 1
    response = client.get(f"/api/v1/crm/document/{first.get_json()['id']}/download",
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.data == PDF
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    view = client.get(f"/api/v1/crm/customer/company/{customers['company']}/360",
                      headers={"Authorization": f"Bearer {token}"}).get_json()["result"]
    assert sorted(d["filename"] for d in view["documents"]) == ["quotation-copy.pdf", "报价单.pdf"]


@pytest.mark.parametrize("data, name, message", [
    (b"MZ\x90\x00", "setup.exe", "setup.exe: files of type .exe are not accepted"),
    (b"", "empty.pdf", "empty.pdf is empty"),
    (b"x" * (1024 * 1024 + 1), "big.pdf", "big.pdf is larger than 1 MB"),
    (PDF, "../../etc/passwd.pdf", None),
])
def test_refused_uploads_leave_nothing_behind(make_app, data, name, message):
    app = make_app(BIGLEDGER_DOCUMENT_MAX_MB=1)
    client = app.test_client()
    add_user(app, "admin", "Admin")
    with app.app_context():
        company = Company(name="测试公司")
        db.session.add(company)
        db.session.commit()
        company_id = company.id
    response = upload(client, api_token(client, "admin"), "company", company_id, data, name)
    folder = Path(app.config["INSTANCE_PATH"]) / "documents"
    if message is None:  # a path in the name is reduced to its last part
        assert response.status_code == 201 and response.get_json()["filename"] == "passwd.pdf"
        return
    assert response.status_code == 400 and message in response.get_json()["message"]
    assert not folder.exists() or [p for p in folder.rglob("*") if p.is_file()] == []
    with app.app_context():
        assert db.session.query(Document).count() == 0


def test_others_cannot_download_or_upload_to_records_they_may_not_see(app, client, customers):
    token = api_token(client, "rep")
    assert upload(client, token, "contact", customers["contact"], PDF, "x.pdf").status_code == 404
    theirs = upload(client, api_token(client, "rep2"), "contact", customers["contact"], PDF, "x.pdf")
    document_id = theirs.get_json()["id"]
    assert client.get(f"/api/v1/crm/document/{document_id}/download",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 404
    assert client.delete(f"/api/v1/crm/document/{document_id}",
                         headers={"Authorization": f"Bearer {token}"}).status_code == 404


def test_files_go_with_the_last_document_or_record_that_uses_them(app, client, customers):
    token = api_token(client, "admin")
    a = upload(client, token, "company", customers["company"], PDF, "a.pdf").get_json()
    upload(client, token, "contact", customers["contact"], PDF, "b.pdf")  # the same content, a second time
    other = upload(client, token, "contact", customers["contact"], b"plain text", "notes.txt").get_json()
    with app.app_context():
        shared, alone = path_for(a["sha256"]), path_for(other["sha256"])
    assert client.delete(f"/api/v1/crm/document/{a['id']}", headers={"Authorization": f"Bearer {token}"}
                         ).status_code == 200
    assert shared.exists()  # b.pdf still uses it
    with app.app_context():  # deleting the contact deletes its documents, and then their files
        db.session.delete(db.session.get(Contact, customers["contact"]))
        db.session.commit()
        assert db.session.query(Document).count() == 0
    assert not shared.exists() and not alone.exists()
    with app.app_context():  # a file nobody names (e.g. after a bulk delete in SQL) goes at night
        shared.parent.mkdir(parents=True, exist_ok=True)
        shared.write_bytes(PDF)
        assert collect_garbage() == 1 and not shared.exists()


def test_upload_and_delete_on_the_360_page(app, client, customers):
    login(client, "admin")
    page = f"/crm/customer/company/{customers['company']}"
    token = csrf_token(client, page)
    response = client.post(f"{page}/documents", data={"csrf_token": token, "file": (io.BytesIO(PDF), "合同.pdf")},
                           content_type="multipart/form-data", follow_redirects=True)
    assert "合同.pdf" in response.get_data(as_text=True)
    with app.app_context():
        document_id = db.session.query(Document.id).scalar()
    assert client.get(f"/crm/customer/document/{document_id}").data == PDF
    response = client.post(f"/crm/customer/document/{document_id}/delete", data={"csrf_token": token},
                           follow_redirects=True)
    assert response.status_code == 200
    with app.app_context():
        assert db.session.query(Document).count() == 0
