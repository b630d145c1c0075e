"""Contacts at scale: the contact list, search and the 360° view through the REST API, against raw SQL.

    .venv/bin/python -m benchmarks.contacts [--quick] [--contacts 1000000] [--sqlite-contacts 100000]
        [--requests 200] [--warmup 20] [--budget 15] [--statement-timeout 10] [--postgres URL]
        [--no-sqlite] [--no-postgres] [--explain] [--show-sql] [--database NAME]

Loads a realistic CRM (Chinese names with pinyin search text, some Western and Malay names, E.164 phones
in CN/MY/SG formats, e-mails, N/20 companies in a tree, contacts linked to them, owners and teams, and one
"busy" company with 10,000 activities on it and its contacts) with set-based inserts: COPY on a fresh
PostgreSQL database (default postgresql://postgres@127.0.0.1:5432/postgres, skipped if unreachable;
dropped at the end, also on error, unless --database names one to keep and reuse), executemany in big transactions on SQLite (a file in a temporary
folder). Then measures p50/p99 latency of each operation through the real HTTP stack (Flask test client,
JWT from /api/v1/security/login) as an admin and as a Sales Rep (record rules), and the raw SQL: the CRM
SELECTs each API call sent (same SQL text and parameters, captured from the driver; not the sign-in,
permission and module look-ups) run directly on a psycopg / sqlite3 connection. Each answer is also checked
against hand-written SQL ("same rows"). Targets (from the issue): p99 under 50 ms and within 3x of the raw
SQL (ratio = API p50 / raw p50). They are reported, not asserted. On PostgreSQL every statement gets a
statement_timeout (--statement-timeout, default 10 s) once the data is loaded: a search that would run for
hours is reported as failed for that input instead of stalling the run.

The list's count is the product's: capped at BIGLEDGER_LIST_COUNT_CAP (its default, `count_capped` in the
answer), and the hand-written SQL counts the same way. Search answers are checked against hand-written SQL of the
product's rules: exact matches of the whole name (a contact's pinyin or initials too) first; then, on PostgreSQL,
Latin input and input shorter than 3 characters match the start of words (full-text index), longer Chinese input
and e-mail addresses anywhere (trigram indexes); contacts are also found through the companies the search found.

Each user's table starts with "auth floor": a signed-in request to the search endpoint that is refused before
any CRM work (HTTP 400, input too long). It costs what every request costs (JWT, user, module and permission
checks, Flask) and bounds from below what the API can take; it has no raw SQL.

Prints the tables (and, with --explain, the query plans; always in the JSON) and writes
`benchmarks/results/contacts.json`. Nothing else is left behind: the SQLite file and the app's instance
folder live in a temporary folder.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import logging
import math
import os
import random
import sqlite3
import statistics
import tempfile
import time
import traceback
import uuid
from array import array
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from .common import capture, code_version, crm_statements, write_results

PASSWORD = "Bench-pass-1"
P99_TARGET_MS = 50.0
RATIO_TARGET = 3.0
BUSY_ACTIVITIES = 10_000

# -- what the data looks like ---------------------------------------------------------------------------

# ~100 common family names with rough relative frequencies (per mille), plus a few compound ones.
SURNAMES = [
    ("王", 71), ("李", 70), ("张", 67), ("刘", 54), ("陈", 45), ("杨", 31), ("黄", 22), ("赵", 20), ("吴", 20),
    ("周", 19), ("徐", 13), ("孙", 12), ("马", 11), ("朱", 11), ("胡", 10), ("郭", 9.7), ("何", 9.1), ("林", 8.7),
    ("高", 8.6), ("罗", 7.9), ("郑", 7.3), ("梁", 7.0), ("谢", 5.8), ("宋", 5.4), ("唐", 5.2), ("许", 5.0),
    ("韩", 4.8), ("冯", 4.6), ("邓", 4.5), ("曹", 4.4), ("彭", 4.2), ("曾", 4.1), ("肖", 4.0), ("田", 3.9),
    ("董", 3.8), ("袁", 3.7), ("潘", 3.6), ("于", 3.5), ("蒋", 3.4), ("蔡", 3.3), ("余", 3.2), ("杜", 3.1),
    ("叶", 3.0), ("程", 2.9), ("苏", 2.8), ("魏", 2.7), ("吕", 2.6), ("丁", 2.5), ("任", 2.4), ("沈", 2.3),
    ("姚", 2.2), ("卢", 2.1), ("姜", 2.0), ("崔", 1.9), ("钟", 1.8), ("谭", 1.7), ("陆", 1.7), ("汪", 1.6),
    ("范", 1.6), ("金", 1.5), ("石", 1.5), ("廖", 1.4), ("贾", 1.4), ("夏", 1.3), ("韦", 1.3), ("付", 1.2),
    ("方", 1.2), ("白", 1.1), ("邹", 1.1), ("孟", 1.0), ("熊", 1.0), ("秦", 1.0), ("邱", 1.0), ("江", 0.9),
    ("尹", 0.9), ("薛", 0.9), ("闫", 0.8), ("段", 0.8), ("雷", 0.8), ("侯", 0.8), ("龙", 0.7), ("史", 0.7),
    ("陶", 0.7), ("黎", 0.7), ("贺", 0.6), ("顾", 0.6), ("毛", 0.6), ("郝", 0.6), ("龚", 0.5), ("邵", 0.5),
    ("万", 0.5), ("钱", 0.5), ("严", 0.5), ("覃", 0.4), ("武", 0.4), ("戴", 0.4), ("莫", 0.4), ("孔", 0.4),
    ("向", 0.4), ("汤", 0.4), ("欧阳", 0.2), ("司马", 0.1), ("上官", 0.1), ("诸葛", 0.1),
]
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉力鹏燕浩宇晨晓婷雪琳峰斌俊凯鑫波宁欣颖佳"
             "怡子梓涵轩思雨博昊然嘉睿泽一诗可萱悦晗瑶欢慧琪倩雅婧梅兰凤春海林东国志永亮成新云飞龙庆彬阳帅鸿立"
             "毅楠冰彤蕾璐莉薇健康荣兵宏豪旭坤振福")
EN_GIVEN = ["David", "Michael", "Kevin", "Jason", "Eric", "Tony", "Jack", "Peter", "Lily", "Grace", "Amy", "Cindy",
            "Vivian", "Annie", "Helen", "Coco", "Alice", "Sophia"]
WESTERN_GIVEN = ["James", "John", "Robert", "Michael", "William", "David", "Richard", "Thomas", "Mary", "Patricia",
                 "Jennifer", "Linda", "Elizabeth", "Susan", "Sarah", "Emma", "Olivia", "Daniel", "Matthew", "Andrew",
                 "Mei Ling", "Wei Jie", "Hui Min", "Kok Leong"]
WESTERN_FAMILY = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
                  "Anderson", "Thomas", "Moore", "Martin", "Lee", "Walker", "Hall", "Allen", "Young", "King",
                  "Wright", "Tan", "Lim", "Ng", "Wong", "Goh", "Chong", "Teo"]
MALAY_MALE = ["Ahmad", "Muhammad", "Mohd Faizal", "Hafiz", "Azman", "Rizal", "Hakim", "Amir", "Zulkifli", "Iskandar"]
MALAY_FEMALE = ["Siti", "Nur Aisyah", "Nurul Huda", "Farah", "Aminah", "Zainab", "Aishah", "Hafizah", "Noraini"]
MALAY_FATHER = ["Ismail", "Hassan", "Abdullah", "Yusof", "Ibrahim", "Razak", "Osman", "Rahman", "Ali", "Salleh",
                "Hamzah", "Kassim"]
TITLES = [("销售经理", 8), ("采购经理", 8), ("项目经理", 6), ("总经理", 3), ("副总经理", 2), ("市场经理", 4),
          ("客户经理", 5), ("财务经理", 3), ("区域经理", 3), ("工程师", 8), ("高级工程师", 4), ("销售代表", 8),
          ("采购专员", 6), ("财务总监", 2), ("技术总监", 2), ("董事长", 1), ("行政主管", 4), ("人事主管", 3),
          ("会计", 5), ("Director", 2), ("Manager", 3), ("Sales Executive", 3), ("Procurement Officer", 2),
          ("CEO", 1), (None, 10)]
CITIES = ["北京", "上海", "深圳", "广州", "杭州", "南京", "苏州", "成都", "武汉", "重庆", "天津", "西安", "青岛",
          "厦门", "宁波", "长沙", "郑州", "合肥", "东莞", "佛山", "无锡", "大连", "沈阳", "济南", "福州", "昆明"]
CORE = list("华信宏达金桥腾飞恒泰德盛瑞丰嘉禾中远新海天益博创安康永鑫隆兴汇通鼎力长城东方明阳光源科联正合美佳利顺祥和"
            "欣荣卓越智云龙凯")
INDUSTRIES = [("科技", "Technology"), ("贸易", "Trading"), ("实业", "Industrial"), ("电子", "Electronics"),
              ("物流", "Logistics"), ("医药", "Pharmaceutical"), ("建设", "Construction"), ("机械", "Machinery"),
              ("化工", "Chemical"), ("食品", "Foods"), ("服饰", "Apparel"), ("投资", "Investment"),
              ("网络", "Network"), ("软件", "Software"), ("新能源", "New Energy"), ("环保", "Environmental"),
              ("汽车零部件", "Auto Parts"), ("餐饮管理", "Catering"), ("文化传媒", "Media"), ("精密制造", "Precision")]
FORMS = [("有限公司", 6), ("股份有限公司", 2), ("集团有限公司", 1)]
SEA_A = ["Golden", "Eastern", "Pacific", "Sunrise", "Harbour", "Lion", "Orchid", "Straits", "Merdeka", "Borneo"]
SEA_B = ["Trading", "Logistics", "Holdings", "Engineering", "Resources", "Technologies", "Foods", "Marine"]
REGIONS = ["华东", "华南", "华北", "华中", "西南", "西北", "东北", "东南亚"]
STATUSES = [("prospect", 4), ("customer", 4), ("partner", 1), ("inactive", 1)]
MOBILE_PREFIXES = [130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156, 157, 158, 159,
                   180, 181, 182, 183, 184, 185, 186, 187, 188, 189]
AREA_CODES = [10, 21, 20, 755, 571, 25, 28, 27, 512, 22]
MAIL_DOMAINS = ["163.com", "126.com", "gmail.com", "hotmail.com", "sina.com", "outlook.com"]
KINDS = [("call", 4), ("meeting", 2), ("email", 3), ("note", 2), ("task", 1)]
SUBJECTS = ["电话沟通报价", "上门拜访", "发送合同草稿", "产品演示", "年度续约洽谈", "售后回访", "技术交流会", "发送发票",
            "催款提醒", "Follow-up call", "Quarterly business review", "Site visit", "Sent price list"]
OUTCOMES = ["有意向", "需跟进", "已成交", "暂无需求", None, None]
BUSY = ("东方远航集团有限公司", "Oriental Voyage Group")
BUSY_CHILDREN = [("东方远航(上海)物流有限公司", 1), ("东方远航(深圳)贸易有限公司", 1), ("东方远航(青岛)港务有限公司", 1),
                 ("Oriental Voyage (Singapore) Pte Ltd", 1), ("东方远航(上海)冷链仓储有限公司", 2)]


def _weighted(rng: random.Random, pairs, k: int) -> list:
    values, weights = zip(*pairs)
    return rng.choices(values, weights=weights, k=k)


class Dataset:
    """Everything to load, kept compact (arrays of small ints and a table of distinct names); the rows of
    each table are produced on demand by the *_rows generators, so 1M contacts fit in little memory."""

    def __init__(self, contacts: int, busy_contacts: int, seed: int):
        from plugins.crm.normalize import name_keys, search_text

        self.n = contacts
        self.seed = seed
        rng = random.Random(seed)
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.stamps = [self.now - dt.timedelta(seconds=rng.randrange(5 * 365 * 86400)) for _ in range(1000)]
        self.companies = max(contacts // 20, 20)
        self.busy_contacts = min(busy_contacts, contacts // 4)
        self.users: dict[str, int] = {}  # filled in by the loader: username -> id
        self.teams: dict[str, int] = {}
        cache: dict[tuple, str] = {}

        def text(*names):
            key = names
            if key not in cache:
                cache[key] = search_text(*names)
            return cache[key]

        start = time.perf_counter()
        # names: (full, family, given, name_en, search_text, e-mail local part, initials)
        self.names: list[tuple] = []
        index: dict[tuple, int] = {}

        def name_id(full, family, given, name_en, local):
            key = (full, name_en)
            found = index.get(key)
            if found is None:
                stext = text(full, name_en)
                if local is None:  # Chinese: pinyin of the name ("zhangwei") and its initials ("zw")
                    local, initials = name_keys(full)
                else:
                    initials = ""
                found = index[key] = len(self.names)
                self.names.append((full, family, given, name_en, stext, local, initials))
            return found

        surnames = _weighted(rng, SURNAMES, contacts)
        given_weights = [1 / (rank + 4) for rank in range(len(GIVEN))]
        given = rng.choices(GIVEN, weights=given_weights, k=2 * contacts)
        surname_pinyin = {s: text(s).split(" | ")[1].title() for s, _w in SURNAMES}
        titles = _weighted(rng, [(i, w) for i, (_t, w) in enumerate(TITLES)], contacts)
        self.name_of = array("i", bytes(4 * contacts))
        self.title_of = array("b", titles)
        self.owner_of = array("b", bytes(contacts))     # index into OWNERS
        self.mobile = array("q", bytes(8 * contacts))   # E.164 digits, 0 = none
        self.landline = array("q", bytes(8 * contacts))
        self.mail = array("b", bytes(contacts))         # 0 none, 1 personal, 2 qq, 3 work
        self.mail_n = array("i", bytes(4 * contacts))
        self.company_of = array("i", bytes(4 * contacts))
        self.company2_of = array("i", bytes(4 * contacts))
        self.role_of = array("b", bytes(contacts))
        for i in range(contacts):
            r = rng.random()
            if r < 0.85:
                family = surnames[i]
                first = given[2 * i] + (given[2 * i + 1] if rng.random() < 0.65 else "")
                name_en = f"{rng.choice(EN_GIVEN)} {surname_pinyin[family]}" if rng.random() < 0.08 else None
                self.name_of[i] = name_id(family + first, family, first, name_en, None)
            elif r < 0.95:
                family, first = rng.choice(WESTERN_FAMILY), rng.choice(WESTERN_GIVEN)
                self.name_of[i] = name_id(f"{first} {family}", family, first, None,
                                          f"{first.split()[0]}.{family}".lower())
            else:
                female = rng.random() < 0.5
                first = rng.choice(MALAY_FEMALE if female else MALAY_MALE)
                father = rng.choice(MALAY_FATHER)
                self.name_of[i] = name_id(f"{first} {'binti' if female else 'bin'} {father}", None, first, None,
                                          f"{first.split()[0]}.{father}".lower())
            self.owner_of[i] = rng.choices(range(6), weights=(18, 18, 18, 18, 18, 10))[0]
            p = rng.random()
            if p < 0.88:
                self.mobile[i] = int(f"86{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10 ** 8):08d}")
            elif p < 0.95:
                self.mobile[i] = int(f"601{rng.choice('23679')}{rng.randrange(10 ** 7):07d}")
            else:
                self.mobile[i] = int(f"65{rng.choice('89')}{rng.randrange(10 ** 7):07d}")
            if rng.random() < 0.12:
                area = rng.choice(AREA_CODES)
                self.landline[i] = int(f"86{area}{rng.randrange(2, 9)}{rng.randrange(10 ** 7):07d}")
            m = rng.random()
            self.mail[i] = 0 if m < 0.25 else 1 if m < 0.5 else 2 if m < 0.6 else 3
            self.mail_n[i] = rng.randrange(10 ** 9)
            if i < self.busy_contacts:
                self.company_of[i] = 1
            elif rng.random() < 0.9:
                self.company_of[i] = rng.randrange(2, self.companies + 1)
                if rng.random() < 0.05:
                    other = rng.randrange(2, self.companies + 1)
                    self.company2_of[i] = other if other != self.company_of[i] else 0
            self.role_of[i] = rng.randrange(4)  # 0 = no role, else crm_contact_role.id
        # companies: (name, name_en, legal_name, industry, region, status, parent_id, owner index, domain)
        self.company: list[tuple] = [None]  # 1-based
        self.company_text: list[str] = [""]
        self.company.append((BUSY[0], BUSY[1], BUSY[0], "物流", "华东", "customer", None, 0, "ovgroup.com.cn"))
        for name, parent in BUSY_CHILDREN:
            self.company.append((name, None, name, "物流", "华东", "customer", parent, 0, "ovgroup.com.cn"))
        statuses = _weighted(rng, STATUSES, self.companies)
        for cid in range(len(self.company), self.companies + 1):
            if rng.random() < 0.05:
                name = f"{rng.choice(SEA_A)} {rng.choice(SEA_B)} {rng.choice(['Sdn Bhd', 'Pte Ltd'])}"
                industry, name_en, legal = rng.choice(INDUSTRIES)[0], None, name
                region = "东南亚"
            else:
                city, core = rng.choice(CITIES), rng.choice(CORE) + rng.choice(CORE)
                industry, industry_en = rng.choice(INDUSTRIES)
                form = _weighted(rng, FORMS, 1)[0]
                name = f"{city}{core}{industry}{form}"
                name_en = None
                if rng.random() < 0.25:
                    pinyin = text(city + core).split(" | ")[1].title()
                    name_en = f"{pinyin} {industry_en} Co., Ltd."
                legal = name if rng.random() < 0.5 else None
                region = rng.choice(REGIONS[:-1])
            domain = f"{text(name).split(' | ')[-1][:6] or 'corp'}{cid}.com.cn"
            self.company.append((name, name_en, legal, industry, region, statuses[cid - 1], None,
                                 rng.randrange(6), domain))
        for row in self.company[1:]:
            self.company_text.append(text(row[0], row[1], row[2]))
        self.prepare_seconds = time.perf_counter() - start
        self.distinct_names = len(self.names)
        self.distinct_texts = len(cache)

    # -- owners: rep1..rep5 and admin; rep1+rep2 are team A, rep3+rep4 team B -----------------------------

    OWNERS = ["rep1", "rep2", "rep3", "rep4", "rep5", "admin"]
    TEAM_OF = {"rep1": "A", "rep2": "A", "rep3": "B", "rep4": "B"}

    def owner(self, slot: int) -> tuple[int, int | None]:
        username = self.OWNERS[slot]
        team = self.TEAM_OF.get(username)
        return self.users[username], (self.teams[team] if team else None)

    # -- table rows, in the column order of COLUMNS ---------------------------------------------------------

    COLUMNS = {
        "crm_company": ["id", "name", "name_en", "legal_name", "industry", "employees", "region", "website", "status",
                        "parent_id", "owner_id", "team_id", "external_id", "custom", "search_text", "created_at",
                        "updated_at", "version"],
        "crm_contact": ["id", "full_name", "family_name", "given_name", "name_en", "title", "owner_id", "team_id",
                        "external_id", "custom", "search_text", "pinyin", "initials", "created_at", "updated_at",
                        "version"],
        "crm_contact_company": ["id", "contact_id", "company_id", "role_id", "is_primary"],
        "crm_phone": ["id", "contact_id", "company_id", "kind", "raw", "e164", "is_primary"],
        "crm_email": ["id", "contact_id", "company_id", "kind", "address", "is_primary"],
        "crm_activity": ["id", "kind", "subject", "body", "outcome", "duration_minutes", "occurred_at", "due_at",
                         "done", "contact_id", "company_id", "user_id"],
    }

    def company_rows(self):
        rng = random.Random(self.seed + 1)
        for cid in range(1, self.companies + 1):
            name, name_en, legal, industry, region, status, parent, slot, domain = self.company[cid]
            owner, team = self.owner(slot)
            custom = '{"credit_limit": 5000000}' if cid == 1 else "{}"
            stamp = self.stamps[cid % 1000]
            yield (cid, name, name_en, legal, industry, rng.randrange(5, 5000), region, f"https://www.{domain}",
                   status, parent, owner, team, f"CO{cid:07d}" if cid % 3 else None, custom, self.company_text[cid],
                   stamp, stamp, 1)

    def contact_rows(self):
        for i in range(self.n):
            full, family, given, name_en, stext, local, initials = self.names[self.name_of[i]]
            owner, team = self.owner(self.owner_of[i])
            stamp = self.stamps[i % 1000]
            yield (i + 1, full, family, given, name_en, TITLES[self.title_of[i]][0], owner, team,
                   f"CT{i + 1:08d}" if i % 2 else None, "{}", stext, local if initials else None, initials or None,
                   stamp, stamp, 1)

    def link_rows(self):
        ids = itertools.count(1)
        for i in range(self.n):
            if self.company_of[i]:
                yield next(ids), i + 1, self.company_of[i], self.role_of[i] or None, True
            if self.company2_of[i]:
                yield next(ids), i + 1, self.company2_of[i], None, False

    @staticmethod
    def phone_raw(e164: int, style: int) -> str:
        digits = str(e164)
        if digits.startswith("86") and digits[2] == "1":  # CN mobile
            n = digits[2:]
            return [f"{n[:3]} {n[3:7]} {n[7:]}", n, f"+86 {n[:3]}-{n[3:7]}-{n[7:]}", f"{n[:3]}-{n[3:7]}-{n[7:]}",
                    f"+86{n}"][style % 5]
        if digits.startswith("86"):  # CN landline: 3- or 4-digit area code with the trunk 0
            area = digits[2:4] if digits[2:4] in {"10", "21", "20", "25", "28", "27", "22"} else digits[2:5]
            local = digits[2 + len(area):]
            return [f"0{area}-{local[:4]} {local[4:]}", f"(0{area}) {local}", f"+86 {area} {local[:4]} {local[4:]}"][
                style % 3]
        if digits.startswith("60"):
            n = digits[2:]
            return [f"+60 {n[:2]}-{n[2:5]} {n[5:]}", f"+{digits}"][style % 2]
        n = digits[2:]
        return [f"+65 {n[:4]} {n[4:]}", f"+65 {n}"][style % 2]

    def phone_rows(self):
        ids = itertools.count(1)
        for i in range(self.n):
            if self.mobile[i]:
                yield next(ids), i + 1, None, "mobile", self.phone_raw(self.mobile[i], i), f"+{self.mobile[i]}", True
            if self.landline[i]:
                yield next(ids), i + 1, None, "work", self.phone_raw(self.landline[i], i), f"+{self.landline[i]}", \
                    False
        rng = random.Random(self.seed + 2)
        for cid in range(1, self.companies + 1):
            if cid <= 6 or rng.random() < 0.6:
                e164 = int(f"86{rng.choice(AREA_CODES)}{rng.randrange(2, 9)}{rng.randrange(10 ** 7):07d}")
                yield next(ids), None, cid, "work", self.phone_raw(e164, cid), f"+{e164}", True

    def email_rows(self):
        ids = itertools.count(1)
        for i in range(self.n):
            kind = self.mail[i]
            if not kind:
                continue
            local, n = self.names[self.name_of[i]][5], self.mail_n[i]
            company = self.company_of[i]
            if kind == 3 and company:
                yield next(ids), i + 1, None, "work", f"{local}@{self.company[company][8]}", True
            elif kind == 2:
                yield next(ids), i + 1, None, "personal", f"{n % 900000000 + 100000000}@qq.com", True
            else:
                yield next(ids), i + 1, None, "personal", f"{local}{n % 10000}@{MAIL_DOMAINS[n % 6]}", True
        rng = random.Random(self.seed + 3)
        for cid in range(1, self.companies + 1):
            if cid <= 6 or rng.random() < 0.5:
                mailbox = rng.choice(["info", "sales", "contact"])
                yield next(ids), None, cid, "work", f"{mailbox}@{self.company[cid][8]}", True

    def activity_rows(self):
        rng = random.Random(self.seed + 4)
        users = [self.users[u] for u in self.OWNERS]
        span = 3 * 365 * 86400

        def row(aid, contact_id, company_id):
            kind = _weighted(rng, KINDS, 1)[0]
            at = self.now - dt.timedelta(seconds=rng.randrange(span))
            return (aid, kind, rng.choice(SUBJECTS), "沟通记录：客户关注交期与价格。" if rng.random() < 0.3 else None,
                    rng.choice(OUTCOMES), rng.randrange(5, 120) if kind in ("call", "meeting") else None, at,
                    at + dt.timedelta(days=7) if kind == "task" else None, rng.random() < 0.5, contact_id,
                    company_id, rng.choice(users))

        ids = itertools.count(1)
        for _ in range(BUSY_ACTIVITIES):  # on the busy company and its people
            r = rng.random()
            if r < 0.4 or not self.busy_contacts:
                yield row(next(ids), None, 1)
            else:
                contact = rng.randrange(1, self.busy_contacts + 1)
                yield row(next(ids), contact, 1 if r < 0.7 else None)
        for _ in range(self.n // 10):  # background: everyone else
            if rng.random() < 0.7:
                yield row(next(ids), rng.randrange(self.busy_contacts + 1, self.n + 1), None)
            else:
                yield row(next(ids), None, rng.randrange(7, self.companies + 1))

    def tables(self):
        return [("crm_company", self.company_rows), ("crm_contact", self.contact_rows),
                ("crm_contact_company", self.link_rows), ("crm_phone", self.phone_rows),
                ("crm_email", self.email_rows), ("crm_activity", self.activity_rows)]

    # -- what to search for ---------------------------------------------------------------------------

    def samples(self, count: int = 10) -> dict[str, list[str]]:
        """Search inputs taken from the generated data: Chinese names, their pinyin and initials, phones."""
        rng = random.Random(self.seed + 5)
        chinese, seen = [], set()
        while len(chinese) < count:
            full, _f, _g, _en, _t, local, initials = self.names[self.name_of[rng.randrange(self.n)]]
            if initials and full not in seen:
                seen.add(full)
                chinese.append((full, local, initials))
        zhangwei = next((e for e in self.names if e[0] == "张伟"), None)
        if zhangwei is not None and "张伟" not in seen:
            chinese[0] = (zhangwei[0], zhangwei[5], zhangwei[6])
        phones = []
        while len(phones) < count:
            e164 = self.mobile[rng.randrange(self.n)]
            if str(e164).startswith("861"):
                phones.append(self.phone_raw(e164, 0))  # '138 0013 8000'
        return {"name": [c[0] for c in chinese], "pinyin": [c[1] for c in chinese],
                "initials": [c[2] for c in chinese], "phone": phones}

    def check_phones(self, sample: int = 500) -> int:
        """How many generated raw phones parse_phone() reads differently from the stored E.164 (should be 0)."""
        from plugins.crm.normalize import InvalidValue, parse_phone

        bad = 0
        for row in itertools.islice(self.phone_rows(), 0, None, max(self.n // sample, 1)):
            try:
                bad += parse_phone(row[4], "CN") != row[5]
            except InvalidValue:
                bad += 1
        return bad


# -- loading ---------------------------------------------------------------------------------------------

def _app(url: str, folder: Path):
    from bigledger_core.app import create_app
    from bigledger_core.db import db
    from bigledger_core.migrate import upgrade
    from bigledger_core.security import sync_security

    app = create_app({"BIGLEDGER_ENV": "development", "INSTANCE_PATH": str(folder), "SQLALCHEMY_DATABASE_URI": url,
                      "BIGLEDGER_MODULES": None, "BIGLEDGER_EVENT_FIRST_ATTEMPT": "off",
                      "JWT_ACCESS_TOKEN_EXPIRES": dt.timedelta(hours=6)})
    with app.app_context():
        upgrade()
        sync_security(app.appbuilder)
        db.session.remove()
    return app


def _statement_timeout(app, seconds: float) -> None:
    """On PostgreSQL, every connection the app opens from now on gets a statement_timeout: a runaway query
    fails its request (HTTP 500, reported as failed) instead of running for hours."""
    from sqlalchemy import event

    from bigledger_core.db import db

    with app.app_context():
        engine = db.engine
        if engine.dialect.name != "postgresql":
            return

        def limit(dbapi_connection, _record):
            dbapi_connection.execute(f"SET statement_timeout = {int(seconds * 1000)}")
            dbapi_connection.commit()

        event.listen(engine, "connect", limit)
        engine.dispose()


def _people(app, data: Dataset) -> None:
    """Users through the security manager (admin; rep1..rep5 as Sales Reps) and two teams."""
    from bigledger_core.db import db
    from bigledger_core.models import Team

    with app.app_context():
        sm = app.appbuilder.sm
        for username in ["admin", "rep1", "rep2", "rep3", "rep4", "rep5"]:
            role = sm.find_role("Admin" if username == "admin" else "Sales Rep")
            user = sm.add_user(username, username.title(), "Bench", f"{username}@bench.example.com", role, PASSWORD)
            assert user, f"could not create {username}"
            data.users[username] = user.id
        for team, members in (("A", ["rep1", "rep2"]), ("B", ["rep3", "rep4"])):
            row = Team(name=f"销售{team}组", name_en=f"Sales team {team}",
                       members=[sm.get_user_by_id(data.users[m]) for m in members])
            db.session.add(row)
            db.session.commit()
            data.teams[team] = row.id
        db.session.remove()


def _extras(app) -> None:
    """A few rows the 360 view shows for the busy company, through the ORM: tags, an address, custom fields."""
    from bigledger_core.db import db
    from plugins.crm.models import Address, CustomField, Tag, company_tag

    with app.app_context():
        s = db.session
        tags = [Tag(name="重点客户 / Key account", color="#d9534f"), Tag(name="物流 / Logistics", color="#5bc0de"),
                Tag(name="年框 / Annual contract", color="#5cb85c")]
        s.add_all(tags)
        s.add(Address(company_id=1, kind="office", country="CN", province="上海市", city="上海", district="浦东新区",
                      street="世纪大道100号", postcode="200120", is_primary=True))
        s.add(CustomField(entity="company", key="credit_limit", label="信用额度", label_en="Credit limit",
                          type="number", position=1))
        s.flush()
        s.execute(company_tag.insert(), [{"company_id": 1, "tag_id": t.id} for t in tags])
        s.commit()
        s.remove()


def _load_postgres(dsn: str, data: Dataset) -> dict:
    tables = [name for name, _rows in data.tables()]
    timings = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        # Secondary indexes (not those behind a constraint) are dropped, the rows copied, the indexes rebuilt
        # from their own definitions: the schema ends up exactly as the migration made it.
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            "AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass)",
            [tables]).fetchall()
        for name, _definition in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        for table, rows in data.tables():
            start = time.perf_counter()
            columns = data.COLUMNS[table]
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows():
                        copy.write_row(row)
            timings[f"copy_{table}"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        for _name, definition in indexes:
            conn.execute(definition)
        timings["indexes"] = round(time.perf_counter() - start, 1)
        for table in tables:
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"(SELECT coalesce(max(id), 1) FROM {table}))")
        start = time.perf_counter()
        # VACUUM as well as ANALYZE: statistics for the planner, and the visibility map autovacuum would
        # otherwise build in the middle of the measurements.
        conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
        timings["vacuum_analyze"] = round(time.perf_counter() - start, 1)
    return timings


def _lite(value):
    if isinstance(value, dt.datetime):  # how SQLAlchemy stores DateTime on SQLite (UTC, naive)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def _load_sqlite(path: str, data: Dataset) -> dict:
    timings = {}
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    for table, rows in data.tables():
        start = time.perf_counter()
        columns = data.COLUMNS[table]
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        generator = rows()
        with conn:  # one transaction per table
            while chunk := list(itertools.islice(generator, 50_000)):
                conn.executemany(sql, [tuple(_lite(v) for v in row) for row in chunk])
        timings[f"insert_{table}"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    conn.execute("ANALYZE")
    conn.commit()
    timings["analyze"] = round(time.perf_counter() - start, 1)
    conn.close()
    return timings


# -- the operations: API call, the same rows in raw SQL, and what to compare ------------------------------

class Raw:
    """The raw SQL side: a psycopg or sqlite3 connection, `%s` placeholders either way."""

    def __init__(self, backend: str, target: str, timeout_s: float):
        self.backend = backend
        # prepare_threshold=None: no server-side prepared statements. With psycopg's default (prepare after 5
        # executions) PostgreSQL soon switches the search SELECT (its LIMIT a literal) to a generic plan that is
        # about 2x slower than the custom plans the app's statements keep getting (their LIMIT is a parameter).
        self.conn = (psycopg.connect(target, autocommit=True, prepare_threshold=None,
                                     options=f"-c statement_timeout={int(timeout_s * 1000)}")
                     if backend == "postgresql" else sqlite3.connect(target))

    def all(self, sql: str, params=()):
        if self.backend == "sqlite":
            sql = sql.replace("%s", "?")
        return self.conn.execute(sql, params).fetchall()

    def run(self, sql: str, params=()) -> None:
        """A statement without rows (DDL, ANALYZE), not subject to the statement timeout."""
        if self.backend == "sqlite":
            self.conn.execute(sql, params)
            self.conn.commit()
            return
        self.conn.execute("SET statement_timeout = 0")
        try:
            self.conn.execute(sql, params)
        finally:
            self.conn.execute("RESET statement_timeout")

    def one(self, sql: str, params=()):
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def replay(self, statements) -> None:
        """Run (statement, parameters) pairs exactly as the app's driver got them, fetching every row."""
        for sql, params in statements:
            self.conn.execute(sql, params).fetchall()

    def plan(self, sql: str, params=(), analyze: bool = True) -> list[str]:
        """EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL (plain EXPLAIN when it would run past the statement
        timeout), EXPLAIN QUERY PLAN on SQLite, of a statement as the app's driver got it."""
        if self.backend == "sqlite":
            return [f"{'  ' * (r[1] > 0)}{r[3]}" for r in self.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        note = "(EXPLAIN without ANALYZE)"
        if analyze:
            try:
                return [r[0] for r in self.conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)]
            except psycopg.errors.QueryCanceled:
                note = "(EXPLAIN without ANALYZE: the query runs past the statement timeout)"
        return [note] + [r[0] for r in self.conn.execute("EXPLAIN " + sql, params)]

    def close(self):
        self.conn.close()


def _ids(values) -> str:
    return ", ".join(str(int(v)) for v in values) or "NULL"


def _visible_sql(table: str, vis) -> str:
    """`visibility_clause` in SQL: nothing for the admin, owner or team for a Sales Rep."""
    if vis is None:
        return ""
    user_id, teams = vis
    if teams:
        return f" AND ({table}.owner_id = {int(user_id)} OR {table}.team_id IN ({_ids(teams)}))"
    return f" AND {table}.owner_id = {int(user_id)}"


def _count_cap() -> int:
    """BIGLEDGER_LIST_COUNT_CAP's default, which the app runs with."""
    from bigledger_core.config import SETTINGS

    return int(next(s.default for s in SETTINGS if s.env == "BIGLEDGER_LIST_COUNT_CAP"))


LIST_COUNT_CAP = _count_cap()
LIST_COLUMNS = "id, full_name, family_name, given_name, name_en, title, owner_id, team_id, external_id, custom, version"


def _list_where(backend: str, column: str, opr: str, value, vis) -> tuple[str, list]:
    where = "crm_contact.merged_into_id IS NULL" + _visible_sql("crm_contact", vis)
    if opr == "ct":
        like = f"%{value}%"
        return (where + (f" AND crm_contact.{column} ILIKE %s" if backend == "postgresql" else
                         f" AND lower(crm_contact.{column}) LIKE lower(%s)"), [like])
    return where + f" AND crm_contact.{column} = %s", [value]


def raw_list(raw: Raw, v: dict, vis):
    where, params = _list_where(raw.backend, v["col"], v["opr"], v["value"], vis)
    count = raw.one(f"SELECT count(*) FROM (SELECT 1 FROM crm_contact WHERE {where} LIMIT {LIST_COUNT_CAP + 1}) AS hits",
                    params)[0]
    rows = raw.all(f"SELECT {LIST_COLUMNS} FROM crm_contact WHERE {where} ORDER BY crm_contact.full_name ASC, "
                   "crm_contact.id ASC LIMIT 25 OFFSET 0", params)  # FAB adds the primary key as tie-breaker
    return {"count": min(count, LIST_COUNT_CAP), "capped": count > LIST_COUNT_CAP, "ids": [r[0] for r in rows],
            "names": [r[1] for r in rows]}


def raw_search(raw: Raw, v: dict, vis, limit: int = 20):
    """`plugins.crm.queries.search` written by hand: companies, then contacts; of each, first the visible records
    whose whole name (a contact's pinyin or initials too) equals the input, then, while there is room, those
    matched by name/pinyin (PostgreSQL, Latin input or under 3 characters: word prefixes through the full-text
    index), e-mail (3 characters or more), phone and (contacts) the companies found; each part shortest names
    first."""
    import re

    from plugins.crm.normalize import normalize_name, phone_query

    text = normalize_name(v["q"])
    clean = text.replace("%", "").replace("_", "")
    e164 = phone_query(v["q"], "CN")
    postgresql = raw.backend == "postgresql"
    by_word = postgresql and (len(clean) < 3 or clean.isascii())
    words = re.findall(r"\w+", clean)
    word = "".join(words)
    found, company_ids = [], []
    for table, name, owner in (("crm_company", "name", "company_id"), ("crm_contact", "full_name", "contact_id")):
        exact, exact_params = f"lower({table}.{name}) = %s", [text]
        if table == "crm_contact" and word.isascii() and word:
            exact, exact_params = f"({exact} OR crm_contact.pinyin = %s OR crm_contact.initials = %s)", [text, word, word]
        order = f"ORDER BY length({table}.{name}), {table}.{name}, {table}.id"
        where = f"{table}.merged_into_id IS NULL{_visible_sql(table, vis)}"
        rows = raw.all(f"SELECT {table}.id, {table}.{name} FROM {table} WHERE {exact} AND {where} {order} "
                       f"LIMIT {int(limit)}", exact_params)
        branches, params = [], []
        if not by_word:
            branches.append(f"SELECT id FROM {table} WHERE search_text LIKE %s")
            params.append(f"%{clean}%")
        elif words:
            branches.append(f"SELECT id FROM {table} WHERE to_tsvector('simple', search_text) "
                            "@@ to_tsquery('simple', %s)")
            params.append(" & ".join(f"{w}:*" for w in words))
        if len(clean) >= 3 or not postgresql:
            branches.append(f"SELECT {owner} AS id FROM crm_email WHERE {owner} IS NOT NULL AND address LIKE %s")
            params.append(f"%{clean}%")
        if e164:
            branches.append(f"SELECT {owner} AS id FROM crm_phone WHERE e164 = %s")
            params.append(e164)
        if table == "crm_contact" and company_ids:
            branches.append("SELECT contact_id AS id FROM crm_contact_company "
                            f"WHERE company_id IN ({_ids(company_ids)})")
        if branches and len(rows) < limit:
            rows += raw.all(f"SELECT {table}.id, {table}.{name} FROM {table} JOIN ({' UNION '.join(branches)}) "
                            f"AS hits ON hits.id = {table}.id WHERE {where}"
                            + (f" AND {table}.id NOT IN ({_ids(r[0] for r in rows)})" if rows else "")
                            + f" {order} LIMIT {int(limit - len(rows))}", params)
        if table == "crm_company":
            company_ids = [r[0] for r in rows]
        found += [("company" if table == "crm_company" else "contact", r[0], r[1]) for r in rows]
    return found[:limit]


def _scope_sql(company_ids, contact_ids) -> str:
    return f"(crm_activity.company_id IN ({_ids(company_ids)}) OR crm_activity.contact_id IN ({_ids(contact_ids)}))"


def raw_360(raw: Raw, v: dict, vis):
    """The SELECTs `customer_360` runs for a company, in the same order, as SQL text."""
    pk = v["id"]
    record = raw.one("SELECT id, name, name_en, legal_name, industry, employees, region, website, status, parent_id, "
                     "merged_into_id, owner_id, team_id, external_id, custom, search_text, created_at, updated_at, "
                     f"version FROM crm_company WHERE crm_company.id = %s{_visible_sql('crm_company', vis)}", [pk])
    if record is None:
        return None
    owner = raw.one("SELECT username FROM ab_user WHERE id = %s", [record[11]]) if record[11] else None
    team = raw.one("SELECT name FROM bl_team WHERE id = %s", [record[12]]) if record[12] else None
    below = raw.all("WITH RECURSIVE tree(id, parent_id, depth) AS (SELECT id, parent_id, 1 FROM crm_company "
                    "WHERE parent_id = %s UNION SELECT c.id, c.parent_id, tree.depth + 1 FROM crm_company c "
                    "JOIN tree ON c.parent_id = tree.id) SELECT id, depth FROM tree ORDER BY depth", [pk])
    company_ids = [pk] + [r[0] for r in below]
    contact_ids = [r[0] for r in raw.all("SELECT contact_id FROM crm_contact_company WHERE company_id = %s", [pk])]
    chain, current = [], pk
    while True:
        parent = raw.one("SELECT parent_id FROM crm_company WHERE id = %s", [current])
        if parent is None or parent[0] is None or parent[0] in chain or parent[0] == pk:
            break
        chain.append(current := parent[0])
    raw.all(f"SELECT id, name FROM crm_company WHERE id IN ({_ids(chain + company_ids)})")
    raw.all(f"SELECT company_id, count(*) FROM crm_contact_company WHERE company_id IN ({_ids(company_ids)}) "
            "GROUP BY company_id")
    raw.all(f"SELECT id, parent_id FROM crm_company WHERE id IN ({_ids(r[0] for r in below)})")
    people = raw.all("SELECT crm_contact.id, crm_contact.full_name, crm_contact.title, crm_contact_role.name, "
                     "crm_contact_role.name_en, crm_contact_company.is_primary FROM crm_contact "
                     "JOIN crm_contact_company ON crm_contact_company.contact_id = crm_contact.id "
                     "LEFT OUTER JOIN crm_contact_role ON crm_contact_role.id = crm_contact_company.role_id "
                     "WHERE crm_contact_company.company_id = %s AND crm_contact.merged_into_id IS NULL "
                     "ORDER BY crm_contact_company.is_primary DESC, crm_contact.full_name, crm_contact.id LIMIT 50",
                     [pk])
    people_total = raw.one("SELECT count(*) FROM crm_contact_company WHERE company_id = %s", [pk])[0]
    phones = raw.all("SELECT id, contact_id, company_id, kind, raw, e164, is_primary FROM crm_phone "
                     "WHERE company_id = %s ORDER BY is_primary DESC, id", [pk])
    emails = raw.all("SELECT id, contact_id, company_id, kind, address, is_primary FROM crm_email "
                     "WHERE company_id = %s ORDER BY is_primary DESC, id", [pk])
    raw.all("SELECT * FROM crm_address WHERE company_id = %s ORDER BY is_primary DESC, id", [pk])
    # likely duplicates: the same e-mail, phone or name
    found = set()
    if emails:
        found |= {r[0] for r in raw.all("SELECT company_id FROM crm_email WHERE address IN "
                                        f"({', '.join(['%s'] * len(emails))}) AND company_id IS NOT NULL",
                                        [e[4] for e in emails])}
    if [p for p in phones if p[5]]:
        found |= {r[0] for r in raw.all("SELECT company_id FROM crm_phone WHERE e164 IN "
                                        f"({', '.join(['%s'] * len(phones))}) AND company_id IS NOT NULL",
                                        [p[5] for p in phones])}
    from plugins.crm.normalize import normalize_name

    found |= {r[0] for r in raw.all("SELECT id FROM crm_company WHERE lower(name) = %s", [normalize_name(record[1])])}
    found.discard(pk)
    duplicates = sorted(r[0] for r in raw.all(
        f"SELECT id, name FROM crm_company WHERE id IN ({_ids(found)}) AND merged_into_id IS NULL"
        f"{_visible_sql('crm_company', vis)}")) if found else []
    raw.all("SELECT crm_tag.id, crm_tag.name, crm_tag.color FROM crm_tag JOIN crm_company_tag "
            "ON crm_tag.id = crm_company_tag.tag_id WHERE crm_company_tag.company_id = %s", [pk])
    raw.all("SELECT * FROM crm_custom_field WHERE entity = 'company' AND active ORDER BY position, id")
    raw.all("SELECT * FROM crm_document WHERE company_id = %s ORDER BY uploaded_at DESC LIMIT 50", [pk])
    history = raw.all("SELECT action, changes, at, user_id FROM crm_audit WHERE entity = 'crm_company' "
                      "AND record_id = %s ORDER BY at DESC, id DESC LIMIT 20", [pk])
    raw.all(f"SELECT id, username FROM ab_user WHERE id IN ({_ids({h[3] for h in history if h[3]})})")
    scope = _scope_sql(company_ids, contact_ids)
    counts = dict(raw.all(f"SELECT kind, count(*) FROM crm_activity WHERE {scope} GROUP BY kind"))
    total = raw.one(f"SELECT count(*) FROM crm_activity WHERE {scope}")[0]
    page = raw.all("SELECT crm_activity.*, ab_user.username FROM crm_activity LEFT OUTER JOIN ab_user "
                   f"ON ab_user.id = crm_activity.user_id WHERE {scope} "
                   "ORDER BY crm_activity.occurred_at DESC, crm_activity.id DESC LIMIT 25")
    _ = owner, team
    return {"people": [r[0] for r in people], "people_total": people_total, "timeline": [r[0] for r in page],
            "total": total, "counts": counts, "duplicates": duplicates}


def _key(op: str, body: dict):
    """What the API answered, in the shape the raw functions return."""
    result = body["result"]
    if op.startswith("list"):
        return {"count": body["count"], "capped": body["count_capped"], "ids": body["ids"],
                "names": [r["full_name"] for r in result]}
    if op.startswith("search"):
        return [(r["kind"], r["id"], r["name"]) for r in result]
    return {"people": [p["id"] for p in result["people"]], "people_total": result["people_pages"]["total"],
            "timeline": [e["id"] for e in result["timeline"]["entries"] if e["source"] == "crm"],
            "total": result["timeline"]["total"], "counts": result["activity_counts"],
            "duplicates": sorted(d["id"] for d in result.get("duplicates", []))}


def _rows(op: str, key) -> str:
    if key is None:
        return "-"
    if op.startswith("list"):
        return f"{len(key['names'])}/{key['count']}{'+' * key['capped']}"
    if op.startswith("search"):
        return str(len(key))
    return f"{len(key['people'])}/{key['people_total']}p+{len(key['timeline'])}t/{key['total']}"


def _operations(data: Dataset, user: str) -> list[dict]:
    import prison

    samples = data.samples()
    owner_filter = data.users["rep2" if user == "admin" else user]
    ops = [
        {"op": "list title~经理", "kind": "list", "variants": [{"col": "title", "opr": "ct", "value": "经理"}]},
        {"op": "list owner=", "kind": "list", "variants": [{"col": "owner_id", "opr": "eq", "value": owner_filter}]},
        {"op": "search name", "kind": "search", "variants": [{"q": q} for q in samples["name"]]},
        {"op": "search pinyin", "kind": "search", "variants": [{"q": q} for q in samples["pinyin"]]},
        {"op": "search initials", "kind": "search", "variants": [{"q": q} for q in samples["initials"]]},
        {"op": "search phone", "kind": "search", "variants": [{"q": q} for q in samples["phone"]]},
        {"op": "360 busy company", "kind": "360", "variants": [{"id": 1}]},
    ]
    for op in ops:
        for v in op["variants"]:
            if op["kind"] == "list":
                q = prison.dumps({"order_column": "full_name", "order_direction": "asc", "page": 0, "page_size": 25,
                                  "filters": [{"col": v["col"], "opr": v["opr"], "value": v["value"]}]})
                v["path"], v["query"] = "/api/v1/crm/contact/", {"q": q}
            elif op["kind"] == "search":
                v["path"], v["query"] = "/api/v1/crm/search", {"q": v["q"]}
            else:
                v["path"], v["query"] = f"/api/v1/crm/customer/company/{v['id']}/360", {}
        op["label"] = op["op"] + ("rep2" if user == "admin" else user) * (op["op"] == "list owner=")
    return ops


RAW = {"list": raw_list, "search": raw_search, "360": raw_360}


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


FAILURES = (RuntimeError, psycopg.Error, sqlite3.Error)


def _timed(fn, variants, warmup: int, requests: int, budget: float) -> tuple[list[float], int]:
    """Latencies in ms of `requests` calls cycling through `variants` (fewer when over `budget` seconds),
    after `warmup` untimed calls. A call that fails (e.g. a statement timeout) still counts, for the time
    it took; the second value says how many failed."""
    failures = 0
    for i in range(warmup):
        try:
            fn(variants[i % len(variants)])
        except FAILURES:
            pass
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(requests):
        t = time.perf_counter()
        try:
            fn(variants[i % len(variants)])
        except FAILURES:
            failures += 1
        samples.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() - started > budget and len(samples) >= 20:
            break  # too slow for the full count: report what the budget allowed
    return samples, failures


def _login(app, user: str):
    """A test client and the headers of a JWT from the real login endpoint."""
    client = app.test_client()
    login = client.post("/api/v1/security/login", json={"username": user, "password": PASSWORD, "provider": "db"})
    assert login.status_code == 200, login.get_data(as_text=True)
    return client, {"Authorization": f"Bearer {login.get_json()['access_token']}", "Accept-Language": "zh"}


def _vis(data: Dataset, user: str):
    """The admin sees everything (None); a Sales Rep their own records and their team's: (user id, team ids)."""
    if user == "admin":
        return None
    team = data.TEAM_OF.get(user)
    return data.users[user], [data.teams[team]] if team else []


class _LastError(logging.Handler):
    """Keeps the last exception FAB's @safe logged (it answers HTTP 500 "Fatal error"), without printing it."""

    last = ""

    def emit(self, record):
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            _LastError.last = f"{type(error).__name__}: {str(error).splitlines()[0]}"


def _quiet_fab() -> None:
    logger = logging.getLogger("flask_appbuilder.api")
    if not any(isinstance(h, _LastError) for h in logger.handlers):
        logger.addHandler(_LastError())
        logger.propagate = False


def _get(client, headers):
    def http(v):
        started = time.perf_counter()
        _LastError.last = ""
        response = client.get(v["path"], query_string=v["query"], headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code} after {time.perf_counter() - started:.1f} s: "
                               f"{_LastError.last or response.get_data(as_text=True)[:200]}")
        return response
    return http


def _input(v: dict):
    return v.get("q") or v.get("value") or v.get("id")


def _row(op: dict, backend: str, user: str, answers: list, http_ms: list[float], raw_ms: list[float],
         failed: dict, **extra) -> dict:
    """One line of the table: the API's and the raw SQL's latencies over the inputs that were answered."""
    if not answers:
        rows = "-"
    elif len(op["variants"]) == 1:
        rows = _rows(op["kind"], answers[0])
    else:
        rows = f"{statistics.median(len(a) for a in answers):g} (median)"
    row = {"operation": op["label"], "backend": backend, "user": user, "rows": rows, "requests": len(http_ms),
           "p50_ms": None, "p99_ms": None, "raw_p50_ms": None, "raw_p99_ms": None, "ratio": None, **extra}
    if http_ms and raw_ms:
        p50, raw_p50 = statistics.median(http_ms), statistics.median(raw_ms)
        row.update(p50_ms=round(p50, 2), p99_ms=round(_percentile(http_ms, 99), 2), raw_p50_ms=round(raw_p50, 2),
                   raw_p99_ms=round(_percentile(raw_ms, 99), 2), ratio=round(p50 / raw_p50, 2) if raw_p50 else None)
    row["failed"] = failed  # input -> what happened (a statement timeout, an error): counted as not met
    timing = extra.get("failed_while_timing") or {}
    row["p99_met"] = (row["p99_ms"] is not None and not failed and not timing.get("api")
                      and row["p99_ms"] < P99_TARGET_MS)
    row["ratio_met"] = row["ratio"] is not None and row["ratio"] <= RATIO_TARGET
    row["target_met"] = row["p99_met"] and row["ratio_met"]
    row["inputs"] = [_input(v) for v in op["variants"]]
    return row


def _print_row(row: dict, note: str = "") -> None:
    def ms(value):
        return "       -" if value is None else f"{value:8.2f}"

    failed = f", failed: {', '.join(map(str, row['failed']))}" if row["failed"] else ""
    print(f"  {row['backend']:10} {row['user']:6} {row['operation']:18} {note}p50 {ms(row['p50_ms'])} ms  "
          f"p99 {ms(row['p99_ms'])} ms  raw {ms(row['raw_p50_ms'])} ms  ({row['requests']} requests{failed})",
          flush=True)


def _floor(client, headers, backend: str, user: str, args) -> dict:
    """What a signed-in API request costs before the CRM does anything (see the module's docstring)."""
    def refused(_v):
        response = client.get("/api/v1/crm/search", query_string={"q": "x" * 201}, headers=headers)
        if response.status_code != 400:
            raise RuntimeError(f"HTTP {response.status_code}")

    http_ms, failures = _timed(refused, [None], args.warmup, args.requests, args.budget)
    return {"operation": "auth floor", "backend": backend, "user": user, "rows": "-", "requests": len(http_ms),
            "p50_ms": round(statistics.median(http_ms), 2), "p99_ms": round(_percentile(http_ms, 99), 2),
            "raw_p50_ms": None, "raw_p99_ms": None, "ratio": None, "sql_per_request": None, "same_rows": None,
            "failed": {"api": failures} if failures else {}, "p99_met": None, "ratio_met": None, "target_met": None,
            "inputs": []}


def measure(app, backend: str, raw: Raw, data: Dataset, user: str, args, captured: dict) -> list[dict]:
    """Each operation through the API as `user`; then, on the raw connection, the CRM SELECTs the API sent
    (same SQL text and parameters, captured from the driver), timed the same way. The rows are also
    checked against hand-written SQL. `captured` gets the statements, for EXPLAIN."""
    from bigledger_core.app import settle

    client, headers = _login(app, user)
    http = _get(client, headers)
    vis = _vis(data, user)
    settle()  # as the WSGI entry point does before serving: what exists now is set aside from the collector
    statements, stop = capture(app)
    results = [_floor(client, headers, backend, user, args)]
    _print_row(results[0])
    try:
        for op in _operations(data, user):
            kind = op["kind"]
            # the answers, compared with what hand-written SQL returns
            answers, answered, failed, same, mismatch = [], [], {}, True, None
            for v in op["variants"]:
                statements.clear()
                try:
                    api = _key(kind, http(v).get_json())
                except RuntimeError as exc:
                    failed[str(_input(v))] = str(exc)
                    captured[(op["label"], user, str(_input(v)), "failed")] = crm_statements(statements)
                    continue
                v["statements"] = [sql for sql, _params in statements]
                v["replay"] = crm_statements(statements)
                captured.setdefault((op["label"], user, str(_input(v)), "ok"), v["replay"])
                try:
                    mine = RAW[kind](raw, v, vis)
                except (psycopg.Error, sqlite3.Error) as exc:
                    mine = f"hand-written SQL failed: {str(exc).splitlines()[0]}"
                if kind == "360" and isinstance(mine, dict):
                    api = {**api, "counts": dict(sorted(api["counts"].items()))}
                    mine = {**mine, "counts": dict(sorted(mine["counts"].items()))}
                if api != mine and mismatch is None:
                    mismatch = {"input": _input(v), "api": api, "raw": mine}
                same = same and api == mine
                answers.append(api)
                answered.append(v)
            if args.show_sql and answered:
                print(f"\n-- {backend} {user} {op['label']}: {len(answered[0]['statements'])} statements")
                for sql in answered[0]["statements"]:
                    print("   ", " ".join(sql.split())[:1500])
            statements.clear()
            http_ms, http_failures = _timed(http, answered, args.warmup, args.requests, args.budget) \
                if answered else ([], 0)
            per_request = round(len(statements) / (args.warmup + len(http_ms)), 1) if answered else None
            raw_ms, raw_failures = _timed(lambda v: raw.replay(v["replay"]), answered, args.warmup, len(http_ms),
                                          args.budget) if answered else ([], 0)
            row = _row(op, backend, user, answers, http_ms, raw_ms, failed, sql_per_request=per_request,
                       same_rows=same if answers else None,
                       failed_while_timing={"api": http_failures, "raw": raw_failures})
            if mismatch:
                row["mismatch"] = mismatch
            results.append(row)
            _print_row(row)
    finally:
        stop()
    return results


def plans(raw: Raw, captured: dict) -> dict[str, list[str]]:
    """EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on SQLite, of the CRM statements the API
    sent: the list's count and page, both search SELECTs for the first input of each search (for the admin,
    and pinyin for the rep), the 360's activity and duplicate look-ups; plain EXPLAIN for inputs that failed."""
    found: dict[str, list[str]] = {}
    first: set = set()
    for (label, user, q, outcome), statements in captured.items():
        if outcome == "ok":
            if (label, user) in first or not (user == "admin" or label == "search pinyin"):
                continue
            first.add((label, user))
        for n, (sql, params) in enumerate(statements):
            if label.startswith("360") and "crm_activity" not in sql and "lower(" not in sql:
                continue
            what = sql.split("FROM", 1)[1].split()[0] if "FROM" in sql else "?"
            found[f"{label} ({user}) {q!r} #{n + 1} {what}{' FAILED' if outcome == 'failed' else ''}"] = \
                raw.plan(sql, params, analyze=outcome == "ok")
    return found


# -- one backend ---------------------------------------------------------------------------------------

def _loaded(app, data: Dataset) -> bool:
    """Whether the database already holds this data set (a kept --database): then the users' and teams' ids
    are read back into `data` and nothing is loaded."""
    from sqlalchemy import text

    from bigledger_core.db import db

    with app.app_context():
        contacts = db.session.execute(text("SELECT count(*) FROM crm_contact")).scalar()
        if contacts == 0:
            return False
        if contacts != data.n:
            raise RuntimeError(f"the database holds {contacts:,} contacts, not {data.n:,}: drop it or name another")
        data.users.update(db.session.execute(text("SELECT username, id FROM ab_user")).all())
        for team in ("A", "B"):
            data.teams[team] = db.session.execute(text("SELECT id FROM bl_team WHERE name = :n"),
                                                  {"n": f"销售{team}组"}).scalar_one()
        db.session.remove()
    return True


def run(backend: str, url: str, raw_target: str, folder: Path, contacts: int, args) -> dict:
    from bigledger_core.db import db

    started = time.perf_counter()
    app = _app(url, folder)
    data = Dataset(contacts, args.busy_contacts, args.seed)
    print(f"{backend}: {contacts:,} contacts, {data.companies:,} companies, {data.distinct_names:,} distinct names "
          f"(search text computed {data.distinct_texts:,} times) prepared in {data.prepare_seconds:.1f} s", flush=True)
    bad_phones = data.check_phones()
    if bad_phones:
        print(f"  warning: {bad_phones} sampled phones do not parse to their stored E.164")
    start, timings = time.perf_counter(), {"reused": True}
    if not _loaded(app, data):
        _people(app, data)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        start = time.perf_counter()
        timings = _load_postgres(raw_target, data) if backend == "postgresql" else _load_sqlite(raw_target, data)
        _extras(app)
    load_s = time.perf_counter() - start
    _statement_timeout(app, args.statement_timeout)
    _quiet_fab()
    # the data set (a million rows of Python objects) stays in this process; a server's worker would not hold
    # it, and the garbage collector's full passes over it would show up as request latency
    gc.collect()
    gc.freeze()
    print(f"  loaded in {load_s:.1f} s {timings}", flush=True)
    raw = Raw(backend, raw_target, args.statement_timeout)
    try:
        rows, captured = [], {}
        for user in ("admin", "rep1"):
            rows += measure(app, backend, raw, data, user, args, captured)
        errors = {}
        try:
            query_plans = plans(raw, captured)
        except Exception as exc:  # noqa: BLE001 - the measurements are still worth reporting
            traceback.print_exc()
            query_plans, errors["plans"] = {}, f"{type(exc).__name__}: {exc}"
    finally:
        raw.close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    return {"backend": backend, "contacts": contacts, "companies": data.companies,
            "busy_company": {"id": 1, "contacts": data.busy_contacts, "activities": BUSY_ACTIVITIES},
            "distinct_names": data.distinct_names, "prepare_s": round(data.prepare_seconds, 1),
            "load_s": round(load_s, 1), "load_timings": timings, "total_s": round(time.perf_counter() - started, 1),
            "phones_misparsed_in_sample": bad_phones, "statement_timeout_s": args.statement_timeout, "rows": rows,
            "plans": query_plans, "errors": errors}


def _num(value, failed=None) -> str:
    text = "-" if value is None else f"{value:.2f}"
    return text + (f" +{len(failed)} failed" if failed else "")


def _verdict(r: dict) -> str:
    if r["target_met"] is None:
        return "-"
    if r["target_met"]:
        return "yes"
    why = [f"p99 ≥ {P99_TARGET_MS:g}"] * (r["p99_ms"] is not None and r["p99_ms"] >= P99_TARGET_MS)
    why += [f"ratio > {RATIO_TARGET:g}"] * (r["ratio"] is not None and not r["ratio_met"])
    why += [f"{q!r} failed" for q in r["failed"]]
    return f"no ({', '.join(why)})"


def _print_table(results: list[dict]) -> None:
    header = ["operation", "backend", "user", "rows", "p50 ms", "p99 ms", "raw p50 ms", "ratio", "SQL/req",
              "same rows", "target met"]
    table = [[r["operation"], r["backend"], r["user"], r["rows"], _num(r["p50_ms"]), _num(r["p99_ms"], r["failed"]),
              _num(r["raw_p50_ms"]), _num(r["ratio"]), "-" if r["sql_per_request"] is None else
              f"{r['sql_per_request']:g}", {True: "yes", False: "NO", None: "-"}[r["same_rows"]], _verdict(r)]
             for result in results for r in result.get("rows", [])]
    _print_rows(header, table)


def _print_rows(header: list[str], table: list[list]) -> None:
    widths = [max(_width(str(x)) for x in column) for column in zip(header, *table)]
    for line in [header, ["-" * w for w in widths], *table]:
        print(" | ".join(str(x) + " " * (w - _width(str(x))) for x, w in zip(line, widths)))


def _width(text: str) -> int:
    return sum(2 if ord(c) > 0x2e80 else 1 for c in text)


def _guarded(backend: str, fn, *args) -> dict:
    """Run one backend; a failure is reported (and the other backend still runs), not raised."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
        traceback.print_exc()
        return {"backend": backend, "error": f"{type(exc).__name__}: {exc}", "rows": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000, help="contacts on PostgreSQL")
    parser.add_argument("--sqlite-contacts", type=int, default=100_000, help="contacts on SQLite")
    parser.add_argument("--quick", action="store_true", help="20,000 contacts on PostgreSQL, 5,000 on SQLite")
    parser.add_argument("--busy-contacts", type=int, default=300, help="people at the busy company")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per operation")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    parser.add_argument("--budget", type=float, default=15.0,
                        help="seconds per operation after which fewer requests are timed (at least 20)")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print the query plans (always in the JSON)")
    parser.add_argument("--show-sql", action="store_true", help="print the SQL each API call runs")
    parser.add_argument("--statement-timeout", type=float, default=10.0,
                        help="PostgreSQL statement_timeout in seconds, for the app and the raw connection")
    parser.add_argument("--database", help="PostgreSQL database to load and keep (reused when it already holds the "
                        "data), instead of a temporary one")
    args = parser.parse_args()
    if args.quick:
        args.contacts, args.sqlite_contacts = 20_000, 5_000
    results = []
    code = code_version()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.no_sqlite:
            path = folder / "bench.db"
            results.append(_guarded("sqlite", run, "sqlite", f"sqlite:///{path}", str(path), folder / "sqlite",
                                    args.sqlite_contacts, args))
        if not args.no_postgres:
            admin = make_url(args.postgres).set(drivername="postgresql")
            name = args.database or f"bigledger_bench_{uuid.uuid4().hex[:8]}"
            try:
                with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{name}"')
            except psycopg.Error as exc:
                print(f"PostgreSQL skipped: {exc}")
            else:
                try:
                    url = admin.set(drivername="postgresql+psycopg", database=name)
                    dsn = admin.set(database=name).render_as_string(hide_password=False)
                    results.append(_guarded("postgresql", run, "postgresql", url.render_as_string(hide_password=False),
                                            dsn, folder / "postgresql", args.contacts, args))
                finally:
                    if not args.database:
                        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
                            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print()
    _print_table(results)
    for result in results:
        if "error" in result:
            print(f"{result['backend']}: FAILED {result['error']}")
    if args.explain:
        for result in results:
            for label, lines in result.get("plans", {}).items():
                print(f"\n== {result['backend']}: {label}")
                print("\n".join(lines))
    write_results("contacts", results, code=code, loadavg_before=load_before,
                  targets={"p99_ms": P99_TARGET_MS, "ratio": RATIO_TARGET, "ratio_is": "API p50 / raw SQL p50"})


if __name__ == "__main__":
    main()
