"""Bilingual: complete zh catalog, every string in it, and the language a user sees."""
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from tests.conftest import add_user, login

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "translations" / "zh" / "LC_MESSAGES" / "messages.po"


def _catalog(path):
    with open(path, "rb") as handle:
        return read_po(handle)


def test_the_zh_catalog_has_no_untranslated_or_fuzzy_entry():
    problems = [m.id for m in _catalog(CATALOG) if m.id and (not m.string or m.fuzzy)]
    assert problems == []


def test_every_translatable_string_in_the_code_is_in_the_zh_catalog(tmp_path):
    pot = tmp_path / "messages.pot"
    subprocess.run([str(Path(sys.executable).parent / "pybabel"), "extract", "-F", "babel.cfg", "-k", "_l",
                    "-k", "lazy_gettext", "-k", "_", "-o", str(pot), "--no-location", "."],
                   cwd=ROOT, check=True, capture_output=True)
    in_code = {m.id for m in _catalog(pot) if m.id}
    in_catalog = {m.id for m in _catalog(CATALOG) if m.id}
    assert sorted(in_code - in_catalog) == []


def test_the_language_follows_accept_language_until_the_user_switches(app):
    add_user(app, "admin", "Admin")
    zh = app.test_client()
    assert "登录" in zh.get("/login/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}).get_data(as_text=True)
    en = app.test_client()
    page = en.get("/login/", headers={"Accept-Language": "en-GB,en;q=0.9"}).get_data(as_text=True)
    assert "Login" in page and "登录" not in page

    login(en, "admin")
    assert "模块" not in en.get("/modules/").get_data(as_text=True)
    en.get("/lang/zh")  # the language menu
    page = en.get("/modules/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "模块" in page and "停用" in page and "客户关系管理" in page
    en.get("/lang/en")
    assert "Customer relationship management" in en.get("/modules/").get_data(as_text=True)
