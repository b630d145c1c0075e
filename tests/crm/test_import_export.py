"""Import and export of contacts and companies: CSV (UTF-8, BOM, GBK), XLSX and vCard files, row-level
errors, re-import as update, round trips, the `bigledger crm` commands and the import screen."""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask_babel import force_locale
from openpyxl import load_workbook
from sqlalchemy import event, func, select

from bigledger_core.cli import cli
from bigledger_core.db import db
from plugins.crm.exporter import (
    company_rows,
    contact_rows,
    export_columns,
    export_table,
)
from plugins.crm.importer import (
    ImportFileError,
    import_records,
    read_table,
    write_error_report,
)
from plugins.crm.models import (
    AuditEntry,
    Company,
    Contact,
    CustomField,
    Email,
    Phone,
    Tag,
)
from plugins.crm.vcard import contacts_to_vcard, vcard_to_rows
from tests.conftest import add_user, csrf_token, login

DATA = Path(__file__).resolve().parent.parent / "data" / "crm"
ENCODINGS = ["contacts_utf8.csv", "contacts_utf8_bom.csv", "contacts_gbk.csv"]


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def contact(name: str) -> Contact:
    return db.session.scalars(select(Contact).where(Contact.full_name == name)).one()


def snapshot() -> dict:
    """Everything an import or export carries, per contact name."""
    result = {}
    for c in db.session.scalars(select(Contact).where(Contact.merged_into_id.is_(None))):
        result[c.full_name] = {
            "names": (c.family_name, c.given_name, c.name_en, c.title, c.external_id, c.owner_id),
            "phones": sorted((p.kind, p.raw, p.e164) for p in c.phones),
            "emails": sorted(e.address for e in c.emails),
            "tags": sorted(t.name for t in c.tags),
            "companies": sorted((link.company.name, link.role_id, link.is_primary) for link in c.links),
            "addresses": sorted((a.province or "", a.city or "", a.district or "", a.street or "",
                                 a.postcode or "", a.country or "") for a in c.addresses),
            "custom": c.custom,
        }
    return result


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def add_fields(*fields: dict) -> None:
    for position, values in enumerate(fields):
        db.session.add(CustomField(position=position, **values))
    db.session.commit()


BAD_FILE_FIELDS = (
    {"entity": "contact", "key": "level", "label": "会员等级", "label_en": "Level", "type": "select",
     "options": [{"value": "金卡", "label": "金卡"}, {"value": "银卡", "label": "银卡"}]},
    {"entity": "contact", "key": "code", "label": "客户编码", "label_en": "Customer code", "type": "text",
     "pattern": r"[A-Z]{2}-\d{4}"},
    {"entity": "contact", "key": "source", "label": "来源", "label_en": "Source", "type": "text", "required": True},
)


# -- reading files ---------------------------------------------------------------------------------------

def test_csv_in_utf8_utf8_with_bom_and_gbk_reads_the_same_rows():
    tables = [list(read_table(DATA / name)) for name in ENCODINGS]
    assert tables[0] == tables[1] == tables[2]
    number, first = tables[0][0]
    assert number == 2 and first["姓名"] == "张伟" and first["邮箱"] == "zhangwei@example.com"
    assert [n for n, _ in tables[0]] == [2, 3, 4]


def test_xlsx_values_read_as_text_dates_in_iso_form_and_integers_without_a_fraction():
    rows = dict(read_table(DATA / "contacts_en.xlsx"))
    assert rows[2]["Mobile"] == "13800138001" and rows[2]["External ID"] == "1001"
    assert rows[2]["Since"] == "2023-05-04" and rows[3]["Since"] == "2024-01-31"
    assert rows[3]["External ID"] == "1002"  # stored as 1002.0
    assert not any(rows[4].values()) and rows[5]["Full Name"] == "Tom Li"


@pytest.mark.parametrize("name, message", [
    ("broken.xlsx", "not a readable XLSX file"),
    ("empty.csv", "has no header row"),
    ("picture.png", "is not a CSV, XLSX or vCard file"),
    ("missing.csv", "Cannot open"),
])
def test_an_unreadable_file_is_refused_before_anything_is_written(app, name, message):
    with app.app_context(), force_locale("en"):
        with pytest.raises(ImportFileError) as refused:
            read_table(DATA / name)
        assert message in str(refused.value) and "\n" not in str(refused.value)
        with pytest.raises(ImportFileError):
            import_records(db.session, "contact", DATA / name)
        assert count(Contact) == 0 and count(Company) == 0


def test_a_binary_file_named_csv_is_refused(app, tmp_path):
    path = tmp_path / "photo.csv"
    path.write_bytes(bytes(range(256)) * 8)
    with app.app_context(), force_locale("en"):
        with pytest.raises(ImportFileError, match="not a text file"):
            import_records(db.session, "contact", path)


# -- importing contacts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ENCODINGS)
def test_contacts_with_chinese_headers_are_imported_in_every_encoding(app, name):
    with app.app_context():
        result = import_records(db.session, "contact", DATA / name)
        assert (result.created, result.updated, result.rejected, result.errors) == (3, 0, 0, [])
        assert result.ignored_columns == []
        zhang = contact("张伟")
        assert (zhang.family_name, zhang.given_name, zhang.title, zhang.external_id) == ("张", "伟", "销售总监", "C001")
        assert sorted((p.kind, p.e164, p.is_primary) for p in zhang.phones) == [
            ("mobile", "+8613800138000", True), ("work", "+861062345678", False)]
        assert [(a.province, a.city, a.street) for a in zhang.addresses] == [("北京", "北京", "海淀区中关村大街1号")]
        assert sorted(t.name for t in zhang.tags) == ["VIP", "重点客户"]
        assert "zhangwei" in zhang.search_text and "zw" in zhang.search_text
        assert (zhang.pinyin, zhang.initials) == ("zhangwei", "zw")  # what search matches exactly first
        nana = contact("欧阳娜娜")
        assert (nana.family_name, nana.given_name) == ("欧阳", "娜娜")
        assert [e.address for e in nana.emails] == ["nana.ouyang@example.cn"]
        assert [p.raw for p in nana.phones] == ["139 0013 9000"]
        assert sorted(t.name for t in contact("李小龙").tags) == ["合作", "技术"]
        # Two contacts of the same company share one company record.
        assert count(Company) == 2 and count(Tag) == 4
        assert {link.company.name for link in contact("李小龙").links} == {"北京星辰科技有限公司"}
        assert all(link.is_primary for link in zhang.links)


def test_xlsx_with_english_headers_and_a_custom_field_found_by_its_label(app):
    with app.app_context():
        add_fields({"entity": "contact", "key": "since", "label": "合作起始", "label_en": "Since", "type": "date"})
        result = import_records(db.session, "contact", DATA / "contacts_en.xlsx")
        assert (result.created, result.rejected) == (3, 0), result.errors
        mary = contact("Mary Chen")
        assert [(p.kind, p.e164) for p in mary.phones] == [("mobile", "+6561234567")]
        assert (mary.title, mary.external_id, mary.custom) == ("CFO", "1002", {"since": "2024-01-31"})
        assert sorted(t.name for t in contact("Tom Li").tags) == ["Prospect", "Trade show"]
        assert [link.company.name for link in contact("Wei Zhang").links] == ["Acme Trading Ltd"]
        assert [a.city for a in contact("Wei Zhang").addresses] == ["Shanghai"]


def test_a_mapping_names_columns_the_importer_does_not_know(app):
    path = DATA / "contacts_custom_headers.csv"
    with app.app_context(), force_locale("en"):
        unmapped = import_records(db.session, "contact", path, dry_run=True)
        assert unmapped.ignored_columns == ["Contact", "Employer", "Notes"]
        assert unmapped.rejected == 2 and {e.message for e in unmapped.errors} == {
            "a name is required (full name, or family and given name)"}

        result = import_records(db.session, "contact", path,
                                mapping={"contact": "full_name", "Employer": "公司", "Notes": "ignore"})
        assert (result.created, result.rejected, result.ignored_columns) == (2, 0, ["Notes"])
        assert [link.company.name for link in contact("林青").links] == ["深圳海蓝科技"]
        assert [p.kind for p in contact("陈晨").phones] == ["mobile"]

        with pytest.raises(ImportFileError, match="Unknown target nonsense for column Notes"):
            import_records(db.session, "contact", path, mapping={"Notes": "nonsense"})
        with pytest.raises(ImportFileError, match="does not have: Fax"):
            import_records(db.session, "contact", path, mapping={"Fax": "phone:fax"})
        with pytest.raises(ImportFileError, match="both hold full_name"):
            import_records(db.session, "contact", path, mapping={"Contact": "full_name", "Notes": "full_name"})


def test_a_dry_run_reports_what_would_happen_and_writes_nothing(app):
    with app.app_context():
        result = import_records(db.session, "contact", DATA / "contacts_utf8.csv", dry_run=True)
        assert (result.created, result.updated, result.rejected, result.dry_run) == (3, 0, 0, True)
        assert count(Contact) == count(Company) == count(Tag) == count(Phone) == 0
        import_records(db.session, "contact", DATA / "contacts_utf8.csv")
        again = import_records(db.session, "contact", DATA / "contacts_utf8.csv", dry_run=True)
        assert (again.created, again.updated) == (0, 3)


def test_bad_rows_are_reported_with_row_and_column_and_the_good_rows_are_imported(app, tmp_path):
    with app.app_context(), force_locale("en"):
        add_fields(*BAD_FILE_FIELDS)
        result = import_records(db.session, "contact", DATA / "contacts_bad.csv")
        assert (result.created, result.updated, result.rejected) == (2, 0, 6)
        found = [(e.row, e.column, e.value) for e in result.errors]
        assert found == [(3, "手机", "123"), (4, "邮箱", "not-an-email"), (5, "姓名", ""), (6, "会员等级", "钻石卡"),
                         (7, "客户编码", "bad-code"), (8, "来源", "")]
        messages = [e.message for e in result.errors]
        assert messages[0] == "123 is not a valid phone number"
        assert messages[1] == "not-an-email is not a valid e-mail address"
        assert messages[3] == "钻石卡 is not one of the choices"
        assert messages[4] == "bad-code does not match the required format"
        assert messages[5] == "is required"
        assert sorted(c.full_name for c in db.session.scalars(select(Contact))) == ["王芳", "郑爽"]
        assert contact("王芳").custom == {"level": "金卡", "code": "AB-1234", "source": "展会"}
        # A rejected row leaves nothing behind: no phone, e-mail or tag of it.
        assert count(Phone) == 2 and count(Email) == 2

        report = tmp_path / "errors.csv"
        write_error_report(result.errors, report)
        assert report.read_bytes().startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(report.read_text(encoding="utf-8-sig"))))
        assert rows[0] == ["row", "column", "value", "message"]
        assert rows[1] == ["3", "手机", "123", "123 is not a valid phone number"] and len(rows) == 7


def test_several_problems_of_one_row_are_all_reported(app, tmp_path):
    path = write(tmp_path, "two.csv", "姓名,手机,邮箱,负责人,国家\n,123,bad,nobody,Atlantis\n")
    with app.app_context():
        result = import_records(db.session, "contact", path)
        assert result.rejected == 1
        assert sorted(e.column for e in result.errors) == ["国家", "姓名", "手机", "负责人", "邮箱"]
        assert {e.row for e in result.errors} == {2}


def test_reimporting_updates_the_records_without_duplicating_details(app, tmp_path):
    with app.app_context():
        import_records(db.session, "contact", DATA / "contacts_utf8.csv")
        before = snapshot()
        counts = (count(Contact), count(Company), count(Phone), count(Email), count(Tag))
        result = import_records(db.session, "contact", DATA / "contacts_gbk.csv")
        assert (result.created, result.updated, result.rejected) == (0, 3, 0)
        assert snapshot() == before
        assert (count(Contact), count(Company), count(Phone), count(Email), count(Tag)) == counts

        # Matched by external id: the title is overwritten, a new phone is added, the known one is not.
        by_id = write(tmp_path, "by_id.csv", "外部编号,职位,手机\nC001,销售副总裁,13800138000; 138 1111 2222\n")
        assert import_records(db.session, "contact", by_id).updated == 1
        zhang = contact("张伟")
        assert zhang.title == "销售副总裁"
        assert sorted(p.e164 for p in zhang.phones) == ["+861062345678", "+8613800138000", "+8613811112222"]
        # Matched by e-mail (compared normalized), then by phone; empty cells clear nothing.
        by_email = write(tmp_path, "by_email.csv", "姓名,邮箱,职位,手机\n,ZhangWei@EXAMPLE.com,顾问,\n"
                                                   "欧阳娜娜,,,+86 139-0013-9000\n")
        result = import_records(db.session, "contact", by_email)
        assert (result.created, result.updated, result.rejected) == (0, 2, 0), result.errors
        assert contact("张伟").title == "顾问" and contact("欧阳娜娜").title == "采购经理"
        assert count(Contact) == 3 and count(Email) == 3
        # Updates go through the ORM, so the audit trail has them.
        changes = db.session.scalars(select(AuditEntry.changes).where(AuditEntry.entity == "crm_contact",
                                                                      AuditEntry.record_id == zhang.id)).all()
        assert {"title": ["销售副总裁", "顾问"]} in changes


def test_reimporting_an_unchanged_file_writes_nothing_and_reads_only_the_details_it_compares(app, tmp_path):
    """Re-importing the same file matches every row and changes nothing: no version bump, audit entry or
    update event. Only the details the file has columns for are read (here phones, e-mails and company
    links, not tags or addresses), each once per batch. Changed cells change only their records."""
    from tests.sample_plugin import plugin as sample

    def people(count, title="经理"):
        lines = "".join(f"客户{n},139{n:08d},c{n}@example.com,公司{n % 3},{title if n else '总监'}\n"
                        for n in range(count))
        return write(tmp_path, f"people{count}.csv", "姓名,手机,邮箱,公司,职位\n" + lines)

    sent: list[str] = []

    def listener(_conn, _cursor, statement, *_rest):
        sent.append(statement)

    with app.app_context():
        assert import_records(db.session, "contact", people(300)).created == 300
        versions = dict(db.session.execute(select(Contact.id, Contact.version)).all())
        audited = count(AuditEntry)
        sample.CRM_EVENTS.clear()
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            result = import_records(db.session, "contact", people(300))
            small = len(sent)
            sent.clear()
            import_records(db.session, "contact", people(30))
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        assert (result.created, result.updated, result.rejected) == (0, 300, 0)
        assert dict(db.session.execute(select(Contact.id, Contact.version)).all()) == versions
        assert count(AuditEntry) == audited
        assert [e for e in sample.CRM_EVENTS if e.name == "crm_contact_updated"] == []
        assert len(sent) == small  # 30 rows or 300: the same statements, none per record
        assert not any("crm_contact_tag" in s or "crm_address" in s for s in sent)

        # Titles changed in 299 rows: those contacts alone are written and audited, the 300th is left as it was.
        changed = import_records(db.session, "contact", people(300, title="采购经理"))
        assert changed.updated == 300
        bumped = {i for i, v in db.session.execute(select(Contact.id, Contact.version)) if v != versions[i]}
        assert len(bumped) == 299 and contact("客户0").version == versions[contact("客户0").id]
        assert count(AuditEntry) == audited + 299


def test_a_large_import_keeps_the_planner_informed_of_the_tables_it_fills(app, tmp_path):
    """On PostgreSQL each batch is matched against the records already there through their indexes; that
    holds only while the planner knows how big the tables have grown, so an import refreshes their statistics
    as it goes, also where autovacuum has not run."""
    from sqlalchemy import text

    lines = "".join(f"客户{n},139{n:08d},client{n}@example.com\n" for n in range(1200))
    path = write(tmp_path, "many.csv", "姓名,手机,邮箱\n" + lines)
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("planner statistics are PostgreSQL's")
        result = import_records(db.session, "contact", path)
        assert (result.created, result.rejected) == (1200, 0)
        known = dict(db.session.execute(text(
            "SELECT relname, reltuples FROM pg_class WHERE relname IN ('crm_contact', 'crm_phone', 'crm_email')")).all())
        assert len(known) == 3 and min(known.values()) >= 1000, known  # at least as of the last refresh
        plan = "\n".join(db.session.scalars(text(
            "EXPLAIN SELECT contact_id FROM crm_email WHERE address = ANY(:a)"), {"a": ["client7@example.com"]}))
        assert "Seq Scan" not in plan, plan


def many_rows(count: int) -> str:
    """`count` contacts over several batches: every 97th row has a bad phone, and the last row repeats the
    e-mail of row 10 (an update of a contact written two batches earlier)."""
    given = "伟芳娜敏静丽强磊军洋"
    lines = []
    for n in range(count - 1):
        phone = "123" if n % 97 == 50 else f"139{n:08d}"
        lines.append(f"张{given[n % 10]}{n},{phone},client{n}@example.com,公司{n // 300}\n")
    lines.append("张伟新,,CLIENT8@example.com,\n")
    return "姓名,手机,邮箱,公司\n" + "".join(lines)


@pytest.mark.parametrize("read_ahead", [False, True], ids=["in-process", "read-ahead"])
def test_a_file_of_several_batches_reads_the_same_in_another_process(app, tmp_path, read_ahead):
    """The command reads and checks rows in a second process while it writes; rows, errors, matches and
    the pinyin keys come out exactly as when one process does both."""
    path = write(tmp_path, "many.csv", many_rows(1300))
    with app.app_context(), force_locale("en"):
        result = import_records(db.session, "contact", path, read_ahead=read_ahead)
        bad = [n for n in range(1299) if n % 97 == 50]
        assert (result.created, result.updated, result.rejected) == (1299 - len(bad), 1, len(bad))
        assert [(e.row, e.column, e.value) for e in result.errors] == [(n + 2, "手机", "123") for n in bad]
        assert result.errors[0].message == "123 is not a valid phone number"
        updated = db.session.scalars(select(Contact).join(Email).where(Email.address == "client8@example.com")).one()
        assert updated.full_name == "张伟新"  # the last row's name replaced row 10's
        first = contact("张伟0")
        assert (first.pinyin, first.initials) == ("zhangwei", "zw")  # what the search box matches first
        assert "zhang wei" in first.search_text
        assert [link.company.name for link in first.links] == ["公司0"]
        assert count(Contact) == 1299 - len(bad) and count(Company) == 5


@pytest.mark.parametrize("read_ahead", [False, True], ids=["in-process", "read-ahead"])
def test_damage_further_down_a_file_stops_the_import_after_the_batches_before_it(app, tmp_path, read_ahead):
    text = many_rows(1300).splitlines(keepends=True)
    text.insert(1150, "张三," + "9" * 200_000 + ",x@example.com,\n")  # longer than a CSV field may be
    path = write(tmp_path, "damaged.csv", "".join(text))
    with app.app_context(), force_locale("en"):
        with pytest.raises(ImportFileError, match="damaged.csv cannot be read at row 1151"):
            import_records(db.session, "contact", path, read_ahead=read_ahead)
        # The two batches read before the damage were written; the one it was found in was not.
        assert count(Contact) == 1000 - sum(1 for n in range(1000) if n % 97 == 50)


def test_an_import_does_not_wait_for_a_reading_process_that_died(app, tmp_path, monkeypatch):
    import os

    from plugins.crm import importer

    parse = importer._Importer.parse

    def dies_at_row_700(self, number, cells):
        if number == 700:
            os._exit(3)
        return parse(self, number, cells)

    monkeypatch.setattr(importer._Importer, "parse", dies_at_row_700)
    path = write(tmp_path, "many.csv", many_rows(1300))
    with app.app_context(), force_locale("en"):
        with pytest.raises(importer.ImportInterrupted, match="exit code 3"):
            import_records(db.session, "contact", path, read_ahead=True)
        assert count(Contact) == 500 - sum(1 for n in range(500) if n % 97 == 50)
    # The command says so in one line, and exits 1.
    monkeypatch.setattr("plugins.crm.cli.os.sched_getaffinity", lambda _pid: {0, 1})
    result = run(app, "crm", "import", "contacts", str(path))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: The process reading the file stopped (exit code 3)")
    assert len(result.stderr.strip().splitlines()) == 1


def test_rows_repeating_a_contact_in_one_file_update_it(app, tmp_path):
    path = write(tmp_path, "twice.csv", "姓名,手机,邮箱,标签\n王五,13700000001,wangwu@example.com,A\n"
                                        "王五,13700000002,WANGWU@example.com,B\n")
    with app.app_context():
        result = import_records(db.session, "contact", path)
        assert (result.created, result.updated) == (1, 1)
        wang = contact("王五")
        assert len(wang.phones) == 2 and len(wang.emails) == 1 and sorted(t.name for t in wang.tags) == ["A", "B"]


def test_a_merged_record_is_not_updated(app, tmp_path):
    with app.app_context():
        import_records(db.session, "contact", DATA / "contacts_utf8.csv")
        zhang, nana = contact("张伟"), contact("欧阳娜娜")
        zhang.merged_into_id = nana.id
        db.session.commit()
        by_email = write(tmp_path, "again.csv", "姓名,邮箱\n张伟,zhangwei@example.com\n")
        assert import_records(db.session, "contact", by_email).created == 1
        by_id = write(tmp_path, "by_id.csv", "外部编号,职位\nC001,经理\n")
        result = import_records(db.session, "contact", by_id)
        assert result.rejected == 1 and result.errors[0].column == "外部编号"


def test_roles_owners_and_the_default_owner(app, tmp_path):
    add_user(app, "rep", "Sales Rep")
    add_user(app, "boss", "Sales Manager")
    path = write(tmp_path, "roles.csv", "姓名,公司,角色,负责人\n赵六,华信,决策者,rep\n钱七,华信,Influencer,\n")
    with app.app_context():
        boss = app.appbuilder.sm.find_user(username="boss").id
        rep = app.appbuilder.sm.find_user(username="rep").id
        result = import_records(db.session, "contact", path, owner_id=boss)
        assert (result.created, result.rejected) == (2, 0), result.errors
        zhao, qian = contact("赵六"), contact("钱七")
        assert (zhao.owner_id, qian.owner_id) == (rep, boss)
        assert [link.role.code for link in zhao.links] == ["decision_maker"]
        assert [link.role.code for link in qian.links] == ["influencer"]
        assert db.session.scalars(select(Company.owner_id).where(Company.name == "华信")).one() == boss


# -- companies -------------------------------------------------------------------------------------------

def test_companies_with_a_parent_by_name(app, tmp_path):
    with app.app_context(), force_locale("en"):
        result = import_records(db.session, "company", DATA / "companies.csv")
        assert (result.created, result.rejected) == (3, 0), result.errors
        companies = {c.name: c for c in db.session.scalars(select(Company))}
        group, tech, logistics = (companies[n] for n in ("星辰集团", "北京星辰科技有限公司", "上海星辰物流有限公司"))
        assert tech.parent_id == group.id and logistics.parent_id == group.id and group.parent_id is None
        assert (group.status, tech.status, logistics.status) == ("customer", "partner", "prospect")
        assert (logistics.employees, tech.name_en, group.external_id) == (1200, "Xingchen Tech", "K001")
        assert [(p.kind, p.e164) for p in logistics.phones] == [("work", "+862155551234")]
        assert sorted(t.name for t in logistics.tags) == ["华东", "物流"]

        # A contact file links to the imported company instead of making a second one.
        contacts = write(tmp_path, "c.csv", "姓名,公司\n孙八,北京星辰科技有限公司\n")
        import_records(db.session, "contact", contacts)
        assert count(Company) == 3

        # A parent given before its own row is made, and then updated by that row.
        order = write(tmp_path, "order.csv", "公司名称,上级公司,行业\n深圳分公司,华南总部,零售\n华南总部,,贸易\n")
        result = import_records(db.session, "company", order)
        assert (result.created, result.updated) == (1, 1)
        south = db.session.scalars(select(Company).where(Company.name == "华南总部")).one()
        assert south.industry == "贸易" and [c.name for c in south.children] == ["深圳分公司"]

        # A cycle is refused for that row only; the database keeps the tree.
        cycle = write(tmp_path, "cycle.csv", "公司名称,上级公司,行业\n星辰集团,北京星辰科技有限公司,控股\n"
                                             "上海星辰物流有限公司,,仓储\n")
        result = import_records(db.session, "company", cycle)
        assert (result.updated, result.rejected) == (1, 1)
        assert result.errors[0].row == 2 and result.errors[0].column == "上级公司"
        db.session.expire_all()
        assert companies["星辰集团"].parent_id is None and companies["星辰集团"].industry == "制造业"
        assert companies["上海星辰物流有限公司"].industry == "仓储"

        bad = write(tmp_path, "bad.csv", "公司名称,状态,员工数\n坏公司,倒闭,很多\n")
        result = import_records(db.session, "company", bad)
        assert sorted(e.column for e in result.errors) == ["员工数", "状态"]


# -- export and round trips ------------------------------------------------------------------------------

def _world(tmp_path):
    """Companies, contacts with every kind of detail and custom fields of every type."""
    add_fields({"entity": "contact", "key": "level", "label": "会员等级", "label_en": "Level", "type": "select",
                "options": [{"value": "金卡"}, {"value": "银卡"}]},
               {"entity": "contact", "key": "topics", "label": "兴趣", "label_en": "Topics", "type": "multiselect",
                "options": [{"value": "云"}, {"value": "AI"}]},
               {"entity": "contact", "key": "vip", "label": "贵宾", "label_en": "VIP", "type": "boolean"},
               {"entity": "contact", "key": "budget", "label": "预算", "label_en": "Budget", "type": "number"},
               {"entity": "contact", "key": "since", "label": "合作起始", "label_en": "Since", "type": "date"},
               {"entity": "company", "key": "grade", "label": "等级", "label_en": "Grade", "type": "text"})
    import_records(db.session, "company", DATA / "companies.csv")
    import_records(db.session, "contact", DATA / "contacts_utf8.csv")
    extra = write(tmp_path, "extra.csv", "姓名,邮箱,公司,角色,邮编,国家,区,会员等级,兴趣,贵宾,预算,合作起始,职位\n"
                                         "周九,zhoujiu@example.com,星辰集团,用户,100080,中国,海淀区,金卡,云;AI,是,12000.5,"
                                         "2023/05/04,=1+1\n")
    assert import_records(db.session, "contact", extra).created == 1
    group = db.session.scalars(select(Company).where(Company.name == "星辰集团")).one()
    group.custom = {"grade": "A"}
    db.session.commit()


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_an_export_imports_back_to_the_same_records(app, tmp_path, fmt):
    with app.app_context():
        _world(tmp_path)
        before = snapshot()
        assert before["周九"]["custom"] == {"level": "金卡", "topics": ["云", "AI"], "vip": True, "budget": 12000.5,
                                          "since": "2023-05-04"}
        path = tmp_path / f"contacts.{fmt}"
        with path.open("wb") as out:
            query = select(Contact).where(Contact.merged_into_id.is_(None)).order_by(Contact.id)
            assert export_table(contact_rows(db.session, query), export_columns(db.session, "contact"), fmt, out) == 4
        again = import_records(db.session, "contact", path)
        assert (again.created, again.updated, again.rejected, again.ignored_columns) == (0, 4, 0, [])
        assert snapshot() == before

        for record in db.session.scalars(select(Contact)):
            db.session.delete(record)
        db.session.commit()
        fresh = import_records(db.session, "contact", path)
        assert (fresh.created, fresh.rejected) == (4, 0), fresh.errors
        assert snapshot() == before

        companies = tmp_path / f"companies.{fmt}"
        with companies.open("wb") as out:
            export_table(company_rows(db.session, select(Company.id).order_by(Company.id)),
                         export_columns(db.session, "company"), fmt, out)
        result = import_records(db.session, "company", companies)
        assert (result.created, result.updated, result.rejected) == (0, 4, 0), result.errors  # 上海云帆 too
        assert db.session.scalars(select(Company.custom).where(Company.name == "星辰集团")).one() == {"grade": "A"}


def test_export_headers_follow_the_language_and_formulas_are_neutralised(app, tmp_path):
    with app.app_context():
        _world(tmp_path)
        with force_locale("en"):
            headers = [header for _key, header in export_columns(db.session, "contact")]
            assert headers[:3] == ["External id", "Full name", "Family name"]
            assert headers[-5:] == ["Level", "Topics", "VIP", "Budget", "Since"]
            out = io.BytesIO()
            export_table(contact_rows(db.session, select(Contact.id).order_by(Contact.id)),
                         export_columns(db.session, "contact"), "csv", out)
        assert out.getvalue().startswith(b"\xef\xbb\xbf")
        rows = list(csv.DictReader(io.StringIO(out.getvalue().decode("utf-8-sig"))))
        zhou = next(row for row in rows if row["Full name"] == "周九")
        assert zhou["Job title"] == "'=1+1" and zhou["VIP"] == "yes" and zhou["Topics"] == "云; AI"
        zhang = next(row for row in rows if row["Full name"] == "张伟")
        assert (zhang["Mobile"], zhang["Work phone"], zhang["Company"]) == ("13800138000", "010-62345678",
                                                                           "北京星辰科技有限公司")
        book = io.BytesIO()
        export_table(contact_rows(db.session, select(Contact.id)), export_columns(db.session, "contact"), "xlsx", book)
        sheet = load_workbook(io.BytesIO(book.getvalue()), read_only=True).active
        titles = [row[5] for row in sheet.iter_rows(min_row=2, values_only=True)]
        assert "'=1+1" in titles


def test_export_loads_details_with_a_fixed_number_of_queries(app, tmp_path):
    with app.app_context():
        _world(tmp_path)
        statements = []
        listener = lambda *args: statements.append(args[2])
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            rows = list(contact_rows(db.session, select(Contact.id)))
            few = len(statements)
            people = "".join(f"联系人{i},13{i:09d},p{i}@example.com,星辰集团,标签{i % 3}\n" for i in range(60))
            import_records(db.session, "contact", write(tmp_path, "many.csv", "姓名,手机,邮箱,公司,标签\n" + people))
            statements.clear()
            rows = list(contact_rows(db.session, select(Contact.id)))
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        assert len(rows) == 64 and len(statements) == few <= 9


# -- vCard -----------------------------------------------------------------------------------------------

def test_vcard_export_then_import(app, tmp_path):
    with app.app_context():
        import_records(db.session, "contact", DATA / "contacts_utf8.csv")
        before = snapshot()
        text = contacts_to_vcard(contact_rows(db.session, select(Contact.id).order_by(Contact.id)))
        assert text.count("BEGIN:VCARD") == 3 and "VERSION:3.0" in text and "NOTE" not in text
        assert "N:张;伟;;;" in text and "ORG:北京星辰科技有限公司" in text and "TEL;TYPE=CELL:13800138000" in text
        assert "TEL;TYPE=WORK:010-62345678" in text and "EMAIL;TYPE=INTERNET,WORK:zhangwei@example.com" in text
        assert "UID:C001" in text
        assert contacts_to_vcard(db.session.scalars(select(Contact).order_by(Contact.id))) == text
        path = tmp_path / "contacts.vcf"
        path.write_text(text, encoding="utf-8")
        for record in db.session.scalars(select(Contact)):
            db.session.delete(record)
        db.session.commit()
        result = import_records(db.session, "contact", path)
        assert (result.created, result.rejected) == (3, 0), result.errors
        after = snapshot()
        assert {name: {k: v for k, v in data.items() if k != "tags"} for name, data in after.items()} == \
            {name: {k: v for k, v in data.items() if k != "tags"} for name, data in before.items()}


def test_a_vcard_file_from_a_phone_is_imported(app):
    rows = vcard_to_rows((DATA / "contacts.vcf").read_text(encoding="utf-8"))
    assert rows[1] == {"full name": "Guo Jing", "family name": "Guo", "given name": "Jing",
                       "home phone": "+86 574 8888 7777", "personal email": "guojing@example.com"}
    with app.app_context():
        result = import_records(db.session, "contact", DATA / "contacts.vcf")
        assert (result.created, result.rejected) == (2, 0), result.errors
        huang = contact("黄蓉")
        assert (huang.title, huang.external_id) == ("总经理", "V001")
        assert [(a.country, a.province, a.city, a.district) for a in huang.addresses] == [
            ("CN", "浙江", "舟山", "普陀区")]
        assert sorted(p.kind for p in huang.phones) == ["mobile", "work"]
        guo = contact("Guo Jing")
        assert [(p.kind, p.e164) for p in guo.phones] == [("home", "+8657488887777")]
        assert [(e.kind, e.address) for e in guo.emails] == [("personal", "guojing@example.com")]


# -- the command line ------------------------------------------------------------------------------------

def run(app, *args):
    """`bigledger …` in English, inside the test's app."""
    with app.app_context():
        return CliRunner().invoke(cli, list(args), env={"LC_ALL": "en_US.UTF-8"}, catch_exceptions=False)


def test_cli_import_reports_and_exits_1_when_rows_are_rejected(app, tmp_path):
    with app.app_context():
        add_fields(*BAD_FILE_FIELDS)
    source = tmp_path / "people.csv"
    shutil.copy(DATA / "contacts_bad.csv", source)

    dry = run(app, "crm", "import", "contacts", str(source), "--dry-run")
    assert dry.exit_code == 1 and "Dry run: nothing was written." in dry.stdout
    assert "Created: 2, updated: 0, rejected: 6" in dry.stdout
    with app.app_context():
        assert count(Contact) == 0

    report = tmp_path / "people.csv.errors.csv"
    report.unlink()
    result = run(app, "crm", "import", "contacts", str(source))
    assert result.exit_code == 1 and "Created: 2, updated: 0, rejected: 6" in result.stdout
    assert str(report) in result.stderr
    assert len(list(csv.reader(report.open(encoding="utf-8-sig")))) == 7

    chosen = tmp_path / "mine.csv"
    again = run(app, "crm", "import", "contacts", str(source), "--errors", str(chosen))
    assert again.exit_code == 1 and "Created: 0, updated: 2, rejected: 6" in again.stdout and chosen.exists()


def test_cli_import_with_mapping_and_owner(app):
    add_user(app, "rep", "Sales Rep")
    result = run(app, "crm", "import", "contacts", str(DATA / "contacts_custom_headers.csv"),
                 "--mapping", "Contact=full_name", "-m", "Employer=company", "--owner", "rep")
    assert result.exit_code == 0, result.output
    assert "Ignored columns: Notes" in result.stdout and "Created: 2, updated: 0, rejected: 0" in result.stdout
    with app.app_context():
        rep = app.appbuilder.sm.find_user(username="rep").id
        assert set(db.session.scalars(select(Contact.owner_id))) == {rep}
    unknown = run(app, "crm", "import", "contacts", str(DATA / "contacts_utf8.csv"), "--owner", "nobody")
    assert unknown.exit_code == 1 and unknown.stderr.strip() == "Error: There is no user nobody."
    bad = run(app, "crm", "import", "contacts", str(DATA / "contacts_utf8.csv"), "--mapping", "nothing")
    assert bad.exit_code == 2 and "HEADER=TARGET" in bad.stderr


@pytest.mark.parametrize("name", ["broken.xlsx", "empty.csv", "picture.png", "missing.csv"])
def test_cli_import_of_an_unreadable_file_exits_1_with_one_line(app, name):
    result = run(app, "crm", "import", "contacts", str(DATA / name))
    assert result.exit_code == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("Error: ")
    with app.app_context():
        assert count(Contact) == 0
    assert not (DATA / f"{name}.errors.csv").exists()


@pytest.mark.parametrize("suffix", ["csv", "xlsx", "vcf"])
def test_cli_export_then_import_again(app, tmp_path, suffix):
    assert run(app, "crm", "import", "companies", str(DATA / "companies.csv")).exit_code == 0
    assert run(app, "crm", "import", "contacts", str(DATA / "contacts_utf8.csv")).exit_code == 0
    target = tmp_path / f"contacts.{suffix}"
    result = run(app, "crm", "export", "contacts", str(target))
    assert result.exit_code == 0 and f"3 records written to {target}" in result.stdout
    again = run(app, "crm", "import", "contacts", str(target))
    assert again.exit_code == 0 and "Created: 0, updated: 3, rejected: 0" in again.stdout
    if suffix != "vcf":
        companies = tmp_path / f"companies.{suffix}"
        assert run(app, "crm", "export", "companies", str(companies)).exit_code == 0
        assert "Created: 0, updated: 4" in run(app, "crm", "import", "companies", str(companies)).stdout
    else:
        refused = run(app, "crm", "export", "companies", str(tmp_path / "c.vcf"))
        assert refused.exit_code == 1 and "Only contacts can be exported as vCard." in refused.stderr
    wrong = run(app, "crm", "export", "contacts", str(tmp_path / "contacts.pdf"))
    assert wrong.exit_code == 1 and "must end in .csv, .xlsx or .vcf" in wrong.stderr


# -- the import screen -----------------------------------------------------------------------------------

@pytest.fixture
def screen(app, client):
    """The import screen, as an admin."""
    with app.app_context():
        add_fields(*BAD_FILE_FIELDS)
    add_user(app, "admin", "Admin")
    assert login(client, "admin").status_code == 302
    client.get("/lang/en")
    return client


def _upload(client, path: Path, **fields):
    data = {"csrf_token": csrf_token(client, "/crm/import/"), "entity": "contact",
            "file": (io.BytesIO(path.read_bytes()), path.name), **fields}
    return client.post("/crm/import/", data=data, content_type="multipart/form-data",
                       headers={"Accept-Language": "en"})


def test_the_import_screen_imports_a_file_and_offers_the_error_report(app, screen):
    page = screen.get("/crm/import/", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'name="csrf_token"' in html and 'type="file"' in html and 'name="dry_run"' in html

    dry = _upload(screen, DATA / "contacts_bad.csv", dry_run="1")
    html = dry.get_data(as_text=True)
    assert dry.status_code == 200 and "Dry run: nothing was written." in html
    assert 'data-count="created">2<' in html and 'data-count="rejected">6<' in html
    assert "钻石卡 is not one of the choices" in html and "<td>6</td><td>会员等级</td>" in html
    with app.app_context():
        assert count(Contact) == 0

    done = _upload(screen, DATA / "contacts_bad.csv")
    html = done.get_data(as_text=True)
    assert 'data-count="created">2<' in html
    with app.app_context():
        assert count(Contact) == 2
    link = html.split('id="bl-import-report" href="', 1)[1].split('"', 1)[0]
    report = screen.get(link)
    assert report.status_code == 200 and report.data.startswith(b"\xef\xbb\xbf")
    assert len(report.get_data(as_text=True).splitlines()) == 7
    assert app.test_client().get(link).status_code in (302, 401, 403)  # not for other sessions
    assert screen.get("/crm/import/report/not-a-token").status_code == 404


def test_the_import_screen_refuses_unreadable_and_oversized_files(app, screen, monkeypatch):
    broken = _upload(screen, DATA / "broken.xlsx")
    assert broken.status_code == 400
    assert "broken.xlsx is not a readable XLSX file." in broken.get_data(as_text=True)
    wrong = _upload(screen, DATA / "picture.png")
    assert wrong.status_code == 400 and "picture.png is not a CSV, XLSX or vCard file." in wrong.get_data(as_text=True)

    from plugins.crm import import_views

    monkeypatch.setattr(import_views, "MAX_UPLOAD", 100)
    large = _upload(screen, DATA / "contacts_utf8.csv")
    assert large.status_code == 413 and "larger than" in large.get_data(as_text=True)
    with app.app_context():
        assert count(Contact) == 0
    no_token = screen.post("/crm/import/", data={"entity": "contact"}, headers={"Accept-Language": "en"})
    assert no_token.status_code == 400


def test_a_rep_importing_on_the_screen_only_updates_records_they_may_see(app, client, tmp_path):
    from plugins.crm.models import Email

    add_user(app, "rep", "Sales Rep")
    add_user(app, "rep2", "Sales Rep")
    with app.app_context():
        theirs = Contact(full_name="周杰", title="总经理", owner_id=app.appbuilder.sm.find_user(username="rep2").id)
        db.session.add(theirs)
        db.session.flush()
        db.session.add(Email(contact_id=theirs.id, address="zhoujie@example.com"))
        db.session.commit()
    assert login(client, "rep").status_code == 302
    path = write(tmp_path, "mine.csv", "姓名,邮箱,职位\n周杰,zhoujie@example.com,实习生\n")
    response = _upload(client, path)
    assert response.status_code == 200
    with app.app_context():
        titles = sorted(c.title for c in db.session.query(Contact))
    assert titles == ["实习生", "总经理"]  # a record of the rep's own, the other rep's one untouched


def test_imported_contacts_are_announced_as_created_events(app, tmp_path):
    from tests.sample_plugin import plugin as sample

    sample.CRM_EVENTS.clear()
    path = write(tmp_path, "two.csv", "姓名,手机\n孙丽,13900139000\n钱进,13700137000\n")
    with app.app_context():
        result = import_records(db.session, "contact", path)
    assert result.created == 2
    assert sorted(e.payload["name"] for e in sample.CRM_EVENTS if e.name == "crm_contact_created") == ["孙丽", "钱进"]
