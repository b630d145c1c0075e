def test_health_reports_database_and_enabled_modules(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["sample.sample"] == "ok"
    assert body["modules"][0] == "core"
    assert {"crm", "finance_bridge", "pos_bridge", "sample"} <= set(body["modules"])


def test_health_shows_no_secrets(app, client):
    text = client.get("/health").get_data(as_text=True)
    assert app.config["SECRET_KEY"] not in text
    assert app.config["SQLALCHEMY_DATABASE_URI"] not in text


def test_health_answers_503_when_the_database_is_unreachable(make_app, tmp_path):
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/missing-dir/none.db")
    response = app.test_client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "OperationalError"
