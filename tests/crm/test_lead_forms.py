"""Web forms that capture leads: built on the admin screen, served in Chinese and English without login,
a submission becomes one lead with its UTM parameters, referrer and consent, and hostile input (honeypot,
stale, forged or replayed tokens, floods, oversized bodies, markup) captures nothing or only plain text."""
from __future__ import annotations

import html
import re
import time

import pytest
from sqlalchemy import func, select

from bigledger_core.db import db
from bigledger_core.models import Team
from plugins.crm.leads.forms import (
    TokenError,
    clean_definition,
    issue_token,
    plain_text,
    read_token,
)
from plugins.crm.leads.models import FormToken, Lead, LeadForm
from plugins.crm.models import CustomField
from tests.conftest import csrf_token

CONSENT_ZH = "我同意接收营销信息。"
CONSENT_EN = "I agree to receive marketing messages."


def make_form(app, **values) -> tuple[int, str]:
    fields = values.pop("fields", [{"field": "name", "required": True}, {"field": "email", "required": True},
                                   {"field": "company_name"}, {"field": "message"}])
    with app.app_context():
        team = Team(name="华东销售", name_en="East China sales")
        db.session.add(team)
        db.session.flush()
        form = LeadForm(**{"name": "春季展会", "slug": "spring-expo", "title": "联系我们", "title_en": "Contact us",
                           "fields": fields, "consent_required": True, "consent_text": CONSENT_ZH,
                           "consent_text_en": CONSENT_EN, "thank_you": "谢谢！我们会尽快联系您。",
                           "thank_you_en": "Thank you! We will be in touch.", "team_id": team.id, "channel": "展会",
                           "campaign": "2026春季展", **values})
        db.session.add(form)
        db.session.commit()
        return form.id, form.slug


def token_for(app, form_id: int, age: float = 5) -> str:
    return issue_token(app.config["SECRET_KEY"], form_id, issued_at=time.time() - age)


def send(client, app, form_id, slug, data, *, age: float = 5, token: str | None = None, **kwargs):
    body = {"token": token if token is not None else token_for(app, form_id, age), "lang": "en", **data}
    # the page's form sends to its own address with the language, as the public page does
    return client.post(f"/crm/f/{slug}?lang={body['lang']}", data=body, **kwargs)


def hidden(page: str) -> dict[str, str]:
    return {name: html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)}


def leads(app) -> list[Lead]:
    with app.app_context():
        found = db.session.scalars(select(Lead).order_by(Lead.id)).all()
        db.session.expunge_all()
        return found


GOOD = {"name": "王小明", "email": "Wang.XM@Example.com", "company_name": "镕达科技", "message": "想了解报价",
        "consent": "1"}


def test_admin_builds_a_form_on_the_screen_and_gets_the_public_address_and_embed_snippet(app, admin_client):
    with app.app_context():
        db.session.add(Team(name="华南销售"))
        db.session.add(CustomField(entity="lead", key="budget", label="预算", label_en="Budget", type="number"))
        db.session.commit()
        team_id = db.session.scalar(select(Team.id))
    page = admin_client.get("/crm/lead-forms/add")
    assert page.status_code == 200 and "custom:budget" in page.get_data(as_text=True)
    data = {"csrf_token": csrf_token(admin_client, "/crm/lead-forms/add"), "name": "官网咨询", "slug": "website",
            "title": "联系我们", "title_en": "Contact us", "field.name.on": "1", "field.name.position": "0",
            "field.email.on": "1", "field.email.required": "1", "field.email.position": "1",
            "field.custom:budget.on": "1", "field.custom:budget.position": "2", "field.custom:budget.label": "年度预算",
            "consent_required": "1", "consent_text": CONSENT_ZH, "consent_text_en": CONSENT_EN,
            "thank_you": "谢谢", "thank_you_en": "Thanks", "team_id": str(team_id), "channel": "官网",
            "campaign": "常年", "active": "1"}
    # a javascript: redirect is refused, naming the field; nothing is saved
    refused = admin_client.post("/crm/lead-forms/add", data={**data, "redirect_url": "javascript:alert(1)"})
    assert refused.status_code == 200 and "转向地址：" in refused.get_data(as_text=True)
    response = admin_client.post("/crm/lead-forms/add", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    with app.app_context():
        form = db.session.scalar(select(LeadForm))
        assert (form.slug, form.team_id, form.consent_required, form.active) == ("website", team_id, True, True)
        assert [(f["field"], f["required"], f["label"]) for f in form.fields] == [
            ("name", True, None), ("email", True, None), ("custom:budget", False, "年度预算")]
        form_id = form.id
    shown = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "/crm/f/website" in shown
    assert 'lead_form_embed.js&#34; data-bigledger-form=&#34;http://localhost/crm/f/website' in shown
    assert "&lt;iframe src=&#34;http://localhost/crm/f/website" in shown
    # the same link name for a second form is refused
    again = admin_client.post("/crm/lead-forms/add", data={**data, "csrf_token": csrf_token(
        admin_client, "/crm/lead-forms/add"), "name": "另一个"})
    assert again.status_code == 200 and "website" in again.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LeadForm)) == 1
    listing = admin_client.get("/crm/lead-forms/").get_data(as_text=True)
    assert "官网咨询" in listing and f"/crm/lead-forms/edit/{form_id}" in listing


def test_the_admin_screen_keeps_the_session_csrf_check(app, admin_client):
    response = admin_client.post("/crm/lead-forms/add", data={"name": "x", "slug": "x", "field.name.on": "1"})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LeadForm)) == 0


def test_the_public_page_needs_no_login_and_speaks_chinese_and_english(app, client):
    make_form(app)
    zh = client.get("/crm/f/spring-expo", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert zh.status_code == 200
    text = zh.get_data(as_text=True)
    assert "联系我们" in text and CONSENT_ZH in text and "姓名" in text and 'lang="zh-CN"' in text
    en = client.get("/crm/f/spring-expo?lang=en", headers={"Accept-Language": "zh-CN"})
    text = en.get_data(as_text=True)
    assert "Contact us" in text and CONSENT_EN in text and "Your name" in text and "E-mail" in text
    # nothing is loaded from elsewhere, and the browser is told so
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "default-src 'none'" in en.headers["Content-Security-Policy"]
    assert en.headers["Cache-Control"] == "no-store"
    assert client.get("/crm/f/no-such-form").status_code == 404


def test_a_valid_submission_creates_one_lead_with_utm_referrer_consent_and_shows_thanks(app, client):
    form_id, slug = make_form(app)
    page = client.get(f"/crm/f/{slug}?lang=en&utm_source=baidu&utm_medium=cpc&utm_campaign=spring&utm_term=crm"
                      "&utm_content=banner", headers={"Referer": "https://www.baidu.com/s?wd=crm"})
    carried = hidden(page.get_data(as_text=True))
    assert carried["utm_source"] == "baidu" and carried["referrer"] == "https://www.baidu.com/s?wd=crm"
    carried.pop("token")
    response = send(client, app, form_id, slug, {**carried, **GOOD})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Thank you! We will be in touch." in response.get_data(as_text=True)
    [lead] = leads(app)
    assert (lead.name, lead.email, lead.company_name, lead.message) == ("王小明", "wang.xm@example.com", "镕达科技",
                                                                         "想了解报价")
    assert (lead.source, lead.channel, lead.campaign, lead.form_id) == ("form", "展会", "2026春季展", form_id)
    assert (lead.utm_source, lead.utm_medium, lead.utm_campaign, lead.utm_term, lead.utm_content) == (
        "baidu", "cpc", "spring", "crm", "banner")
    assert lead.referrer == "https://www.baidu.com/s?wd=crm" and lead.language == "en"
    assert lead.consent is True and lead.consent_text == CONSENT_EN and lead.consent_at is not None
    with app.app_context():
        assert lead.team_id == db.session.scalar(select(LeadForm.team_id))
        assert db.session.scalar(select(func.count()).select_from(FormToken)) == 1


def test_the_redirect_variant_sends_the_visitor_to_the_configured_address(app, client):
    form_id, slug = make_form(app, redirect_url="https://www.example.com/thanks")
    response = send(client, app, form_id, slug, GOOD)
    assert response.status_code == 303 and response.headers["Location"] == "https://www.example.com/thanks"
    assert len(leads(app)) == 1


def test_a_filled_honeypot_captures_nothing_but_looks_fine(app, client):
    form_id, slug = make_form(app)
    response = send(client, app, form_id, slug, {**GOOD, "url": "http://spam.example"})
    assert response.status_code == 200 and "Thank you" in response.get_data(as_text=True)
    assert leads(app) == []


def test_stale_forged_and_replayed_tokens_are_refused_with_a_clear_message(app, client):
    form_id, slug = make_form(app)
    fresh = hidden(client.get(f"/crm/f/{slug}").get_data(as_text=True))["token"]
    too_fresh = send(client, app, form_id, slug, GOOD, token=fresh)
    assert too_fresh.status_code == 400 and "sent too quickly" in too_fresh.get_data(as_text=True)
    expired = send(client, app, form_id, slug, GOOD, age=25 * 3600)
    assert expired.status_code == 400 and "has expired" in expired.get_data(as_text=True)
    good = token_for(app, form_id)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    forged = send(client, app, form_id, slug, GOOD, token=tampered)
    assert forged.status_code == 400 and "could not be verified" in forged.get_data(as_text=True)
    other_form = issue_token(app.config["SECRET_KEY"], form_id + 1, issued_at=time.time() - 5)
    assert send(client, app, form_id, slug, GOOD, token=other_form).status_code == 400
    assert send(client, app, form_id, slug, GOOD, token="").status_code == 400
    assert leads(app) == []
    assert send(client, app, form_id, slug, GOOD, token=good).status_code == 200
    replay = send(client, app, form_id, slug, GOOD, token=good)
    assert replay.status_code == 400 and "already sent" in replay.get_data(as_text=True)
    assert len(leads(app)) == 1


def test_a_refused_token_is_explained_in_chinese_too(app, client):
    form_id, slug = make_form(app)
    response = send(client, app, form_id, slug, {**GOOD, "lang": "zh"}, age=25 * 3600)
    assert response.status_code == 400 and "已过期" in response.get_data(as_text=True)


def test_more_submissions_than_the_rate_limit_answer_429(make_app):
    app = make_app(BIGLEDGER_FORM_RATE_LIMIT="3 per minute")
    client = app.test_client()
    form_id, slug = make_form(app)
    statuses = [send(client, app, form_id, slug, {**GOOD, "email": f"p{n}@example.com"}).status_code
                for n in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert "Too many forms" in send(client, app, form_id, slug, GOOD).get_data(as_text=True)
    assert "提交的表单过多" in send(client, app, form_id, slug, {**GOOD, "lang": "zh"}).get_data(as_text=True)
    assert len(leads(app)) == 3
    assert client.get(f"/crm/f/{slug}").status_code == 200  # showing the form is not limited


def test_an_oversized_body_is_refused_with_413_before_it_is_read(app, client):
    form_id, slug = make_form(app)
    response = send(client, app, form_id, slug, {**GOOD, "message": "长" * 30_000})
    assert response.status_code == 413 and "too large" in response.get_data(as_text=True)
    assert leads(app) == []


def test_markup_is_stored_as_text_and_shown_escaped(app, client, admin_client):
    form_id, slug = make_form(app)
    script = "<script>alert('x')</script>"
    missing = send(client, app, form_id, slug, {**GOOD, "company_name": script, "email": ""})
    text = missing.get_data(as_text=True)
    assert missing.status_code == 400 and script not in text and "&lt;script&gt;alert(" in text
    response = send(client, app, form_id, slug, {**GOOD, "company_name": script, "message": f"a\x00b\x07c{script}"})
    assert response.status_code == 200
    [lead] = leads(app)
    assert lead.company_name == script and lead.message == f"abc{script}"
    shown = admin_client.get("/leadview/list/").get_data(as_text=True)
    assert script not in shown and "&lt;script&gt;" in shown


def test_a_missing_required_field_is_named_in_the_visitors_language(app, client):
    form_id, slug = make_form(app)
    en = send(client, app, form_id, slug, {**GOOD, "name": " ", "consent": ""})
    text = en.get_data(as_text=True)
    assert en.status_code == 400 and "Your name: please fill this in." in text
    assert "Consent: please tick the box to agree." in text and "镕达科技" in text  # entries are kept
    zh = send(client, app, form_id, slug, {**GOOD, "email": "", "lang": "zh"})
    assert zh.status_code == 400 and "电子邮件：请填写此项。" in zh.get_data(as_text=True)
    bad = send(client, app, form_id, slug, {**GOOD, "email": "not-an-address"})
    assert bad.status_code == 400 and "E-mail: not-an-address is not a valid e-mail address" in \
        bad.get_data(as_text=True)
    assert leads(app) == []


def test_a_custom_field_on_the_form_lands_in_the_leads_custom_values(app, client):
    with app.app_context():
        db.session.add_all([CustomField(entity="lead", key="budget", label="预算", label_en="Budget", type="number"),
                            CustomField(entity="lead", key="product", label="产品", type="select",
                                        options=[{"value": "crm", "label": "客户管理", "label_en": "CRM"},
                                                 {"value": "erp", "label": "企业资源计划"}])])
        db.session.commit()
    form_id, slug = make_form(app, fields=[{"field": "name", "required": True}, {"field": "email"},
                                           {"field": "custom:budget", "required": True},
                                           {"field": "custom:product", "label_en": "Product"}])
    page = client.get(f"/crm/f/{slug}?lang=en").get_data(as_text=True)
    assert "Budget" in page and "Product" in page and ">CRM<" in page
    wrong = send(client, app, form_id, slug, {**GOOD, "custom_budget": "lots", "custom_product": "crm"})
    assert wrong.status_code == 400 and "Budget: lots is not a number" in wrong.get_data(as_text=True)
    response = send(client, app, form_id, slug, {**GOOD, "custom_budget": "50,000", "custom_product": "crm"})
    assert response.status_code == 200
    [lead] = leads(app)
    assert lead.custom == {"budget": 50000, "product": "crm"}


def test_a_form_that_asks_only_for_the_email_names_the_lead_by_it(app, client):
    form_id, slug = make_form(app, fields=[{"field": "email", "required": True}], consent_required=False)
    assert send(client, app, form_id, slug, {"email": "li@example.com"}).status_code == 200
    [lead] = leads(app)
    assert (lead.name, lead.email, lead.consent) == ("li@example.com", "li@example.com", False)


def test_a_closed_form_accepts_nothing(app, client):
    form_id, slug = make_form(app, active=False)
    assert client.get(f"/crm/f/{slug}").status_code == 404
    assert send(client, app, form_id, slug, GOOD).status_code == 404
    assert leads(app) == []


# -- the plain logic ----------------------------------------------------------------------------------------

def test_plain_text_removes_control_characters_and_keeps_markup_as_text():
    assert plain_text(" a\x00b\x1bc\u0085 <b>x</b> ") == "abc <b>x</b>"
    assert plain_text("one\r\ntwo\tthree", multiline=True) == "one\ntwo\tthree"
    assert plain_text("one\ntwo") == "one two"


def test_the_token_is_bound_to_its_form_and_its_age(app):
    with app.app_context():
        secret = "s3cret"
        token = issue_token(secret, 7, issued_at=time.time() - 10)
        assert read_token(secret, token, 7, min_age=2, max_age=3600)
        for form_id, key, min_age, max_age, reason in ((8, secret, 2, 3600, "invalid"),
                                                       (7, "other", 2, 3600, "invalid"),
                                                       (7, secret, 60, 3600, "too_fresh"),
                                                       (7, secret, 2, 5, "expired")):
            with pytest.raises(TokenError) as caught:
                read_token(key, token, form_id, min_age=min_age, max_age=max_age)
            assert caught.value.reason == reason


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x", "ftp://example.com/", "//evil.example",
                                 "https://"])
def test_only_web_addresses_are_accepted_as_redirects(app, url):
    from plugins.crm.leads.forms import FormDefinitionError

    with app.test_request_context(headers={"Accept-Language": "en"}), pytest.raises(FormDefinitionError) as caught:
        clean_definition({"name": "f", "slug": "f", "redirect_url": url, "fields": [{"field": "name"}]}, {"name"})
    assert any("Redirect address" in p for p in caught.value.problems)
