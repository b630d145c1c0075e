"""Leads: the product page's scoring rules exactly as written, facts from the API, qualification once with
its event, every lead rescored in SQL when the rules change, and `POST /api/v1/lead/` with an
Idempotency-Key."""
from __future__ import annotations

import json
import threading
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from bigledger_core.cli import cli
from bigledger_core.db import db
from plugins.crm.leads.models import Lead, ScoringRuleSet
from plugins.crm.leads.services import (
    create_lead,
    load_rule_set,
    record_fact,
    rescore_all,
)
from tests.conftest import add_user, api_token
from tests.sample_plugin import plugin as sample

SEED_FILE = Path(__file__).parent.parent / "data" / "scoring_seed.json"
SEED = SEED_FILE.read_text(encoding="utf-8")
ENGLISH = {"rules": [{"criterion": "company size > 100", "points": 20},
                     {"criterion": "industry = '科技'", "points": 15},
                     {"criterion": "visited the pricing page", "points": 10},
                     {"criterion": "downloaded the white paper", "points": 5},
                     {"criterion": "email opens > 3", "points": 5}], "threshold": 50}


def auth(client, username="admin", language="en"):
    return {"Authorization": f"Bearer {api_token(client, username)}", "Accept-Language": language}


def test_the_product_pages_rules_score_50_and_qualify_and_25_does_not(app):
    sample.CRM_EVENTS.clear()
    with app.app_context():
        load_rule_set(db.session, SEED)
        hot, _ = create_lead(db.session, Lead(name="王强", company_size=200, industry="科技", source="form"))
        warm, _ = create_lead(db.session, Lead(name="李娜", company_size=101, source="form"))
        db.session.commit()
        assert (hot.score, hot.status) == (25 + 10, "new")  # size and industry: 35 before any fact
        record_fact(db.session, hot, "访问了定价页")
        record_fact(db.session, hot, "downloaded_whitepaper")
        record_fact(db.session, warm, "email_open", count=4)
        db.session.commit()
        assert (hot.score, hot.status) == (50, "qualified") and hot.qualified_at is not None
        assert (warm.score, warm.status) == (25, "new")
        record_fact(db.session, hot, "访问了定价页")  # qualified once: no second event
        db.session.commit()
        hot_id = hot.id
    qualified = [e.payload["id"] for e in sample.CRM_EVENTS if e.name == "crm_lead_qualified"]
    assert qualified == [hot_id]


def test_english_keys_work_and_a_rule_change_rescores_every_lead_in_sql(app):
    with app.app_context():
        load_rule_set(db.session, SEED)
        for n in range(30):
            create_lead(db.session, Lead(name=f"潜客{n}", company_size=50 + n * 10, industry="科技" if n % 2 else "零售"))
        db.session.commit()
        before = db.session.scalar(select(func.count()).where(Lead.status == "qualified"))
        assert before == 0
        lowered = dict(ENGLISH, threshold=35)
        row = load_rule_set(db.session, json.dumps(lowered))
        assert rescore_all(db.session) == 30
        db.session.commit()
        assert row.version == 2 and row.rescored_at is not None and row.rescored_count == 30
        qualified = db.session.scalars(select(Lead.name).where(Lead.status == "qualified")).all()
        # company size > 100 (n >= 6) and industry 科技 (odd n) = 35 points
        assert sorted(qualified) == sorted(f"潜客{n}" for n in range(30) if n >= 6 and n % 2)


def test_bad_rules_are_refused_with_the_rule_and_position_and_nothing_is_saved(app, client):
    add_user(app, "admin", "Admin")
    bad = SEED.replace("公司规模 > 100", "公司规模 > ").replace("行业 = '科技'", "部门 = '科技'")
    response = client.post("/api/v1/crm/scoring/", data=bad, headers={**auth(client, language="zh"),
                                                                      "Content-Type": "text/plain"})
    assert response.status_code == 400
    problems = response.get_json()["problems"]
    assert problems[0] == "规则 1（公司规模 > ）：第 8 个字符：“>” 之后应为一个值"
    assert any("部门" in p and "公司规模" in p for p in problems)  # unknown name, with the known names
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ScoringRuleSet)) == 0
    ok = client.post("/api/v1/crm/scoring/?rescore=now", json=json.loads(SEED), headers=auth(client))
    assert ok.status_code == 201 and ok.get_json()["version"] == 1
    current = client.get("/api/v1/crm/scoring/", headers=auth(client)).get_json()
    assert current["threshold"] == 50 and current["document"]["rules"][0]["criterion"] == "公司规模 > 100"


def test_the_lead_api_honours_idempotency_keys_also_under_concurrency(app, client):
    add_user(app, "integrator", "Integrator")
    headers = {**auth(client, "integrator"), "Idempotency-Key": "order-2026-0001"}
    body = {"name": "赵敏", "email": "Zhao.Min@Example.COM", "phone": "138 0013 8000", "source": "api",
            "utm_source": "baidu", "company_size": 500}
    first = client.post("/api/v1/lead/", json=body, headers=headers)
    second = client.post("/api/v1/lead/", json=body, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert first.get_json()["id"] == second.get_json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    result = first.get_json()["result"]
    assert result["email"] == "zhao.min@example.com" and result["phone_e164"] == "+8613800138000"

    codes = []

    def post(n):
        with app.test_client() as other:
            codes.append(other.post("/api/v1/lead/", json={"name": f"并发{n}", "source": "api"},
                                    headers={**headers, "Idempotency-Key": "race-1"}).status_code)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes).count(201) == 1 and len(codes) == 6
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Lead.idempotency_key == "race-1")) == 1
    bad = client.post("/api/v1/lead/", json={"name": " ", "email": "not-an-email", "source": "api"},
                      headers=auth(client, "integrator"))
    assert bad.status_code == 400 and "name" in bad.get_json()["message"] and "email" in bad.get_json()["message"]


def test_facts_by_api_rescore_and_explain_the_score(app, client):
    add_user(app, "admin", "Admin")
    h = auth(client)
    client.post("/api/v1/crm/scoring/", json=json.loads(SEED), headers=h)
    lead_id = client.post("/api/v1/lead/", json={"name": "孙丽", "email": "sun.li@example.com", "company_size": 300,
                                                 "industry": "科技"}, headers=h).get_json()["id"]
    by_id = client.post(f"/api/v1/crm/lead/{lead_id}/facts", json={"facts": ["visited the pricing page"]}, headers=h)
    assert by_id.get_json()["score"] == 45
    by_email = client.post("/api/v1/crm/lead/facts", json={"email": "SUN.LI@example.com",
                                                            "facts": ["下载了白皮书"]}, headers=h)
    assert by_email.get_json()["result"] == [{"id": lead_id, "score": 50, "status": "qualified"}]
    unknown = client.post(f"/api/v1/crm/lead/{lead_id}/facts", json={"facts": ["去过火星"]}, headers=h)
    assert unknown.status_code == 400 and "访问了定价页" in unknown.get_json()["message"]
    why = client.get(f"/api/v1/crm/lead/{lead_id}/score", headers=h).get_json()
    assert why["threshold"] == 50
    assert [(r["criterion"], r["points"], r["fired"]) for r in why["rules"]] == [
        ("公司规模 > 100", 20, True), ("行业 = '科技'", 15, True), ("访问了定价页", 10, True), ("下载了白皮书", 5, True),
        ("邮件开启 > 3", 5, False)]
    no_reason = client.post(f"/api/v1/crm/lead/{lead_id}/disqualify", json={}, headers=h)
    assert no_reason.status_code == 400


def test_scoring_commands(app, tmp_path):
    def run(*args):
        with app.app_context():
            return CliRunner().invoke(cli, list(args), env={"LC_ALL": "en_US.UTF-8"}, catch_exceptions=False)

    yaml_file = tmp_path / "rules.yaml"
    yaml_file.write_text("rules:\n  - criterion: company size > 100\n    points: 20\n  - criterion: 行业 =\n"
                         "    points: 15\nthreshold: 20\n", encoding="utf-8")
    refused = run("crm", "scoring", "load", str(yaml_file))
    assert refused.exit_code == 1 and "rule 2" in refused.output
    with app.app_context():
        create_lead(db.session, Lead(name="周杰", company_size=150))
        db.session.commit()
    loaded = run("crm", "scoring", "load", str(SEED_FILE))
    assert loaded.exit_code == 0 and "1 leads rescored" in loaded.output
    assert "公司规模 > 100" in run("crm", "scoring", "show").output


def test_lead_screens_score_on_save_explain_and_load_rules(app, client):
    from tests.conftest import csrf_token, login

    add_user(app, "admin", "Admin")
    login(client, "admin")
    token = csrf_token(client, "/crm/scoring/")
    refused = client.post("/crm/scoring/load", data={"csrf_token": token, "rules": SEED.replace("> 100", "> >")})
    assert "规则 1（公司规模 &gt; &gt;）：第 8 个字符" in refused.get_data(as_text=True)
    loaded = client.post("/crm/scoring/load", data={"csrf_token": token, "rules": SEED}, follow_redirects=True)
    assert "公司规模 &gt; 100" in loaded.get_data(as_text=True)
    client.post("/leadview/add", data={"csrf_token": token, "name": "吴磊", "company_size": "300",
                                       "industry": "科技", "source": "manual"}, follow_redirects=True)
    with app.app_context():
        lead = db.session.scalar(select(Lead))
        assert lead.score == 35 and lead.owner.username == "admin"
    page = client.get(f"/leadview/show/{lead.id}").get_data(as_text=True)
    assert "35" in page and "行业 = &#39;科技&#39;" in page
    client.post(f"/leadview/disqualify/{lead.id}", data={"csrf_token": token, "reason": "无预算"})
    with app.app_context():
        assert db.session.get(Lead, lead.id).status == "disqualified"


def test_the_360_view_shows_the_leads_of_the_same_person(app, client):
    from plugins.crm.models import Contact, Email

    add_user(app, "admin", "Admin")
    with app.app_context():
        zhang = Contact(full_name="张伟")
        db.session.add(zhang)
        db.session.flush()
        db.session.add(Email(contact_id=zhang.id, address="zhang.wei@example.com", is_primary=True))
        create_lead(db.session, Lead(name="张伟", email="Zhang.Wei@example.com", source="form", channel="官网"))
        create_lead(db.session, Lead(name="别人", email="other@example.com"))
        db.session.commit()
        zhang_id = zhang.id
    view = client.get(f"/api/v1/crm/customer/contact/{zhang_id}/360", headers=auth(client)).get_json()["result"]
    assert [(lead["name"], lead["channel"]) for lead in view["leads"]] == [("张伟", "官网")]


def test_the_demo_loads_the_product_pages_rules_and_scored_leads_once(app):
    from bigledger_core.demo import load_demo

    with app.app_context():
        load_demo()
        load_demo()
        leads = {lead.idempotency_key: lead for lead in db.session.scalars(select(Lead))}
        assert len(leads) == 5
        assert (leads["demo-lead-1"].score, leads["demo-lead-1"].status) == (50, "qualified")
        assert leads["demo-lead-2"].score == 25 and leads["demo-lead-2"].email_opens == 4
        assert db.session.scalar(select(func.count()).select_from(ScoringRuleSet)) == 1


def test_used_form_tokens_are_forgotten_once_they_could_only_be_refused_as_expired(app):
    import datetime as dt

    from bigledger_core.db import utcnow
    from plugins.crm.leads.form_views import forget_used_tokens
    from plugins.crm.leads.models import FormToken, LeadForm

    with app.app_context():
        form = LeadForm(name="官网", slug="site")
        db.session.add(form)
        db.session.flush()
        db.session.add_all([FormToken(nonce="old", form_id=form.id, used_at=utcnow() - dt.timedelta(hours=25)),
                            FormToken(nonce="fresh", form_id=form.id, used_at=utcnow() - dt.timedelta(hours=23))])
        db.session.commit()
        assert forget_used_tokens() == 1
        assert db.session.scalars(select(FormToken.nonce)).all() == ["fresh"]
