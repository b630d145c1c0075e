"""Search at scale (short input, ordering across the ways of matching, the statement timeout), the list count
capped at BIGLEDGER_LIST_COUNT_CAP, and the indexes of migration crm_0002."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, event, insert, text

from bigledger_core.db import db
from bigledger_core.migrate import current, downgrade, upgrade
from plugins.crm.models import Company, Contact, ContactCompany, Email
from plugins.crm.queries import search
from tests.conftest import add_user, api_token, login


def _user_id(app, username):
    with app.app_context():
        return app.appbuilder.sm.find_user(username=username).id


def _people(app):
    """张伟 (rep) at 华润万家, 张伟强 and 李伟 (rep), Mei Ling Lee (rep2)."""
    add_user(app, "admin", "Admin")
    add_user(app, "rep", "Sales Rep")
    add_user(app, "rep2", "Sales Rep")
    rep, rep2 = _user_id(app, "rep"), _user_id(app, "rep2")
    with app.app_context():
        s = db.session
        group = Company(name="华润集团", owner_id=rep)
        sub = Company(name="华润万家", parent=group, owner_id=rep)
        zhang = Contact(full_name="张伟", owner_id=rep)
        s.add_all([group, sub, zhang, Contact(full_name="张伟强", owner_id=rep), Contact(full_name="李伟", owner_id=rep),
                   Contact(family_name="Lee", given_name="Mei Ling", owner_id=rep2)])
        s.flush()
        s.add(ContactCompany(contact=zhang, company=sub, is_primary=True))
        s.commit()


def _auth(client, username="admin", language="en"):
    return {"Authorization": f"Bearer {api_token(client, username)}", "Accept-Language": language}


def _search(client, q, headers, **args):
    response = client.get("/api/v1/crm/search", query_string={"q": q, **args}, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [(r["kind"], r["name"]) for r in response.get_json()["result"]]


def test_short_input_finds_names_pinyin_initials_and_the_people_of_a_company(app, client, backend):
    _people(app)
    h = _auth(client)
    assert ("contact", "张伟") in _search(client, "zw", h)
    assert ("contact", "张伟") in _search(client, "ＺＷ", h)  # full-width
    assert _search(client, "张伟", h)[:2] == [("contact", "张伟"), ("contact", "张伟强")]  # shortest first
    assert {("contact", "张伟"), ("contact", "张伟强")} <= set(_search(client, "张", h))
    # a company found by two characters brings its people
    assert _search(client, "华润", h) == [("company", "华润万家"), ("company", "华润集团"), ("contact", "张伟")]
    assert ("contact", "Mei Ling Lee") in _search(client, "me", h)  # start of a word of a Western name
    # record rules hold for short input too
    assert _search(client, "zw", _auth(client, "rep2")) == []
    # PostgreSQL matches short input and Latin input at the start of words (its full-text index); SQLite anywhere
    assert ("contact", "Mei Ling Lee") in _search(client, "ling lee", h)
    assert ("contact", "张伟强") in _search(client, "zhang wei q", h)
    inside, latin_inside = _search(client, "伟", h), _search(client, "ing", h)
    if backend == "postgresql":
        assert inside == [] and latin_inside == []
    else:
        assert {("contact", "张伟"), ("contact", "李伟")} <= set(inside)
        assert latin_inside == [("contact", "Mei Ling Lee")]
    # Chinese input of 3 characters or more matches anywhere on both
    assert _search(client, "润万家", h) == [("company", "华润万家"), ("contact", "张伟")]


def test_each_way_of_matching_keeps_the_shortest_names_first(app, client):
    """Name matches and an e-mail-only match are merged, shortest name first, within the limit."""
    add_user(app, "admin", "Admin")
    with app.app_context():
        s = db.session
        s.add_all([Contact(full_name=f"Kilo {'x' * n}") for n in range(1, 30)])
        bo = Contact(full_name="Bo Wu")
        s.add(bo)
        s.flush()
        s.add(Email(contact=bo, address="kilo@example.com"))
        s.commit()
    h = _auth(client)
    assert _search(client, "kilo", h, limit=3) == [("contact", "Bo Wu"), ("contact", "Kilo x"),
                                                   ("contact", "Kilo xx")]
    assert len(_search(client, "kilo", h, limit=100)) == 30


def test_merged_records_are_not_found_by_short_input(app, client):
    _people(app)
    with app.app_context():
        s = db.session
        keep, lost = s.query(Contact).filter_by(full_name="张伟").one(), s.query(Contact).filter_by(full_name="李伟").one()
        lost.merged_into_id = keep.id
        s.commit()
    assert ("contact", "李伟") not in _search(client, "lw", _auth(client))


def test_short_input_uses_the_full_text_index_on_postgresql(app, backend):
    if backend != "postgresql":
        pytest.skip("the full-text index exists on PostgreSQL only")
    _people(app)
    with app.test_request_context():
        # enough rows that the planner prefers an index to reading the tables
        db.session.execute(insert(Company), [{"name": f"Firma {n}", "search_text": f"firma {n}"} for n in range(3000)])
        db.session.execute(insert(Contact), [{"full_name": f"Person {n}", "search_text": f"person {n}"}
                                             for n in range(3000)])
        db.session.commit()
        db.session.execute(text("ANALYZE crm_company, crm_contact"))
        admin = app.appbuilder.sm.find_user(username="admin")
        statements = []

        def keep(_conn, _cursor, sql, params, *_args):
            statements.append((sql, params))

        event.listen(db.engine, "before_cursor_execute", keep)
        try:
            assert search(db.session, "zw", admin)
        finally:
            event.remove(db.engine, "before_cursor_execute", keep)
        searches = [(sql, params) for sql, params in statements if "to_tsquery" in sql]
        assert len(searches) == 2  # companies, then contacts
        raw = db.session.connection().connection.driver_connection
        plans = ["\n".join(row[0] for row in raw.execute("EXPLAIN " + sql, params)) for sql, params in searches]
        assert "ix_crm_company_search_fts" in plans[0] and "ix_crm_contact_search_fts" in plans[1]


def test_a_search_past_the_timeout_is_stopped_with_a_clear_message(make_app, backend):
    if backend != "postgresql":
        pytest.skip("statement_timeout is a PostgreSQL setting")
    app = make_app(BIGLEDGER_SEARCH_TIMEOUT=0.2)
    _people(app)
    client = app.test_client()
    headers = {"en": _auth(client, language="en"), "zh": _auth(client, language="zh")}
    blocker = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    held, release = threading.Event(), threading.Event()

    def hold_lock():  # another transaction holds the table: the search waits on it until its timeout
        with blocker.begin() as conn:
            conn.execute(text("LOCK TABLE crm_company IN ACCESS EXCLUSIVE MODE"))
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert held.wait(10)
        for language, expected in (("en", "took too long"), ("zh", "耗时过长")):
            response = client.get("/api/v1/crm/search", query_string={"q": "zhangwei"}, headers=headers[language])
            assert response.status_code == 503, response.get_data(as_text=True)
            assert expected in response.get_json()["message"]
    finally:
        release.set()
        thread.join()
        blocker.dispose()
    assert ("contact", "张伟") in _search(client, "zhangwei", headers["en"])  # the next search runs normally


def _cap_app(make_app):
    app = make_app(BIGLEDGER_LIST_COUNT_CAP=2)
    add_user(app, "admin", "Admin")
    with app.app_context():
        db.session.add_all([Contact(full_name=name, title=title) for name, title in
                            [("张伟", "经理"), ("王芳", "经理"), ("李娜", "经理"), ("刘洋", "工程师")]])
        db.session.add_all([Company(name="华润集团"), Company(name="华润万家")])
        db.session.commit()
    return app


def test_the_api_list_count_stops_at_the_cap_and_says_so(make_app):
    app = _cap_app(make_app)
    client = app.test_client()
    h = _auth(client)
    everyone = client.get("/api/v1/crm/contact/", headers=h).get_json()
    assert (everyone["count"], everyone["count_capped"], len(everyone["result"])) == (2, True, 4)
    managers = client.get("/api/v1/crm/contact/", headers=h,
                          query_string={"q": "(filters:!((col:title,opr:eq,value:'工程师')))"}).get_json()
    assert (managers["count"], managers["count_capped"]) == (1, False)
    companies = client.get("/api/v1/crm/company/", headers=h).get_json()
    assert (companies["count"], companies["count_capped"]) == (2, False)  # exactly the cap is not capped
    # the rison arguments are still checked against their schema
    bad = client.get("/api/v1/crm/contact/", headers=h, query_string={"q": "(page:'first')"})
    assert bad.status_code == 400 and "Not a valid rison schema" in bad.get_json()["message"]


def test_no_cap_counts_every_row(make_app):
    app = make_app(BIGLEDGER_LIST_COUNT_CAP=0)
    add_user(app, "admin", "Admin")
    with app.app_context():
        db.session.add_all([Contact(full_name=f"Person {n}") for n in range(5)])
        db.session.commit()
    client = app.test_client()
    listed = client.get("/api/v1/crm/contact/", headers=_auth(client)).get_json()
    assert (listed["count"], listed["count_capped"]) == (5, False)


def test_the_list_screen_shows_more_than_the_cap(make_app):
    app = _cap_app(make_app)
    client = app.test_client()
    assert login(client, "admin").status_code == 302
    english = client.get("/contactview/list/?_l_=en").get_data(as_text=True)
    assert "more than 2" in english and "张伟" in english
    assert "超过 2" in client.get("/contactview/list/?_l_=zh").get_data(as_text=True)
    companies = client.get("/companyview/list/?_l_=en").get_data(as_text=True)
    assert "more than" not in companies and "华润万家" in companies


def _indexes(backend) -> set[str]:
    sql = ("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()" if backend == "postgresql"
           else "SELECT name FROM sqlite_master WHERE type = 'index'")
    with db.engine.connect() as conn:
        return set(conn.execute(text(sql)).scalars())


def test_crm_0002_adds_and_removes_its_indexes(app, backend):
    ours = {"ix_crm_company_name_lower", "ix_crm_contact_full_name_lower"}
    if backend == "postgresql":
        ours |= {"ix_crm_company_search_fts", "ix_crm_contact_search_fts"}
    with app.app_context():
        assert ours <= _indexes(backend)
        downgrade("crm_0001")
        assert current()["crm"] == "crm_0001"
        assert not ours & _indexes(backend)
        upgrade()
        assert ours <= _indexes(backend)
        db.engine.dispose()


def test_likely_duplicates_by_name_use_the_lower_name_index(app, backend):
    from plugins.crm.queries import likely_duplicates

    _people(app)
    with app.test_request_context():
        statements = []

        def keep(_conn, _cursor, sql, params, *_args):
            statements.append((sql, params))

        admin = app.appbuilder.sm.find_user(username="admin")
        company = db.session.query(Company).filter_by(name="华润万家").one()
        event.listen(db.engine, "before_cursor_execute", keep)
        try:
            assert likely_duplicates(db.session, "company", name="华润万家", user=admin) == \
                [{"kind": "company", "id": company.id, "name": "华润万家", "reasons": ["name"]}]
        finally:
            event.remove(db.engine, "before_cursor_execute", keep)
        sql, params = next((sql, params) for sql, params in statements if "lower(crm_company.name)" in sql)
        raw = db.session.connection().connection.driver_connection
        if backend == "postgresql":
            raw.execute("SET enable_seqscan = off")
        explain = "EXPLAIN " if backend == "postgresql" else "EXPLAIN QUERY PLAN "
        plan = " ".join(str(row) for row in raw.execute(explain + sql, params))
        assert "ix_crm_company_name_lower" in plan


def test_exact_name_pinyin_and_initials_come_before_partial_matches(app, client):
    """张伟 is what `zhangwei` and `zw` mean: it comes before a shorter name found only through its e-mail
    and before longer names that contain the input."""
    _people(app)
    with app.app_context():
        s = db.session
        bo = Contact(full_name="Bo")
        s.add(bo)
        s.flush()
        s.add(Email(contact=bo, address="zhangwei@example.com"))
        s.commit()
    h = _auth(client)
    assert _search(client, "zhangwei", h) == [("contact", "张伟"), ("contact", "Bo"), ("contact", "张伟强")]
    assert _search(client, "Zhang Wei", h)[0] == ("contact", "张伟")
    assert _search(client, "zw", h) == [("contact", "张伟"), ("contact", "张伟强")]
    assert _search(client, "张伟", h) == [("contact", "张伟"), ("contact", "张伟强")]
    # the keys follow the name: renamed, 张伟 is found as liwen, no longer as zhangwei
    with app.app_context():
        s = db.session
        zhang = s.query(Contact).filter_by(full_name="张伟").one()
        zhang.full_name, zhang.family_name, zhang.given_name = "李文", None, None
        s.commit()
        assert (zhang.pinyin, zhang.initials) == ("liwen", "lw")
    assert _search(client, "liwen", h)[0] == ("contact", "李文")
    assert ("contact", "李文") not in _search(client, "zhangwei", h)
    # record rules hold for exact matches too
    assert _search(client, "liwen", _auth(client, "rep2")) == []


def test_crm_0007_fills_pinyin_and_initials_of_the_contacts_there_are(app, backend):
    with app.app_context():
        downgrade("crm_0006")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO crm_contact (full_name, search_text, custom, version, created_at, "
                              "updated_at) VALUES ('欧阳娜娜', '', '{}', 1, '2026-01-01', '2026-01-01'), "
                              "('Mei Ling Lee', '', '{}', 1, '2026-01-01', '2026-01-01')"))
        upgrade()
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT full_name, pinyin, initials FROM crm_contact ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [("欧阳娜娜", "ouyangnana", "oynn"), ("Mei Ling Lee", None, None)]
        assert {"ix_crm_contact_pinyin", "ix_crm_contact_initials"} <= _indexes(backend)
        db.engine.dispose()
