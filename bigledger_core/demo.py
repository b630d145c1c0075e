"""Demo data: bilingual, idempotent. Users here; each enabled module adds its own rows by hook."""
from __future__ import annotations

import secrets

from flask import current_app

from .config import setting
from .db import db
from .modules import enabled_modules

# (user name, first name, last name, email, role)
DEMO_USERS = [
    ("demo_manager", "伟", "张", "zhang.wei@demo.bigledger.example", "Sales Manager"),
    ("demo_rep", "娜", "李", "li.na@demo.bigledger.example", "Sales Rep"),
    ("demo_rep2", "Wei Ming", "Tan", "tan.weiming@demo.bigledger.example", "Sales Rep"),
    ("demo_rep3", "Siti", "Aminah", "siti.aminah@demo.bigledger.example", "Sales Rep"),
    ("demo_marketing", "芳", "王", "wang.fang@demo.bigledger.example", "Marketing"),
    ("demo_support", "Raj", "Kumar", "raj.kumar@demo.bigledger.example", "Support Agent"),
    ("demo_viewer", "Read", "Only", "viewer@demo.bigledger.example", "Read-only"),
]


def load_demo() -> list[str]:
    """Create the demo users (if missing) and let every enabled module add its demo rows."""
    sm = current_app.appbuilder.sm
    report: list[str] = []
    given = setting("BIGLEDGER_DEMO_PASSWORD")
    password = given
    users = {}
    created = []
    for username, first, last, email, role_name in DEMO_USERS:
        user = sm.find_user(username=username)
        if user is None:
            role = sm.find_role(role_name) or sm.find_role("Read-only")
            password = password or secrets.token_urlsafe(9)
            user = sm.add_user(username, first, last, email, role, password)
            created.append(username)
        users[username] = user
    if created:
        report.append(f"demo users created: {', '.join(created)}")
        if not given:
            report.append(f"demo users' password (shown once): {password}")
    host = current_app.extensions["bigledger"]
    session = db.session
    for name, _ in host.call_each("bigledger_load_demo", modules=enabled_modules(), session=session, users=users):
        report.append(f"demo data: {name}")
    session.commit()
    return report
