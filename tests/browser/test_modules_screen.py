"""An admin switches a module off and on in the browser, in English and in Chinese."""
from tests.browser.conftest import log_in
from tests.conftest import add_user


def test_admin_switches_a_module_off_and_on(app, live_server, page):
    add_user(app, "admin", "Admin")
    log_in(page, live_server)
    page.goto(f"{live_server}/modules/")
    row = page.locator("tr[data-module=pos_bridge]")
    assert "Enabled" in row.inner_text()

    row.locator("button[name=switch]").click()
    page.wait_for_load_state()
    assert "Module pos_bridge disabled" in page.locator(".alert").first.inner_text()
    assert "Disabled" in page.locator("tr[data-module=pos_bridge]").inner_text()

    page.locator("tr[data-module=crm] button[name=switch]").click()  # crm is still required
    page.wait_for_load_state()
    alert = page.locator(".alert").first.inner_text()
    assert "Cannot disable crm" in alert and "finance_bridge" in alert
    assert "Enabled" in page.locator("tr[data-module=crm]").inner_text()

    page.locator("tr[data-module=pos_bridge] button[name=switch]").click()
    page.wait_for_load_state()
    assert "Enabled" in page.locator("tr[data-module=pos_bridge]").inner_text()


def test_the_language_menu_switches_to_chinese(app, live_server, page):
    add_user(app, "admin", "Admin")
    log_in(page, live_server)
    page.goto(f"{live_server}/lang/zh")
    page.goto(f"{live_server}/modules/")
    assert page.locator("h2").inner_text() == "模块"
    assert "客户关系管理" in page.locator("tr[data-module=crm]").inner_text()
    assert "停用" in page.locator("tr[data-module=crm] button").inner_text()
    page.screenshot(path=str(app.instance_path) + "/modules-zh.png", full_page=True)
