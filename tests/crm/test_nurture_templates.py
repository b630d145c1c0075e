"""E-mail templates: template-injection probes are refused at save (screen and API) with the part, line and
column; a template stored past the checks still renders nothing dangerous; the recipient's language picks the
version; merge fields (custom fields too) fill subject, HTML and text; lead data is escaped in HTML and plain
in text; the preview; a test mail over real SMTP; and who may use the screen and API."""
from __future__ import annotations

import html as html_lib
import re

import pytest
from sqlalchemy import func, select

from bigledger_core.db import db
from bigledger_core.mail.inbound import html_to_text
from bigledger_core.mail.outbound import send_due
from bigledger_core.models import Message
from plugins.crm.leads.models import Lead
from plugins.crm.models import CustomField
from plugins.crm.nurture import templates
from plugins.crm.nurture.models import EmailTemplate, Sequence, SequenceStep
from plugins.crm.nurture.templates import (
    TemplateError,
    lead_context,
    prepare,
    render_for_lead,
    validate,
)
from tests.conftest import add_user, api_token, csrf_token, login

# probe, and what the refusal says about it (the part, line and column are checked separately)
PROBES = [
    ("{{ ''.__class__.__mro__ }}", "line 1, column 7: `__class__` is not allowed"),
    ("{{ lead.__class__ }}", "line 1, column 9: `__class__` is not allowed"),
    ("{{ config }}", "line 1, column 4: `config` is not allowed"),
    ("{{ self.__init__.__globals__ }}", "line 1, column 4: `self` is not allowed"),
    ("{{ lead['__class__'] }}", "line 1, column 10: `__class__` is not allowed"),
    ("{{ ''|attr('__class__') }}", "line 1, column 7: the filter `attr` is not allowed"),
    ("{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
     "line 1, column 16: `__class__` is not allowed"),
    ("{% for x in ().__class__.__base__.__subclasses__() %}", "line 1: not a valid template"),
    ("{{ cycler.__init__.__globals__.os }}", "line 1, column 4: `cycler` is not allowed"),
    ("{{ request.application }}", "line 1, column 4: `request` is not allowed"),
    ("<p>Hi {{ lead.name }}</p>\n<p>\n  {{ lead.name.__class__ }}</p>",
     "line 3, column 16: `__class__` is not allowed"),
    ("{% autoescape false %}{{ lead.name }}{% endautoescape %}", "line 1, column 4: `{% autoescape %}` is not allowed"),
    ("{% include 'secret.html' %}", "line 1, column 4: `{% include %}` is not allowed"),
    ("{{ lead.name.upper() }}", "line 1, column 14: calling `upper()` is not allowed"),
    ("{{ 9 ** 9 ** 9 }}", "line 1, column 6: `**` is not allowed"),
    ("{{ lipsum() }}", "line 1, column 4: `lipsum` is not allowed"),
    ("{{ range(10)|join }}", "line 1, column 4: `range` is not allowed"),
    ("{% set ns = namespace(a=1) %}", "line 1, column 13: `namespace` is not allowed"),
]
SECRET = "super-secret-key-for-the-probe-test"


@pytest.fixture(autouse=True)
def _english_outside_requests(monkeypatch):
    """Messages made outside a request follow the terminal's language: English here."""
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)


def english(client):
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    client.get("/lang/en")  # the language menu: a signed-in user's choice outranks the browser's
    return client


def auth(client, username: str) -> dict:
    return {"Authorization": f"Bearer {api_token(client, username)}", "Accept-Language": "en"}


def make_template(app, **values) -> int:
    """Store a template directly (past `validate`, as a database edit or an import could)."""
    with app.app_context():
        template = EmailTemplate(**{"name": "欢迎", "subject_zh": "{{ lead.name }}，您好",
                                    "html_zh": "<p>您好 {{ lead.name }}</p>",
                                    "subject_en": "Hello {{ lead.name }}", "html_en": "<p>Hello {{ lead.name }}</p>",
                                    **values})
        db.session.add(template)
        db.session.commit()
        return template.id


def make_lead(app, **values) -> int:
    with app.app_context():
        lead = Lead(**{"name": "王小明", "email": "wang@example.com", "language": "zh", **values})
        db.session.add(lead)
        db.session.commit()
        return lead.id


def screen_data(client, path: str, **values) -> dict:
    data = {"csrf_token": csrf_token(client, path), "name": "春季跟进", "subject_zh": "", "html_zh": "",
            "subject_en": "", "html_en": "", "marketing": "y", "active": "y"}
    data.update(values)
    return data


def count_templates(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(EmailTemplate))


# -- refusing at save ----------------------------------------------------------------------------------------

def test_every_injection_probe_is_refused_on_the_screen_naming_the_part_line_and_column(app, admin_client):
    english(admin_client)
    for probe, expected in PROBES:
        data = screen_data(admin_client, "/crm/email-templates/add", subject_en="Hi", html_en=probe)
        response = admin_client.post("/crm/email-templates/add", data=data)
        page = html_lib.unescape(response.get_data(as_text=True))
        assert response.status_code == 200, probe
        assert f"body (English), {expected}" in page, (probe, re.findall(r"body \(English\)[^<]*", page))
    # in a subject and in the Chinese version too
    data = screen_data(admin_client, "/crm/email-templates/add", subject_zh="{{ config.SECRET_KEY }}",
                       html_zh="<p>{{ lead.name }}</p>")
    page = html_lib.unescape(admin_client.post("/crm/email-templates/add", data=data).get_data(as_text=True))
    assert "subject (中文), line 1, column 4: `config` is not allowed" in page
    assert count_templates(app) == 0


def test_every_injection_probe_is_refused_by_the_api_with_the_problems_listed(app, client):
    add_user(app, "admin", "Admin")
    headers = auth(client, "admin")
    for probe, expected in PROBES:
        response = client.post("/api/v1/crm/email_template/", headers=headers, json={
            "name": "probe", "subject_zh": "您好", "html_zh": probe})
        assert response.status_code == 400, (probe, response.get_json())
        body = response.get_json()
        assert any(p.startswith(f"body (中文), {expected}") for p in body["problems"]), (probe, body)
        assert body["message"] == "\n".join(body["problems"])
    assert count_templates(app) == 0
    # a change that brings a probe in is refused and the stored template stays as it was
    pk = make_template(app)
    response = client.put(f"/api/v1/crm/email_template/{pk}", headers=headers,
                          json={"html_en": "<p>{{ lead.__class__.__mro__ }}</p>"})
    assert response.status_code == 400
    assert response.get_json()["problems"] == ["body (English), line 1, column 12: `__class__` is not allowed"]
    with app.app_context():
        assert db.session.get(EmailTemplate, pk).html_en == "<p>Hello {{ lead.name }}</p>"


def test_a_template_stored_past_the_checks_renders_nothing_dangerous(app):
    app.config["SECRET_KEY"] = SECRET
    context = lead_context({"name": "王小明", "custom": {}}, None, unsubscribe_url="https://x.example/u")
    sandbox = templates._environment("en", html=True)
    for probe, _expected in PROBES:
        pk = make_template(app, name=f"probe {len(probe)} {probe[:20]}", html_en=f"<p>{probe}</p>")
        with app.app_context():
            template = db.session.get(EmailTemplate, pk)
            # before sending, the same checks run again: the scheduler gets a TemplateError naming the place
            with pytest.raises(TemplateError) as refused:
                prepare(template, "en").render(context)
            assert refused.value.problems[0].startswith("body (English), line ")
            # and the sandbox itself, without those checks, renders nothing of Python
            try:
                out = sandbox.from_string(probe).render(context)
            except Exception as exc:  # noqa: BLE001  (a refusal is fine; it must not carry secrets either)
                out = str(exc)
            leaks = re.findall(r"class|mro|module|function|object at|Reference|Config|<built-in|\bos\b|globals|"
                               + SECRET, out)
            assert leaks == [], (probe, out)


def test_a_template_with_a_half_filled_language_or_no_language_is_refused(app):
    with app.app_context():
        with pytest.raises(TemplateError) as none:
            validate(db.session, EmailTemplate(name="空"))
        assert none.value.problems == ["Give a subject and a body in Chinese, in English or in both."]
        with pytest.raises(TemplateError) as half:
            validate(db.session, EmailTemplate(name="半", subject_zh="主题", html_zh="<p>正文</p>",
                                               subject_en="Subject only"))
        assert half.value.problems == [("body (English): empty; fill in both the subject and the body of this "
                                       "language, or neither")]
        assert half.value.fields == ["html_en"]
        with pytest.raises(TemplateError) as long:
            validate(db.session, EmailTemplate(name="长", subject_zh="长" * 301, html_zh="x" * 200_001))
        assert [p.split(":")[0] for p in long.value.problems] == ["subject (中文)", "body (中文)"]
        with pytest.raises(TemplateError) as syntax:
            validate(db.session, EmailTemplate(name="错", subject_en="Hi", html_en="<p>\n\n{{ lead.name }</p>"))
        assert syntax.value.problems[0].startswith("body (English), line 3: not a valid template: unexpected '}'")


# -- rendering -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("zh", "en", "language", "picked"), [
    (True, True, "zh", "zh"), (True, True, "zh-CN", "zh"), (True, True, None, "zh"), (True, True, "en", "en"),
    (True, True, "en-GB", "en"), (True, True, "EN", "en"), (True, True, "ms", "zh"),
    (False, True, "zh", "en"), (True, False, "en", "zh")])
def test_the_recipients_language_picks_the_version_and_falls_back_to_the_other(app, zh, en, language, picked):
    versions = {}
    if zh:
        versions.update(subject_zh="中文主题 {{ lead.name }}", html_zh="<p>中文 {{ lead.name }}</p>")
    if en:
        versions.update(subject_en="English subject {{ lead.name }}", html_en="<p>English {{ lead.name }}</p>")
    pk = make_template(app, **{"subject_zh": None, "html_zh": None, "subject_en": None, "html_en": None,
                               **versions})
    lead_id = make_lead(app, name="Alex", language=language)
    with app.app_context(), app.test_request_context():
        template, lead = db.session.get(EmailTemplate, pk), db.session.get(Lead, lead_id)
        assert prepare(template, language).language == picked
        rendered = render_for_lead(db.session, template, lead)
        assert rendered.language == picked
        assert rendered.subject == ("中文主题 Alex" if picked == "zh" else "English subject Alex")
        assert rendered.text == ("中文 Alex" if picked == "zh" else "English Alex")


def test_merge_fields_with_custom_fields_fill_the_subject_html_and_text(app):
    owner = add_user(app, "owner", "Sales Rep")
    with app.app_context():
        db.session.add(CustomField(entity="lead", key="budget", label="预算", label_en="Budget", type="number"))
        db.session.add(CustomField(entity="lead", key="name", label="别名", type="text"))  # clashes with name
        db.session.commit()
        user = db.session.get(app.appbuilder.sm.user_model, owner)
        user.first_name, user.last_name = "伟", "张"
        db.session.commit()
    lead_id = make_lead(app, title="采购经理", company_name="镕达科技", city="上海", owner_id=owner, score=42,
                        custom={"budget": 50000, "name": "小明哥"})
    body = ("<p>{{ lead.name }}（{{ lead.title }}），{{ lead.company_name }} · {{ lead.city }}</p>\n"
            "<p>预算 {{ lead.custom.budget }} = {{ lead.budget }}; 别名 {{ lead.custom.name }}; 评分 {{ lead.score }}</p>\n"
            "<p>{{ lead.industry|default('未知行业') }} {{ lead.custom.gone }}</p>\n"
            "{% if lead.score > 40 %}<p>高分</p>{% endif %}\n"
            "<p>{{ owner.name }} &lt;{{ owner.email }}&gt; · {{ sender.name }} · {{ today.year }}</p>\n"
            "<p><a href=\"{{ unsubscribe_url }}\">退订</a></p>")
    with app.app_context(), app.test_request_context(headers={"Accept-Language": "en"}):
        template = EmailTemplate(name="合并字段", subject_zh="{{ lead.name }}，\n{{ lead.company_name }} 的方案",
                                 html_zh=body)
        with pytest.raises(TemplateError) as unknown:
            validate(db.session, template)  # lead.custom.gone is no custom field
        assert unknown.value.problems == [("body (中文), line 3, column 55: `lead.custom.gone` is not an active "
                                          "custom field of leads")]
        template.html_zh = body.replace(" {{ lead.custom.gone }}", "")
        validate(db.session, template)
        db.session.add(template)
        db.session.commit()
        app.config["BIGLEDGER_MAIL_FROM"] = "BigLedger 销售部 <sales@bigledger.example>"
        prepared = prepare(template, "zh")
        lead = db.session.get(Lead, lead_id)
        subject, html, text = prepared.render(lead_context(
            templates.lead_record(lead), templates.owner_record(db.session.get(app.appbuilder.sm.user_model, owner)),
            unsubscribe_url="https://crm.example/u/t0ken", sender=app.config["BIGLEDGER_MAIL_FROM"]))
    assert subject == "王小明， 镕达科技 的方案"
    year = str(templates._today(None).year)
    assert "<p>王小明（采购经理），镕达科技 · 上海</p>" in html
    assert "预算 50000 = 50000; 别名 小明哥; 评分 42" in html  # lead.name stays the lead's own name
    assert "未知行业" in html and "<p>高分</p>" in html
    assert f"<p>张伟 &lt;owner@example.com&gt; · BigLedger 销售部 · {year}</p>" in html
    assert '<a href="https://crm.example/u/t0ken">退订</a>' in html
    assert text == ("王小明（采购经理），镕达科技 · 上海\n\n预算 50000 = 50000; 别名 小明哥; 评分 42\n\n未知行业\n\n高分\n\n"
                    f"张伟 <owner@example.com> · BigLedger 销售部 · {year}\n\n退订 (https://crm.example/u/t0ken)")
    # a custom field switched off after saving renders empty at send time, it does not stop the mail
    with app.app_context():
        db.session.execute(CustomField.__table__.update().values(active=False))
        db.session.commit()
        template = db.session.get(EmailTemplate, template.id)
        _subject, html, _text = prepare(template, "zh").render(lead_context({"name": "李雷", "custom": {}}, None))
        assert "预算  = ;" in html


def test_lead_data_is_escaped_in_html_and_plain_in_text(app):
    lead_id = make_lead(app, name="<script>alert(1)</script>", company_name="A & B <Ltd>",
                        custom={"note": "<img src=x onerror=alert(2)>"})
    pk = make_template(app, subject_zh="{{ lead.name }} & {{ lead.company_name }}",
                       html_zh="<p>{{ lead.name }} · {{ lead.company_name }} · {{ lead.custom.note }}</p>")
    with app.app_context(), app.test_request_context():
        rendered = render_for_lead(db.session, db.session.get(EmailTemplate, pk), db.session.get(Lead, lead_id))
    assert rendered.html == ("<p>&lt;script&gt;alert(1)&lt;/script&gt; · A &amp; B &lt;Ltd&gt; · "
                             "&lt;img src=x onerror=alert(2)&gt;</p>")
    assert rendered.text == "<script>alert(1)</script> · A & B <Ltd> · <img src=x onerror=alert(2)>"
    assert rendered.subject == "<script>alert(1)</script> & A & B <Ltd>"


@pytest.mark.parametrize("body", [
    "<h1>{{ lead.name }}</h1><ul>{% for tag in lead.custom.tags %}<li>{{ tag|upper }}</li>{% endfor %}</ul>",
    ("<p>Dear {{ lead.name|title }},</p>\n<p>{% if lead.city %}Greetings to {{ lead.city }}!{% else %}Hi!{% endif %}"
    "</p><p><a href=\"https://example.com/p?c={{ lead.city }}\">Pricing</a> <a href=\"{{ unsubscribe_url }}\">"
    "{{ unsubscribe_url }}</a></p>"),
    ("<style>p { color: red }</style><table><tr><td>{{ lead.company_name }}</td><td>{{ lead.score }}</td></tr>"
    "</table><!-- {{ lead.email }} --><p>&#123;&#123; config &#125;&#125; {curly} &amp; {% raw %}{{ raw }}{% endraw %}"
    "</p><img alt=\"{{ lead.name }}\" src=\"x.png\">"),
    "<p>{% if lead.city %}<!-- {% endif %} --></p><p>{{ lead.name }}</p>",  # the text template cannot be made
])
def test_the_text_part_made_from_the_template_source_reads_like_the_rendered_html(app, body):
    context = lead_context({"name": "wang <b>", "city": "Shanghai & Co", "company_name": "镕达", "score": 7,
                            "email": "w@example.com", "custom": {"tags": ["vip", "cn"]}}, None,
                           unsubscribe_url="https://x.example/u?a=1&b=2")
    with app.app_context():
        template = EmailTemplate(name="t", subject_en="s", html_en=body)
        prepared = prepare(template, "en")
        _subject, html, text = prepared.render(context)
    assert text == html_to_text(html)
    assert "{{" not in text.replace("{{ config }}", "").replace("{{ raw }}", "")
    assert (prepared.compiled.text is None) == ("<!--" in body and "{% endif %} -->" in body)


def test_prepared_templates_are_cached_and_an_edit_is_compiled_again(app):
    pk = make_template(app)
    with app.app_context():
        template = db.session.get(EmailTemplate, pk)
        first = prepare(template, "zh")
        assert prepare(template, "zh").compiled is first.compiled
        template.html_zh = "<p>再次 {{ lead.name }}</p>"
        db.session.commit()
        again = prepare(template, "zh")
        assert again.compiled is not first.compiled
        assert again.render(lead_context({"name": "李雷"}, None))[1] == "<p>再次 李雷</p>"


def test_lead_context_is_plain_data_with_fields_custom_fields_and_the_owner(app):
    context = lead_context({"name": "Wei Zhang", "email": None, "score": 3, "timezone": "Asia/Shanghai",
                            "custom": {"region": "华东", "title": "clash", "_private": "x", "tags": ["a"]}},
                           {"first_name": "Lei", "last_name": "Li", "email": "li@example.com"},
                           unsubscribe_url="https://u.example/1", sender="sales@bigledger.example")
    assert context["lead"] == {"name": "Wei Zhang", "score": 3, "region": "华东", "tags": ["a"],
                               "custom": {"region": "华东", "title": "clash", "tags": ["a"]}}
    assert context["owner"] == {"name": "Lei Li", "first_name": "Lei", "last_name": "Li", "email": "li@example.com"}
    assert context["sender"] == {"name": "sales@bigledger.example", "email": "sales@bigledger.example"}
    assert templates.person_name("伟", "张") == "张伟"


# -- preview, test mail, API, permissions --------------------------------------------------------------------

def test_the_preview_page_shows_subject_html_in_a_sandboxed_frame_and_the_text(app, admin_client):
    english(admin_client)
    lead_id = make_lead(app, name="Alex <Chen>", language="en", company_name="Acme")
    make_lead(app, name="王小明", company_name="镕达科技")
    pk = make_template(app, html_en="<p>Hello {{ lead.name }} from <b>{{ lead.company_name }}</b></p>")
    page = admin_client.get(f"/crm/email-templates/preview/{pk}?lead={lead_id}").get_data(as_text=True)
    assert 'id="bl-template-preview-subject">Hello Alex &lt;Chen&gt;</span>' in page
    frame = re.search(r'<iframe id="bl-template-preview-html" sandbox="" [^>]*srcdoc="([^"]*)"', page)
    assert frame, page[-3000:]
    assert html_lib.unescape(frame.group(1)) == "<p>Hello Alex &lt;Chen&gt; from <b>Acme</b></p>"
    assert ('<pre id="bl-template-preview-text" style="white-space: pre-wrap">Hello Alex &lt;Chen&gt; from Acme'
            in page)
    # the Chinese version for the same lead, on request; a search finds the other lead
    page = admin_client.get(f"/crm/email-templates/preview/{pk}?lead={lead_id}&language=zh").get_data(as_text=True)
    assert "Alex &lt;Chen&gt;，您好" in page
    found = admin_client.get(f"/crm/email-templates/preview/{pk}?q=镕达").get_data(as_text=True)
    assert "王小明 · 镕达科技" in found and "Alex" not in found


def test_the_preview_api_fills_the_template_for_a_lead(app, client):
    add_user(app, "admin", "Admin")
    headers = auth(client, "admin")
    lead_id = make_lead(app, name="Alex", language="en-US")
    pk = make_template(app)
    response = client.post(f"/api/v1/crm/email_template/{pk}/preview", headers=headers, json={"lead_id": lead_id})
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"subject": "Hello Alex", "html": "<p>Hello Alex</p>", "text": "Hello Alex",
                                   "language": "en"}
    zh = client.post(f"/api/v1/crm/email_template/{pk}/preview", headers=headers,
                     json={"lead_id": lead_id, "language": "zh"}).get_json()
    assert (zh["subject"], zh["language"]) == ("Alex，您好", "zh")
    assert client.post(f"/api/v1/crm/email_template/{pk}/preview", headers=headers, json={}).status_code == 400
    assert client.post(f"/api/v1/crm/email_template/{pk}/preview", headers=headers,
                       json={"lead_id": 999_999}).status_code == 404
    bad = make_template(app, name="坏", html_en="<p>{{ config }}</p>")
    refused = client.post(f"/api/v1/crm/email_template/{bad}/preview", headers=headers, json={"lead_id": lead_id})
    assert refused.status_code == 400
    assert refused.get_json()["problems"] == ["body (English), line 1, column 7: `config` is not allowed"]


def test_send_test_to_me_arrives_over_smtp_with_both_parts(app, admin_client, smtp_server):
    english(admin_client)
    app.config.update(smtp_server.config(), BIGLEDGER_MAIL_FROM="BigLedger <crm@bigledger.example>")
    lead_id = make_lead(app, name="<b>Alex</b>", language="en")
    pk = make_template(app, html_en="<p>Hello {{ lead.name }}</p><p><a href=\"https://bigledger.example/demo\">"
                                    "Book a demo</a></p>")
    path = f"/crm/email-templates/preview/{pk}?lead={lead_id}"
    response = admin_client.post(f"/crm/email-templates/send-test/{pk}", data={
        "csrf_token": csrf_token(admin_client, path), "lead": str(lead_id), "language": ""})
    assert response.status_code == 302
    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "is on its way to admin@example.com" in page
    assert smtp_server.recorder.received == []  # queued in the transaction, sent by the scheduler
    assert send_due(app) == {"sent": 1, "retry": 0, "failed": 0}
    [(_sender, recipients, _raw)] = smtp_server.recorder.received
    assert recipients == ["admin@example.com"]
    [mail] = smtp_server.recorder.messages()
    assert mail["Subject"] == "[Test] Hello <b>Alex</b>"
    assert mail.get_content_type() == "multipart/alternative"
    assert mail.get_body(("plain",)).get_content().strip() == \
        "Hello <b>Alex</b>\n\nBook a demo (https://bigledger.example/demo)"
    assert "<p>Hello &lt;b&gt;Alex&lt;/b&gt;</p>" in mail.get_body(("html",)).get_content()
    with app.app_context():
        assert db.session.scalar(select(Message.source)) == "nurture:test"


def test_a_template_is_saved_on_the_screen_and_a_stale_edit_is_refused(app, admin_client):
    english(admin_client)
    data = screen_data(admin_client, "/crm/email-templates/add", subject_zh="{{ lead.name }}，您好",
                       html_zh="<p>{{ lead.name }}</p>")
    assert admin_client.post("/crm/email-templates/add", data=data).status_code == 302
    with app.app_context():
        template = db.session.scalar(select(EmailTemplate))
        pk, version = template.id, template.version
        assert (template.name, template.subject_en, template.html_en) == ("春季跟进", None, None)
    shown = admin_client.get(f"/crm/email-templates/show/{pk}").get_data(as_text=True)
    assert f"/crm/email-templates/action/preview_template/{pk}" in shown
    opened = admin_client.post(f"/crm/email-templates/action/preview_template/{pk}",
                               data={"csrf_token": csrf_token(admin_client, f"/crm/email-templates/show/{pk}")})
    assert opened.headers["Location"].endswith(f"/crm/email-templates/preview/{pk}")
    assert "春季跟进" in admin_client.get("/crm/email-templates/list/").get_data(as_text=True)
    edit = f"/crm/email-templates/edit/{pk}"
    form = admin_client.get(edit).get_data(as_text=True)
    assert f'name="loaded_version" type="hidden" value="{version}"' in form
    changed = screen_data(admin_client, edit, subject_zh="新主题", html_zh="<p>{{ lead.name }}</p>",
                          loaded_version=str(version))
    del changed["marketing"]  # a service e-mail: the box is left unticked
    assert admin_client.post(edit, data=changed).status_code == 302
    stale = screen_data(admin_client, edit, subject_zh="旧的", html_zh="<p>x</p>", loaded_version=str(version))
    page = admin_client.post(edit, data=stale).get_data(as_text=True)
    assert "changed by someone else since you opened it (now version 2)" in page
    with app.app_context():
        saved = db.session.get(EmailTemplate, pk)
        assert (saved.subject_zh, saved.marketing, saved.active) == ("新主题", False, True)


def test_a_sales_rep_without_the_template_permission_is_refused_and_marketing_may(app, client):
    add_user(app, "rep", "Sales Rep")
    add_user(app, "marketer", "Marketing")
    pk = make_template(app)
    lead_id = make_lead(app)
    rep = auth(client, "rep")
    assert client.get("/api/v1/crm/email_template/", headers=rep).status_code in (401, 403)
    assert client.post(f"/api/v1/crm/email_template/{pk}/preview", headers=rep,
                       json={"lead_id": lead_id}).status_code in (401, 403)
    assert client.post("/api/v1/crm/email_template/", headers=rep, json={
        "name": "x", "subject_zh": "x", "html_zh": "x"}).status_code in (401, 403)
    login(client, "rep")
    for path in ("/crm/email-templates/list/", f"/crm/email-templates/preview/{pk}",
                 f"/crm/email-templates/show/{pk}"):
        response = client.get(path)
        assert response.status_code == 403 or response.status_code == 302 and \
            "email-templates" not in response.headers["Location"], path
    client.get("/logout/")
    marketer = auth(client, "marketer")
    assert client.get("/api/v1/crm/email_template/", headers=marketer).status_code == 200
    created = client.post("/api/v1/crm/email_template/", headers=marketer, json={
        "name": "营销", "subject_zh": "{{ lead.name }}", "html_zh": "<p>{{ lead.name }}</p>"})
    assert created.status_code == 201, created.get_json()
    taken = client.post("/api/v1/crm/email_template/?_l_=en", headers=marketer, json={
        "name": "营销", "subject_zh": "x", "html_zh": "<p>x</p>"})
    assert taken.status_code == 400 and taken.get_json()["problems"] == ["name: 营销 is used by another template"]
    login(client, "marketer")
    assert client.get("/crm/email-templates/list/").status_code == 200



def test_a_template_used_by_a_sequence_step_cannot_be_deleted(app, client):
    add_user(app, "admin", "Admin")
    pk, unused = make_template(app), make_template(app, name="未用")
    with app.app_context():
        sequence = Sequence(name="春季培育")
        db.session.add(sequence)
        db.session.flush()
        db.session.add(SequenceStep(sequence_id=sequence.id, position=1, kind="email", template_id=pk))
        db.session.commit()
    headers = auth(client, "admin")
    assert client.delete(f"/api/v1/crm/email_template/{pk}", headers=headers).status_code == 422
    assert client.delete(f"/api/v1/crm/email_template/{unused}", headers=headers).status_code == 200
    with app.app_context():
        assert db.session.scalars(select(EmailTemplate.id)).all() == [pk]
