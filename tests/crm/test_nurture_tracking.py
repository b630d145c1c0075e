"""Tracking in nurturing e-mails: links rewritten to signed click addresses that carry no target, an open
pixel, the visible unsubscribe footer; opens and clicks counted on the step run and on the lead (so the
scoring rule 邮件开启 > 3 sees them); tampered or old tokens; the unsubscribe page (GET asks, POST does,
RFC 8058 one-click without CSRF); the suppression list; rate and size limits on the public addresses."""
from __future__ import annotations

import html
import re
import time

import pytest
from sqlalchemy import func, select

from bigledger_core.db import db
from plugins.crm.leads.models import Lead
from plugins.crm.leads.services import load_rule_set
from plugins.crm.nurture import tracking
from plugins.crm.nurture.models import (
    ConsentRecord,
    Enrollment,
    EnrollmentStep,
    Sequence,
    SequenceStep,
    Suppression,
)

EMAIL = "wang.xm@example.com"
HTML = ('<html><body><p>王小明，您好！</p>'
        '<p><a href="https://shop.example.com/p?id=1&amp;utm=mail">产品</a> '
        "<a class='x' href='http://example.com/pricing'>定价</a> "
        '<a href="mailto:sales@example.com">写信</a> <a href="tel:+861012345678">电话</a> '
        '<a href="#top">顶部</a> <a data-href="https://no.example.com" href=https://blog.example.com/a>博客</a> '
        '<a href="https://shop.example.com/p?id=1&amp;utm=mail">再看一次</a></p></body></html>')
LINKS = ["https://shop.example.com/p?id=1&utm=mail", "http://example.com/pricing", "https://blog.example.com/a"]


def make_run(app, *, email: str = EMAIL, consent: bool = True, links=None) -> tuple[int, int, int]:
    """A lead enrolled in a sequence whose e-mail step ran: (lead id, enrollment id, step id)."""
    with app.app_context():
        lead = Lead(name="王小明", email=email, consent=consent, source="form", search_text="")
        sequence = Sequence(name=f"欢迎 {email}", status="active")
        db.session.add_all([lead, sequence])
        db.session.flush()
        step = SequenceStep(sequence_id=sequence.id, position=1, kind="email", name="欢迎邮件")
        db.session.add(step)
        db.session.flush()
        enrollment = Enrollment(sequence_id=sequence.id, lead_id=lead.id, status="active", step_id=step.id)
        db.session.add(enrollment)
        db.session.flush()
        db.session.add(EnrollmentStep(enrollment_id=enrollment.id, step_id=step.id, sequence_id=sequence.id,
                                      outcome="sent", links=LINKS if links is None else links))
        db.session.commit()
        return lead.id, enrollment.id, step.id


def finished(app, enrollment_id: int, step_id: int, *, language: str = "en", body: str = HTML,
             text: str = "王小明，您好！"):
    with app.app_context():
        url = tracking.unsubscribe_url(enrollment_id=enrollment_id, step_id=step_id, address=EMAIL)
        out_html, out_text, links = tracking.finish(body, text, enrollment_id=enrollment_id, step_id=step_id,
                                                    unsubscribe_url=url, language=language)
    return out_html, out_text, links, url


def hrefs(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'<a\b[^>]*?\shref="([^"]*)"', page)]


def path(url: str) -> str:
    return "/" + url.split("//", 1)[1].split("/", 1)[1]


def pixel_of(page: str) -> str:
    return path(re.search(r'<img src="([^"]+)"', page).group(1))


def step_run(app, enrollment_id: int) -> EnrollmentStep:
    with app.app_context():
        run = db.session.scalar(select(EnrollmentStep).where(EnrollmentStep.enrollment_id == enrollment_id))
        db.session.expunge_all()
        return run


def lead_of(app, lead_id: int) -> Lead:
    with app.app_context():
        lead = db.session.get(Lead, lead_id)
        db.session.expunge_all()
        return lead


# -- finishing an e-mail ----------------------------------------------------------------------------------

def test_finish_tracks_http_links_by_index_only_and_adds_the_pixel_and_the_footer(app):
    _lead, enrollment_id, step_id = make_run(app)
    out_html, out_text, links, unsubscribe = finished(app, enrollment_id, step_id)
    assert links == LINKS  # each address once, in order, entities decoded
    found = hrefs(out_html)
    clicks = [h for h in found if "/crm/t/c/" in h]
    assert len(clicks) == 4 and clicks[0] == clicks[3]  # the same address twice is the same link
    for href in clicks:
        assert href.startswith("http://127.0.0.1:8080/crm/t/c/")
        token = href.rsplit("/", 1)[1]
        assert "example.com" not in token and "shop" not in token
        assert token.startswith(f"{enrollment_id}.{step_id}.")
    assert {"mailto:sales@example.com", "tel:+861012345678", "#top", unsubscribe} <= set(found)
    assert 'data-href="https://no.example.com"' in out_html  # only href is an address
    assert re.search(r'<img src="http://127\.0\.0\.1:8080/crm/t/o/[^"]+\.gif" width="1" height="1"', out_html)
    assert out_html.index("<img") < out_html.index("</body>")
    assert "Unsubscribe" in out_html and out_text.endswith(f"Unsubscribe: {unsubscribe}\n")


def test_finish_adds_no_footer_when_the_template_shows_the_unsubscribe_link(app):
    with app.app_context():
        url = tracking.unsubscribe_url(enrollment_id=5, step_id=6)
        body = f'<p>Hi <a href="{url}">退订</a></p>'
        out_html, out_text, links = tracking.finish(body, f"退订：{url}", enrollment_id=5, step_id=6,
                                                    unsubscribe_url=url, language="zh")
    assert links == [] and out_html.count(url) == 1 and out_text == f"退订：{url}"
    assert out_html.startswith(body) and "<img" in out_html  # no </body>: the pixel is appended


def test_the_footer_follows_the_recipients_language(app):
    from flask_babel import force_locale, gettext

    with app.app_context():
        url = tracking.unsubscribe_url(address=EMAIL)
        zh_html, zh_text, _ = tracking.finish("<p>你好</p>", "你好", enrollment_id=1, step_id=1, unsubscribe_url=url,
                                              language="zh")
        en_html, en_text, _ = tracking.finish("<p>Hi</p>", "Hi", enrollment_id=1, step_id=1, unsubscribe_url=url,
                                              language="en")
        with force_locale("zh"):
            zh_word = gettext("Unsubscribe")
    assert f"{zh_word}: {url}" in zh_text and f">{zh_word}</a>" in zh_html
    assert f"Unsubscribe: {url}" in en_text and ">Unsubscribe</a>" in en_html


# -- opens and clicks --------------------------------------------------------------------------------------

def test_opens_count_on_the_step_run_and_the_lead_so_that_the_scoring_rule_sees_them(app, client):
    lead_id, enrollment_id, step_id = make_run(app)
    with app.app_context():
        load_rule_set(db.session, {"评分规则": [{"标准": "邮件开启 > 3", "分数": 5}], "资质认定阈值": 50})
        db.session.commit()
    pixel = pixel_of(finished(app, enrollment_id, step_id)[0])
    for expected_score in (0, 0, 0, 5):
        response = client.get(pixel)
        assert response.status_code == 200 and response.mimetype == "image/gif"
        assert response.data.startswith(b"GIF89a") and "no-store" in response.headers["Cache-Control"]
        assert lead_of(app, lead_id).score == expected_score
    run = step_run(app, enrollment_id)
    assert run.opens == 4 and run.opened_at is not None and run.clicks == 0
    assert lead_of(app, lead_id).email_opens == 4


def test_a_click_goes_only_to_the_stored_link_and_counts_it_and_the_open(app, client):
    lead_id, enrollment_id, step_id = make_run(app)
    out_html = finished(app, enrollment_id, step_id)[0]
    click = path([h for h in hrefs(out_html) if "/crm/t/c/" in h][1])
    response = client.get(click)
    assert response.status_code == 302 and response.headers["Location"] == "http://example.com/pricing"
    # an address in the query string or a second path changes nothing
    for tricked in (f"{click}?url=https://evil.example.com", f"{click}?next=//evil.example.com&to=https://evil.example"):
        again = client.get(tricked)
        assert again.status_code == 302 and again.headers["Location"] == "http://example.com/pricing"
    run = step_run(app, enrollment_id)
    assert run.clicks == 3 and run.clicked_at is not None
    assert run.opens == 1  # images were blocked: the click shows the e-mail was opened
    lead = lead_of(app, lead_id)
    assert (lead.email_clicks, lead.email_opens) == (3, 1)


def test_a_link_index_the_step_run_did_not_store_goes_nowhere(app, client):
    _lead, enrollment_id, step_id = make_run(app, links=["https://example.com/only"])
    with app.app_context():
        token = tracking._signer(tracking.CLICK_SALT).sign(f"{enrollment_id}.{step_id}.7").decode()
        unknown = tracking._signer(tracking.CLICK_SALT).sign("999999.999999.0").decode()
    for address in (f"/crm/t/c/{token}", f"/crm/t/c/{unknown}"):
        response = client.get(address, headers={"Accept-Language": "en"})
        assert response.status_code == 404 and "Location" not in response.headers
        assert "no longer leads anywhere" in response.get_data(as_text=True)
    assert step_run(app, enrollment_id).clicks == 0


def test_tampered_tokens_get_a_harmless_page_or_the_gif_and_count_nothing(app, client):
    lead_id, enrollment_id, step_id = make_run(app)
    out_html = finished(app, enrollment_id, step_id)[0]
    click = path(next(h for h in hrefs(out_html) if "/crm/t/c/" in h))
    pixel = pixel_of(out_html)
    prefix, signature = click.rsplit(".", 1)
    forged_click = [f"{prefix}.{signature[:-2]}xx", click.replace(f"/{enrollment_id}.", f"/{enrollment_id + 1}."),
                    "/crm/t/c/garbage", "/crm/t/c/" + "9" * 700,
                    # a genuine open token is not a click token (one salt per purpose)
                    "/crm/t/c/" + pixel.rsplit("/", 1)[1][:-4]]
    for address in forged_click:
        response = client.get(address, headers={"Accept-Language": "en"})
        page = response.get_data(as_text=True)
        assert response.status_code == 404 and "Location" not in response.headers, address
        assert "This link is not valid" in page and "Traceback" not in page and "example.com" not in page
    for address in (pixel.replace(".gif", "x.gif"), "/crm/t/o/1.2.abc.def.gif", "/crm/t/o/%7B%7B7*7%7D%7D.gif"):
        response = client.get(address)
        assert response.status_code == 200 and response.data.startswith(b"GIF89a")
    run = step_run(app, enrollment_id)
    assert (run.opens, run.clicks) == (0, 0)
    assert lead_of(app, lead_id).email_opens == 0


def test_an_old_e_mail_still_redirects_but_counts_nothing(app, client, monkeypatch):
    lead_id, enrollment_id, step_id = make_run(app)
    real = time.time
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: real() - 400 * 86400)  # made 400 days ago (limit: 365)
        out_html = finished(app, enrollment_id, step_id)[0]
    click = path(next(h for h in hrefs(out_html) if "/crm/t/c/" in h))
    response = client.get(click)
    assert response.status_code == 302 and response.headers["Location"] == LINKS[0]
    assert client.get(pixel_of(out_html)).status_code == 200
    run = step_run(app, enrollment_id)
    assert (run.opens, run.clicks) == (0, 0)
    lead = lead_of(app, lead_id)
    assert (lead.email_opens, lead.email_clicks) == (0, 0)
    app.config["BIGLEDGER_TRACKING_MAX_DAYS"] = 500
    client.get(click)
    assert step_run(app, enrollment_id).clicks == 1


# -- unsubscribing -----------------------------------------------------------------------------------------

def state(app, lead_id: int, enrollment_id: int):
    with app.app_context():
        rows = db.session.scalars(select(Suppression)).all()
        consent = db.session.scalars(select(ConsentRecord)).all()
        lead = db.session.get(Lead, lead_id)
        enrollment = db.session.get(Enrollment, enrollment_id)
        run = db.session.scalar(select(EnrollmentStep).where(EnrollmentStep.enrollment_id == enrollment_id))
        db.session.expunge_all()
        return rows, consent, lead, enrollment, run


def test_the_unsubscribe_page_asks_first_and_the_button_unsubscribes(app, client):
    lead_id, enrollment_id, step_id = make_run(app)
    url = finished(app, enrollment_id, step_id)[3]
    page = client.get(path(url), headers={"Accept-Language": "en"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="bl-nurture-confirm"' in text and "w***@example.com" in text
    assert EMAIL not in text
    assert client.head(path(url)).status_code == 200  # link checkers
    rows, consent, lead, enrollment, run = state(app, lead_id, enrollment_id)
    assert rows == [] and consent == [] and lead.consent and enrollment.status == "active"  # a GET changes nothing

    done = client.post(path(url), data={"confirm": "1"}, headers={"Accept-Language": "en"})
    assert done.status_code == 200 and "is unsubscribed" in done.get_data(as_text=True)
    rows, consent, lead, enrollment, run = state(app, lead_id, enrollment_id)
    assert [(r.address, r.reason, r.source, r.lead_id) for r in rows] == [(EMAIL, "unsubscribed", "link", lead_id)]
    assert [(c.action, c.source, c.lead_id, c.address_hash) for c in consent] == \
        [("withdrawn", "link", lead_id, tracking.address_hash(EMAIL))]
    assert lead.consent is False
    assert (enrollment.status, enrollment.exit_reason) == ("exited", "unsubscribed")
    assert run.unsubscribed_at is not None
    again = client.get(path(url), headers={"Accept-Language": "en"})
    assert "is unsubscribed" in again.get_data(as_text=True) and 'id="bl-nurture-confirm"' not in again.get_data(
        as_text=True)


def test_one_click_unsubscribe_from_a_mail_client_needs_no_csrf_token_and_is_idempotent(app, client):
    assert app.config["WTF_CSRF_ENABLED"]
    lead_id, enrollment_id, step_id = make_run(app)
    url = finished(app, enrollment_id, step_id)[3]
    for _ in range(2):  # RFC 8058: the client POSTs this body to the List-Unsubscribe address
        response = client.post(path(url), data="List-Unsubscribe=One-Click",
                               content_type="application/x-www-form-urlencoded")
        assert response.status_code == 200
    rows, consent, lead, enrollment, _run = state(app, lead_id, enrollment_id)
    assert [(r.reason, r.source) for r in rows] == [("unsubscribed", "one-click")]
    assert [c.action for c in consent] == ["withdrawn"] and not lead.consent and enrollment.status == "exited"
    with app.app_context():
        assert tracking.suppressed(db.session, [EMAIL.upper()]) == {EMAIL.upper()}


def test_an_unsubscribe_link_for_an_address_alone_and_the_page_in_chinese(app, client):
    with app.app_context():
        url = tracking.unsubscribe_url(address="Li.Lei@Example.COM")
    page = client.get(path(url), headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert page.status_code == 200 and 'lang="zh-CN"' in page.get_data(as_text=True)
    english = client.get(path(url) + "?lang=en").get_data(as_text=True)
    assert 'lang="en"' in english and "Stop sending these e-mails to l***@example.com?" in english
    assert client.post(path(url) + "?lang=en").status_code == 200
    with app.app_context():
        row = db.session.scalar(select(Suppression))
        assert (row.address, row.lead_id) == ("li.lei@example.com", None)


def test_forged_unsubscribe_links_and_markup_change_nothing(app, client):
    with app.app_context():
        url = tracking.unsubscribe_url(address="a@{{7*7}}<b>x</b>.example")
        other_purpose = tracking._signer(tracking.CLICK_SALT).sign("1.2.0").decode()
    page = client.get(path(url) + "?lang={{7*7}}").get_data(as_text=True)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x" not in page and "49" not in page and "{{7*7}}" in page
    token = path(url).rsplit("/", 1)[1]
    for forged in (token[:-3] + "abc", other_purpose, "x", token.replace(".", "..", 1)):
        response = client.post(f"/crm/t/u/{forged}?lang=en", data="List-Unsubscribe=One-Click",
                               content_type="application/x-www-form-urlencoded", headers={"Accept-Language": "en"})
        assert response.status_code == 404 and "This link is not valid" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0


# -- the suppression list ----------------------------------------------------------------------------------

def test_suppress_is_idempotent_and_suppressed_checks_many_addresses_by_digest(app):
    _lead, enrollment_id, _step = make_run(app, email="bounce@example.com")
    with app.app_context():
        first = tracking.suppress(db.session, "Bounce@Example.com ", reason="bounced", source="smtp 550")
        second = tracking.suppress(db.session, "bounce@example.com", reason="unsubscribed", source="link")
        db.session.commit()
        assert first.id == second.id and (second.reason, second.address) == ("bounced", "bounce@example.com")
        assert second.address_hash == tracking.address_hash("BOUNCE@example.com")
        assert db.session.get(Enrollment, enrollment_id).exit_reason == "bounced"
        many = [f"person{n}@example.com" for n in range(5000)] + ["BOUNCE@example.com", "", "bounce@example.com"]
        assert tracking.suppressed(db.session, many) == {"BOUNCE@example.com", "bounce@example.com"}
        assert tracking.suppressed(db.session, []) == set()
        with pytest.raises(tracking.TrackingError):
            tracking.suppress(db.session, "not an address", reason="manual", source="test")
        with pytest.raises(tracking.TrackingError):
            tracking.suppress(db.session, "x@example.com", reason="because", source="test")
        assert tracking.unsuppress(db.session, "BOUNCE@example.com") is True
        db.session.commit()
        assert tracking.suppressed(db.session, ["bounce@example.com"]) == set()
        assert tracking.unsuppress(db.session, "bounce@example.com") is False


# -- limits ------------------------------------------------------------------------------------------------

def test_the_public_addresses_are_rate_limited_per_client(app, client):
    app.config["BIGLEDGER_PUBLIC_RATE_LIMIT"] = "3 per minute"
    _lead, enrollment_id, step_id = make_run(app)
    out_html, _text, _links, url = finished(app, enrollment_id, step_id)
    pixel = pixel_of(out_html)
    statuses = [client.get(pixel).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get(pixel)
    assert limited.data.startswith(b"GIF89a")  # still an image
    pages = [client.get(path(url) + "?lang=en") for _ in range(4)]
    assert [p.status_code for p in pages] == [200, 200, 200, 429]
    assert "Too many requests" in pages[-1].get_data(as_text=True)
    assert step_run(app, enrollment_id).opens == 3


def test_an_oversized_body_is_refused_before_it_is_read(app, client):
    _lead, enrollment_id, step_id = make_run(app)
    url = finished(app, enrollment_id, step_id)[3]
    response = client.post(path(url), data={"List-Unsubscribe": "One-Click", "padding": "x" * 10_000})
    assert response.status_code == 413
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0
