"""Real-browser fixtures: the app served on a local port, driven by Debian's chromium via Playwright."""
import os
import threading
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from tests.conftest import PASSWORD

CHROMIUM = "/usr/bin/chromium"

if not os.path.exists(CHROMIUM):
    pytestmark = pytest.mark.skip(reason=f"{CHROMIUM} is not installed (apt-get install chromium)")


def pytest_collection_modifyitems(config, items):
    if os.path.exists(CHROMIUM):
        return
    skip = pytest.mark.skip(reason=f"real-browser test skipped: {CHROMIUM} is not installed (apt-get install chromium)")
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def live_server(app):
    """The app on 127.0.0.1 and a free port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def page(live_server):
    """A fresh headless Chromium page; fails the test if the page loads anything from another host."""
    from playwright.sync_api import sync_playwright

    outside = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        context = browser.new_context(locale="en-US")
        page = context.new_page()
        page.on("request", lambda request: outside.append(request.url)
                if urlsplit(request.url).hostname not in ("127.0.0.1", None) and not request.url.startswith("data:")
                else None)
        page.set_default_timeout(15000)
        yield page
        browser.close()
    assert outside == [], f"the page loaded assets from the internet: {outside}"


def log_in(page, base: str, username: str = "admin") -> None:
    """Log in through the real login form and wait for the home page."""
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"{base}/")
