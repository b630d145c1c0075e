"""Security baseline: anonymous access, JWT, OpenAPI, login rate limit, API-only accounts, record rules."""
import re
from urllib.parse import urlsplit

import pytest
from flask import jsonify

from bigledger_core.db import db
from tests.conftest import add_user, api_token, login
from tests.sample_plugin.models import SampleNote

# Routes anyone may open without logging in: reviewed, and kept short on purpose.
PUBLIC_ENDPOINTS = {
    "HomeView.index",          # landing page: a login button, no data
    "AuthDBView.login",        # the login form
    "AuthDBView.logout",
    "LocaleView.index",        # language switch: a redirect
    "UtilView.back",           # a redirect to the previous page
    "health",                  # database reachability and module names only
    "static", "appbuilder.static",
    "SecurityApi.login", "SecurityApi.refresh",  # JWT login/refresh (refuse without credentials)
    "crm_tracking.pixel",  # e-mail open pixel: the same 1×1 GIF for any token, counts only signed ones
}


def _sample_url(rule) -> str:
    values = {}
    for arg, converter in rule._converters.items():
        values[arg] = "1" if type(converter).__name__ == "IntegerConverter" else "x"
    return rule.build(values, append_unknown=False)[1]


def anonymous_leaks(app):
    """Every (method, url, status) an anonymous client gets real content from, outside the allow-list."""
    client = app.test_client()
    adapter = app.url_map.bind("localhost")
    leaks = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = _sample_url(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method)
            status = response.status_code
            if status in (401, 403, 404, 405, 400):
                continue
            if status in (301, 302, 303):  # a redirect is fine when it lands on a public page
                target = urlsplit(response.headers.get("Location", "")).path
                if adapter.match(target, method="GET")[0] in PUBLIC_ENDPOINTS:
                    continue
            leaks.append((method, url, status))
    return leaks


def test_no_route_answers_an_anonymous_client_with_data(app):
    assert anonymous_leaks(app) == []


def test_the_route_walk_catches_a_public_route(make_app):
    app = make_app()

    @app.route("/leaky")
    def leaky():
        return jsonify({"secret": 42})

    assert anonymous_leaks(app) == [("GET", "/leaky", 200)]


def test_jwt_login_gives_api_access_and_openapi(app, client):
    add_user(app, "admin", "Admin")
    assert client.get("/api/v1/_openapi").status_code == 401
    assert client.post("/api/v1/security/login", json={"username": "admin", "password": "wrong",
                                                       "provider": "db"}).status_code == 401
    token = api_token(client, "admin")
    spec = client.get("/api/v1/_openapi", headers={"Authorization": f"Bearer {token}"})
    assert spec.status_code == 200
    assert "/api/v1/sample_note/" in spec.get_json()["paths"]


def test_login_is_rate_limited(app, client):
    add_user(app, "admin", "Admin")
    statuses = [client.post("/api/v1/security/login", json={"username": "admin", "password": "bad",
                                                            "provider": "db"}).status_code for _ in range(12)]
    assert statuses[0] == 401
    assert statuses[-1] == 429
    form = [login(client, "admin", "bad").status_code for _ in range(12)]
    assert form[-1] == 429


def test_an_api_only_account_cannot_use_the_web_login(app, client):
    add_user(app, "robot", "Integrator")
    response = login(client, "robot")
    assert "/login/" in response.headers.get("Location", "") or response.status_code == 200
    assert client.get("/").get_data(as_text=True).count("Log in") + \
        client.get("/").get_data(as_text=True).count("登录") >= 1
    token = api_token(client, "robot")
    listing = client.get("/api/v1/sample_note/", headers={"Authorization": f"Bearer {token}"})
    assert listing.status_code == 200


def _make_teams(app):
    """manager manages 'Sales' whose sub-team 'East' has rep1 and rep2; rep3 is in 'West' alone."""
    from bigledger_core.models import Team

    ids = {name: add_user(app, name, role) for name, role in
           [("manager", "Sales Rep"), ("rep1", "Sales Rep"), ("rep2", "Sales Rep"), ("rep3", "Sales Rep"),
            ("admin", "Admin"), ("viewer", "Read-only")]}
    with app.app_context():
        sm = app.appbuilder.sm
        users = {name: sm.get_user_by_id(uid) for name, uid in ids.items()}
        sales = Team(name="Sales", manager=users["manager"])
        east = Team(name="East", parent=sales, members=[users["rep1"], users["rep2"]])
        west = Team(name="West", members=[users["rep3"]])
        db.session.add_all([sales, east, west])
        db.session.flush()
        db.session.add_all([
            SampleNote(title="rep1 own", owner_id=ids["rep1"], team_id=east.id),
            SampleNote(title="rep2 own", owner_id=ids["rep2"], team_id=east.id),
            SampleNote(title="rep3 own", owner_id=ids["rep3"], team_id=west.id),
            SampleNote(title="unassigned"),
        ])
        db.session.commit()


@pytest.mark.parametrize("user,expected", [
    ("rep1", {"rep1 own", "rep2 own"}),
    ("rep3", {"rep3 own"}),
    ("manager", {"rep1 own", "rep2 own"}),
    ("admin", {"rep1 own", "rep2 own", "rep3 own", "unassigned"}),
])
def test_record_rules_by_owner_and_team(app, client, user, expected):
    _make_teams(app)
    token = api_token(client, user)
    rows = client.get("/api/v1/sample_note/", headers={"Authorization": f"Bearer {token}"}).get_json()["result"]
    assert {row["title"] for row in rows} == expected


def test_record_rules_apply_to_single_records_and_screens(app, client):
    _make_teams(app)
    with app.app_context():
        hidden = db.session.query(SampleNote).filter_by(title="rep3 own").one().id
    token = api_token(client, "rep1")
    assert client.get(f"/api/v1/sample_note/{hidden}", headers={"Authorization": f"Bearer {token}"}).status_code == 404
    login(client, "rep1")
    page = client.get("/samplenoteview/list/").get_data(as_text=True)
    assert "rep2 own" in page and "rep3 own" not in page


def test_a_new_record_is_owned_by_its_creator_and_their_team(app, client):
    _make_teams(app)
    token = api_token(client, "rep3")
    created = client.post("/api/v1/sample_note/", json={"title": "fresh"},
                          headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.get_data(as_text=True)
    with app.app_context():
        note = db.session.query(SampleNote).filter_by(title="fresh").one()
        assert note.owner.username == "rep3" and note.team.name == "West"


def test_read_only_users_see_everything_and_change_nothing(app, client):
    _make_teams(app)
    login(client, "viewer")
    page = client.get("/samplenoteview/list/").get_data(as_text=True)
    assert "rep3 own" in page and "rep1 own" in page
    assert client.get("/samplenoteview/add").status_code in (302, 403)
    assert client.get("/users/list/").status_code in (302, 403)
    assert re.search(r"/modules/", client.get("/").get_data(as_text=True)) is None


def test_a_permission_given_to_the_public_role_applies_at_once_and_is_taken_back(app, client):
    with app.app_context():
        sm = app.appbuilder.sm
        public = sm.find_role("Public")
        permission = sm.find_permission_view_menu("can_get", "SampleNote")
    assert client.get("/api/v1/sample_note/").status_code == 401
    with app.app_context():
        sm.add_permission_role(sm.find_role("Public"), sm.find_permission_view_menu("can_get", "SampleNote"))
    assert client.get("/api/v1/sample_note/").status_code == 200
    with app.app_context():
        sm.del_permission_role(sm.find_role("Public"), sm.find_permission_view_menu("can_get", "SampleNote"))
    assert client.get("/api/v1/sample_note/").status_code == 401
    assert public is not None and permission is not None


def test_a_signed_in_request_reads_the_user_with_roles_and_groups_in_one_statement(app, client):
    from sqlalchemy import event

    add_user(app, "rep", "Sales Rep")
    token = api_token(client, "rep")
    client.get("/api/v1/lead/", headers={"Authorization": f"Bearer {token}"})  # the worker reads Public once
    statements = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert client.get("/api/v1/lead/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    security = [s for s in statements if re.search(r"\bab_(user|role|group|permission)", s)]
    assert len(security) == 1, security  # the user, their roles and groups; the Public role is remembered
    assert len([s for s in statements if "bl_team" in s]) == 1
