"""The CRM's answers to other modules (`crm_customers`, `crm_find_contact`, `crm_create_contact`), asked the
way a bridge asks them, and the rule that bridges know the CRM only through hooks and events."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select

from bigledger_core.db import db
from bigledger_core.errors import BigLedgerError
from bigledger_core.models import OutboxEvent
from plugins.crm.merge import merge
from plugins.crm.models import Company, Contact, Email, Phone

ROOT = Path(__file__).resolve().parent.parent.parent


def ask(app, hook, **kwargs):
    from bigledger_core.modules import enabled_modules

    return app.extensions["bigledger"].ask(hook, enabled_modules(), **kwargs)


@pytest.fixture
def people(app):
    with app.app_context():
        s = db.session
        acme = Company(name="华润万家", name_en="CR Vanguard", external_id="ERP-C-7")
        zhang = Contact(full_name="张伟", external_id="POS-88")
        twin = Contact(full_name="张伟 (展会)")
        s.add_all([acme, zhang, twin])
        s.flush()
        s.add_all([Phone(contact=zhang, raw="138 0013 8000", is_primary=True),
                   Phone(contact=zhang, raw="+86 10 6552 9988"),
                   Email(contact=zhang, address="Zhang.Wei@Example.COM", is_primary=True),
                   Phone(company=acme, raw="021-5888 0000"),
                   Phone(contact=twin, raw="+60 12-345 6789")])
        s.commit()
        return {"acme": acme.id, "zhang": zhang.id, "twin": twin.id}


def test_a_module_learns_who_customers_are_by_id_or_external_id_in_one_answer(app, people):
    with app.test_request_context():
        found = ask(app, "crm_customers", company_ids=[people["acme"]], contact_ids=[people["zhang"], 999999],
                    external_ids=[])
        zhang = found["contacts"][people["zhang"]]
        assert (zhang["name"], zhang["external_id"], zhang["merged_into"]) == ("张伟", "POS-88", None)
        assert zhang["phones"] == ["+8613800138000", "+861065529988"]  # primary first
        assert zhang["emails"] == ["zhang.wei@example.com"]
        assert 999999 not in found["contacts"]
        assert found["companies"][people["acme"]]["phones"] == ["+862158880000"]
        by_external = ask(app, "crm_customers", company_ids=[], contact_ids=[], external_ids=["ERP-C-7", "POS-88"])
        assert set(by_external["companies"]) == {people["acme"]} and set(by_external["contacts"]) == {people["zhang"]}


def test_a_contact_is_found_by_phone_then_email_and_never_one_merged_away(app, people):
    with app.test_request_context():
        assert ask(app, "crm_find_contact", phone="+8613800138000", email=None) == people["zhang"]
        assert ask(app, "crm_find_contact", phone=None, email="zhang.wei@example.com") == people["zhang"]
        assert ask(app, "crm_find_contact", phone="+8613900000000", email="nobody@example.com") is None
        assert ask(app, "crm_find_contact", phone="+60123456789", email=None) == people["twin"]
        merge(db.session, "contact", people["zhang"], people["twin"])
        db.session.commit()
        # the twin's number moved to the survivor; the loser itself is never an answer
        assert ask(app, "crm_find_contact", phone="+60123456789", email=None) == people["zhang"]
        assert ask(app, "crm_customers", company_ids=[], contact_ids=[people["twin"]],
                   external_ids=[])["contacts"][people["twin"]]["merged_into"] == people["zhang"]


def test_a_module_creates_a_contact_as_the_crm_does_normalized_and_announced(app, people):
    with app.test_request_context():
        new_id = ask(app, "crm_create_contact", data={"full_name": "  李  娜 ", "phone": "139 1234 5678",
                                                       "email": "Li.Na@Example.com"})
        db.session.commit()
        contact = db.session.get(Contact, new_id)
        assert (contact.full_name, contact.pinyin) == ("李 娜", "lina")
        assert [p.e164 for p in contact.phones] == ["+8613912345678"]
        assert [e.address for e in contact.emails] == ["li.na@example.com"]
        assert new_id in [payload["id"] for payload in db.session.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.name == "crm_contact_created"))]
        before = db.session.scalar(select(Contact.id).order_by(Contact.id.desc()).limit(1))
        with pytest.raises(BigLedgerError) as refused:
            ask(app, "crm_create_contact", data={"full_name": "", "email": "not an address"})
        assert "full_name" in str(refused.value) and "email" in str(refused.value)
        db.session.rollback()
        assert db.session.scalar(select(Contact.id).order_by(Contact.id.desc()).limit(1)) == before


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_bridges_know_the_crm_and_each_other_only_through_hooks_and_events():
    bridges = sorted(p.name for p in (ROOT / "plugins").iterdir() if p.name.endswith("_bridge"))
    assert {"finance_bridge", "pos_bridge", "inventory_bridge", "project_bridge"} <= set(bridges)
    crossing = []
    for bridge in bridges:
        for source in (ROOT / "plugins" / bridge).rglob("*.py"):
            for module in _imports(source):
                if module.startswith("plugins.") and not module.startswith(f"plugins.{bridge}"):
                    crossing.append(f"{source.relative_to(ROOT)}: {module}")
    for source in (ROOT / "plugins" / "crm").rglob("*.py"):
        crossing += [f"{source.relative_to(ROOT)}: {m}" for m in _imports(source) if m.split(".")[-1] in bridges
                     or any(m.startswith(f"plugins.{b}") for b in bridges)]
    assert crossing == []
