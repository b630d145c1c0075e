"""Converting a lead: a company, a contact and a deal created or linked through duplicate detection, the source
kept on the deal, `crm_lead_converted`, and undo while the deal is untouched — on the command, the screen and
the REST API."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bigledger_core.db import db
from plugins.crm.leads.conversion import (
    ConversionInputError,
    ConversionRefused,
    convert_lead,
    undo_conversion,
)
from plugins.crm.leads.models import Lead
from plugins.crm.leads.services import create_lead
from plugins.crm.models import Activity, Company, Contact, ContactCompany, Email
from plugins.crm.pipeline import config
from plugins.crm.pipeline.models import Deal, DealLine
from plugins.crm.pipeline.services import load_pipeline, move_deal
from tests.conftest import add_user, api_token, csrf_token
from tests.sample_plugin import plugin as sample

SEED = (Path(__file__).parent.parent / "data" / "pipeline_seed.yaml").read_text(encoding="utf-8")


def english(app):
    """A request context in English: the commands' messages are translated."""
    return app.test_request_context(headers={"Accept-Language": "en"})


@pytest.fixture
def seeded(app):
    sample.CRM_EVENTS.clear()
    rep = add_user(app, "rep", "Sales Rep")
    with app.app_context():
        load_pipeline(db.session, config.parse(SEED))
        db.session.commit()
    return {"rep": rep}


def _lead(seeded, **values) -> Lead:
    fields = {"name": "王强", "title": "采购经理", "company_name": "华信科技有限公司", "industry": "科技",
              "company_size": 200, "website": "https://huaxin.example.cn", "country": "CN", "city": "上海",
              "email": "Wang.Qiang@HuaXin.example.cn", "phone": "138 0013 8000", "source": "form", "channel": "微信",
              "campaign": "2024春季", "status": "qualified", "owner_id": seeded["rep"], **values}
    lead, _ = create_lead(db.session, Lead(**fields))
    db.session.commit()
    return lead


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_converting_creates_the_company_the_contact_and_a_deal_with_the_leads_source(app, seeded):
    with app.app_context():
        lead = _lead(seeded)
        deal = convert_lead(db.session, lead, amount="120000", user_id=seeded["rep"])
        db.session.commit()
        company, contact = db.session.get(Company, lead.company_id), db.session.get(Contact, lead.contact_id)
        assert (company.name, company.industry, company.employees, company.website) == \
            ("华信科技有限公司", "科技", 200, "https://huaxin.example.cn")
        assert [(a.city, a.country) for a in company.addresses] == [("上海", "CN")]
        assert (contact.full_name, contact.title, contact.owner_id) == ("王强", "采购经理", seeded["rep"])
        assert [e.address for e in contact.emails] == ["wang.qiang@huaxin.example.cn"]
        assert [p.e164 for p in contact.phones] == ["+8613800138000"]
        assert [(link.company_id, link.is_primary) for link in contact.links] == [(company.id, True)]
        assert (deal.stage.name, deal.status, deal.amount, deal.currency) == ("寻找客户", "open", Decimal("120000.00"),
                                                                              "CNY")
        assert (deal.source, deal.channel, deal.campaign, deal.lead_id) == ("form", "微信", "2024春季", lead.id)
        assert (deal.owner_id, deal.company_id, deal.contact_id) == (seeded["rep"], company.id, contact.id)
        assert (lead.status, lead.deal_id) == ("converted", deal.id) and lead.converted_at is not None
        assert lead.conversion["company_created"] and lead.conversion["contact_created"]
        assert lead.conversion["previous_status"] == "qualified"
        lead_id, deal_id = lead.id, deal.id
    converted = [e.payload for e in sample.CRM_EVENTS if e.name == "crm_lead_converted"]
    assert len(converted) == 1 and converted[0]["id"] == lead_id and converted[0]["deal_id"] == deal_id
    assert converted[0]["company_created"] is True and converted[0]["channel"] == "微信"


def test_converting_links_the_contact_found_by_email_and_its_company(app, seeded):
    with app.app_context():
        company = Company(name="华信科技有限公司")
        contact = Contact(full_name="王强", emails=[Email(address="wang.qiang@huaxin.example.cn", is_primary=True)])
        contact.links.append(ContactCompany(company=company, is_primary=True))
        db.session.add_all([company, contact])
        db.session.commit()
        before = (_count(Company), _count(Contact), _count(ContactCompany))
        lead = _lead(seeded, email="WANG.QIANG@huaxin.example.cn", company_name="华信科技有限公司")
        deal = convert_lead(db.session, lead)
        db.session.commit()
        assert (lead.contact_id, lead.company_id) == (contact.id, company.id)
        assert (deal.contact_id, deal.company_id) == (contact.id, company.id)
        assert not lead.conversion["company_created"] and not lead.conversion["contact_created"]
        assert lead.conversion["link_created"] is None
        assert (_count(Company), _count(Contact), _count(ContactCompany)) == before
        # a lead that names no company goes to its contact's company
        other = _lead(seeded, name="王强", email="wang.qiang@huaxin.example.cn", company_name=None)
        convert_lead(db.session, other)
        db.session.commit()
        assert (other.contact_id, other.company_id) == (contact.id, company.id)
        # "new" creates a contact even though one matches
        third = _lead(seeded, email="wang.qiang@huaxin.example.cn")
        convert_lead(db.session, third, contact_id="new")
        db.session.commit()
        assert third.conversion["contact_created"] and third.contact_id != contact.id
        assert third.company_id == company.id


def test_two_matching_contacts_are_not_guessed_between(app, seeded):
    with app.app_context():
        for name in ("王强", "王强 (旧)"):
            db.session.add(Contact(full_name=name, emails=[Email(address="wq@example.cn")]))
        db.session.commit()
        lead = _lead(seeded, email="wq@example.cn", company_name=None)
        convert_lead(db.session, lead)
        db.session.commit()
        assert lead.conversion["contact_created"] is True and _count(Contact) == 3


def test_undo_while_untouched_restores_the_lead_and_deletes_only_what_it_created(app, seeded):
    with app.app_context():
        contact = Contact(full_name="王强", emails=[Email(address="wang.qiang@huaxin.example.cn")])
        db.session.add(contact)
        db.session.commit()
        lead = _lead(seeded)
        deal = convert_lead(db.session, lead)
        db.session.commit()
        deal_id, company_id, link_id = deal.id, lead.company_id, lead.conversion["link_created"]
        assert lead.contact_id == contact.id and lead.conversion["company_created"] and link_id is not None
        assert db.session.scalar(select(func.count()).where(Activity.deal_id == deal_id)) == 2
        undo_conversion(db.session, lead)
        db.session.commit()
        assert (lead.status, lead.converted_at, lead.deal_id, lead.contact_id, lead.company_id, lead.conversion) == \
            ("qualified", None, None, None, None, {})
        assert db.session.get(Deal, deal_id) is None and db.session.get(Company, company_id) is None
        assert db.session.get(ContactCompany, link_id) is None
        assert db.session.get(Contact, contact.id) is not None and [e.address for e in contact.emails] == \
            ["wang.qiang@huaxin.example.cn"]
        assert db.session.scalar(select(func.count()).where(Activity.deal_id == deal_id)) == 0
        again = convert_lead(db.session, lead)  # converting again after undo works
        db.session.commit()
        assert lead.status == "converted" and lead.deal_id == again.id and _count(Deal) == 1


def test_undo_is_refused_once_the_deal_moved_was_edited_or_has_work_done(app, seeded):
    with english(app):
        moved, edited, worked, lined = (_lead(seeded, name=n, email=f"{i}@example.cn", phone=None, company_name=f"公司{i}")
                                        for i, n in enumerate(["甲", "乙", "丙", "丁"]))
        deals = {lead.name: convert_lead(db.session, lead) for lead in (moved, edited, worked, lined)}
        db.session.commit()
        move_deal(db.session, deals["甲"], "资质认定")
        deals["乙"].amount = Decimal(5000)
        db.session.scalars(select(Activity).where(Activity.deal_id == deals["丙"].id)).first().done = True
        db.session.add(DealLine(deal=deals["丁"], product="年度订阅", quantity=1, unit_price=Decimal(100)))
        db.session.commit()
        expected = {"甲": "has moved on", "乙": "was edited after the conversion", "丙": "Activities of the deal",
                    "丁": "has line items"}
        for lead in (moved, edited, worked, lined):
            with pytest.raises(ConversionRefused) as refused:
                undo_conversion(db.session, lead)
            assert expected[lead.name] in str(refused.value)
            db.session.rollback()
            assert lead.status == "converted" and db.session.get(Deal, lead.deal_id) is not None


def test_converting_twice_disqualified_or_unqualified_leads_is_refused(app, seeded):
    with english(app):
        lead = _lead(seeded)
        convert_lead(db.session, lead)
        db.session.commit()
        with pytest.raises(ConversionRefused, match="already converted"):
            convert_lead(db.session, lead)
        db.session.rollback()
        dropped = _lead(seeded, name="李娜", email="li@example.cn", status="disqualified")
        with pytest.raises(ConversionRefused, match="disqualified"):
            convert_lead(db.session, dropped)
        db.session.rollback()
        fresh = _lead(seeded, name="张伟", email="zw@example.cn", phone=None, status="working", company_name=None)
        with pytest.raises(ConversionRefused, match="not qualified yet"):
            convert_lead(db.session, fresh)
        db.session.rollback()
        with pytest.raises(ConversionInputError, match="amount"):
            convert_lead(db.session, fresh, unqualified_ok=True, amount="lots")
        db.session.rollback()
        deal = convert_lead(db.session, fresh, unqualified_ok=True)
        db.session.commit()
        assert deal.company_id is None and deal.contact_id == fresh.contact_id
        assert fresh.conversion["previous_status"] == "working"
        undo_conversion(db.session, fresh)
        db.session.commit()
        assert fresh.status == "working"
        assert db.session.scalar(select(func.count()).select_from(Deal)) == 1


def test_the_api_converts_refuses_a_second_time_and_undoes(app, client, seeded):
    add_user(app, "admin", "Admin")
    headers = {"Authorization": f"Bearer {api_token(client, 'admin')}", "Accept-Language": "en"}
    with app.app_context():
        lead_id = _lead(seeded).id
    proposal = client.get(f"/api/v1/crm/lead/{lead_id}/convert", headers=headers).get_json()
    assert proposal["contact_id"] is None and proposal["create_company"] is True
    bad = client.post(f"/api/v1/crm/lead/{lead_id}/convert", json={"amount": -5}, headers=headers)
    assert bad.status_code == 400 and bad.get_json()["message"].startswith("amount:")
    unknown = client.post(f"/api/v1/crm/lead/{lead_id}/convert", json={"stage": 3}, headers=headers)
    assert unknown.status_code == 400 and "stage" in unknown.get_json()["message"]
    done = client.post(f"/api/v1/crm/lead/{lead_id}/convert", json={"deal_name": "华信 ERP", "amount": "8000"},
                       headers=headers)
    assert done.status_code == 201, done.get_json()
    body = done.get_json()
    assert body["status"] == "converted" and body["conversion"]["contact_created"] is True
    twice = client.post(f"/api/v1/crm/lead/{lead_id}/convert", headers=headers)
    assert twice.status_code == 400 and "already converted" in twice.get_json()["message"]
    undone = client.post(f"/api/v1/crm/lead/{lead_id}/undo-convert", headers=headers)
    assert undone.status_code == 200 and undone.get_json()["status"] == "qualified"
    again = client.post(f"/api/v1/crm/lead/{lead_id}/undo-convert", headers=headers)
    assert again.status_code == 400 and "not converted" in again.get_json()["message"]
    assert client.post("/api/v1/crm/lead/999999/convert", headers=headers).status_code == 404
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Deal)) == 0


def test_the_confirmation_page_shows_the_match_and_converts(app, admin_client, seeded):
    with app.app_context():
        company = Company(name="华信科技有限公司")
        db.session.add(company)
        db.session.commit()
        company_id = company.id
        lead_id = _lead(seeded).id
    page = admin_client.get(f"/crm/lead-convert/{lead_id}", headers={"Accept-Language": "en"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and f'name="company_id" value="{company_id}" checked' in html
    assert 'name="contact_id" value="new" checked' in html
    token = csrf_token(admin_client, f"/crm/lead-convert/{lead_id}")
    response = admin_client.post(f"/crm/lead-convert/{lead_id}", data={
        "csrf_token": token, "company_id": str(company_id), "contact_id": "new", "deal_name": "华信 CRM",
        "amount": "1000", "currency": "cny"})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    with app.app_context():
        lead = db.session.get(Lead, lead_id)
        deal = db.session.get(Deal, lead.deal_id)
        assert (deal.name, deal.company_id, deal.currency, lead.conversion["company_created"]) == \
            ("华信 CRM", company_id, "CNY", False)
    page = admin_client.get(f"/crm/lead-convert/{lead_id}", headers={"Accept-Language": "en"})
    assert 'id="bl-undo-convert"' in page.get_data(as_text=True)
    response = admin_client.post(f"/crm/lead-convert/{lead_id}/undo", data={"csrf_token": token})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Lead, lead_id).status == "qualified"
        assert db.session.get(Company, company_id) is not None
