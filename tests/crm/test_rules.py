"""The rule language: tokens and keywords in Chinese and English, precedence, errors with positions in
both languages, unknown names, the scoring rule-set file, and SQL that agrees with Python on SQLite and
PostgreSQL (set-based rescoring included); criteria that try to inject code or SQL do nothing."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from flask_babel import force_locale
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    event,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from bigledger_core.db import db
from plugins.crm.common.rules import (
    MAX_LENGTH,
    And,
    Compare,
    Contains,
    FactSpec,
    FieldRef,
    FieldSpec,
    Has,
    In,
    Not,
    Or,
    RuleFieldError,
    RuleSyntaxError,
    Vocabulary,
    custom_field,
    evaluate,
    parse,
    to_sql,
)
from plugins.crm.leads.scoring_rules import (
    RuleSetError,
    explain,
    parse_rule_set,
    score,
    score_sql,
)

UTC = dt.UTC
metadata = MetaData()
lead = Table(
    "test_rules_lead", metadata,
    Column("id", Integer, primary_key=True),
    Column("company_size", Integer),
    Column("industry", String(100)),
    Column("email_opens", Integer),
    Column("consent", Boolean),
    Column("created_at", DateTime(timezone=True)),
    Column("custom", JSON().with_variant(JSONB(), "postgresql"), nullable=False, default=dict),
    Column("score", Integer, nullable=False, default=0),
)
fact = Table(
    "test_rules_fact", metadata,
    Column("lead_id", Integer, nullable=False, index=True),
    Column("fact", String(100), nullable=False),
)


def _has(key: str):
    return lambda: select(literal(1)).select_from(fact).where(fact.c.lead_id == lead.c.id,
                                                              fact.c.fact == key).exists()


VOCABULARY = Vocabulary(
    fields=[
        FieldSpec("company_size", "number", "公司规模", "company size", lead.c.company_size, ("employees",)),
        FieldSpec("industry", "text", "行业", "industry", lead.c.industry),
        FieldSpec("email_opens", "number", "邮件开启", "email opens", lead.c.email_opens),
        FieldSpec("consent", "boolean", "已同意", "consent", lead.c.consent),
        FieldSpec("created_at", "date", "创建时间", "created at", lead.c.created_at),
        custom_field(lead.c.custom, "budget", "number", "预算", "budget"),
        custom_field(lead.c.custom, "seats", "number", "座位数", "seats"),
        custom_field(lead.c.custom, "region", "text", "地区", "region"),
        custom_field(lead.c.custom, "vip", "boolean", "重要客户", "vip"),
    ],
    facts=[
        FactSpec("visited_pricing_page", "访问了定价页", "visited the pricing page", _has("visited_pricing_page")),
        FactSpec("downloaded_whitepaper", "下载了白皮书", "downloaded the white paper",
                 _has("downloaded_whitepaper"), ("downloaded whitepaper",)),
    ],
)

SEED_ZH = """{"评分规则": [{"标准": "公司规模 > 100", "分数": 20}, {"标准": "行业 = '科技'", "分数": 15},
  {"标准": "访问了定价页", "分数": 10}, {"标准": "下载了白皮书", "分数": 5}, {"标准": "邮件开启 > 3", "分数": 5}],
 "资质认定阈值": 50}"""
SEED_EN_YAML = """
rules:
  - criterion: company size > 100
    points: 20
  - criterion: industry = '科技'
    points: 15
  - criterion: visited the pricing page
    points: 10
  - criterion: downloaded the white paper
    points: 5
  - criterion: email opens > 3
    points: 5
threshold: 50
"""


def p(text: str):
    return parse(text, VOCABULARY)


def field(name: str):
    spec = VOCABULARY.fields[name]
    return FieldRef(spec.name, spec.type, spec.path)


SIZE_F, INDUSTRY_F = field("company_size"), field("industry")


# -- parsing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, op", [
    ("公司规模 > 100", ">"), ("公司规模 >= 100", ">="), ("公司规模 < 100", "<"), ("公司规模 <= 100", "<="),
    ("公司规模 = 100", "="), ("公司规模 == 100", "="), ("公司规模 != 100", "!="), ("公司规模 <> 100", "!="),
    ("公司规模 ＞ 100", ">"), ("公司规模 ＜ 100", "<"), ("公司规模 ＝ 100", "="), ("公司规模 ≥ 100", ">="),
    ("公司规模 ≤ 100", "<="), ("公司规模 ≠ 100", "!="), ("公司规模 ＞＝ 100", ">="), ("公司规模 ！＝ 100", "!="),
    ("公司规模 大于 100", ">"), ("公司规模 小于 100", "<"), ("公司规模 等于 100", "="),
    ("公司规模 不等于 100", "!="), ("公司规模 大于等于 100", ">="), ("公司规模 小于等于 100", "<="),
    ("公司规模 不小于 100", ">="), ("公司规模 不大于 100", "<="), ("公司规模大于100", ">"),
])
def test_every_comparison_operator(text, op):
    assert p(text) == Compare(SIZE_F, op, 100)


@pytest.mark.parametrize("text", [
    "公司规模 > 100", "company size > 100", "Company Size > 100", "company_size > 100", "COMPANY_SIZE>100",
    "company  size > 100", "employees > 100", "公司规模>100", "公司规模 ＞ １００", "ｃｏｍｐａｎｙ ｓｉｚｅ > 100",
])
def test_field_names_in_chinese_and_english_ignore_case_width_and_underscores(text):
    assert p(text) == Compare(SIZE_F, ">", 100)


@pytest.mark.parametrize("text", [
    "行业 = '科技'", '行业 = "科技"', "行业 = 「科技」", "行业 = ‘科技’", "行业 = “科技”", "行业 = ＇科技＇",
    "industry = '科技'", "行业='科技'", "行业 = 『科技』",
])
def test_string_literals_in_every_kind_of_quote(text):
    assert p(text) == Compare(INDUSTRY_F, "=", "科技")


def test_a_quote_written_twice_stands_for_itself_and_other_quotes_are_text():
    assert p("行业 = 'O''Reilly'") == Compare(INDUSTRY_F, "=", "O'Reilly")
    assert p("行业 = \"say 'hi'\"") == Compare(INDUSTRY_F, "=", "say 'hi'")
    assert p("行业 = '科技) OR 1=1'") == Compare(INDUSTRY_F, "=", "科技) OR 1=1")


def test_numbers_whole_decimal_negative_and_full_width():
    assert p("公司规模 > -5") == Compare(SIZE_F, ">", -5)
    assert p("公司规模 > 2.5") == Compare(SIZE_F, ">", Decimal("2.5"))
    assert p("公司规模 > １２０") == Compare(SIZE_F, ">", 120)
    assert p("行业 = 100") == Compare(INDUSTRY_F, "=", "100")  # a number compared with text is its digits


@pytest.mark.parametrize("text, keyword", [
    ("公司规模 > 1 AND 行业 = 'x'", "and"), ("公司规模 > 1 and 行业 = 'x'", "and"), ("公司规模 > 1 且 行业 = 'x'", "and"),
    ("公司规模 > 1 并且 行业 = 'x'", "and"), ("公司规模 > 1 和 行业 = 'x'", "and"), ("公司规模>1且行业='x'", "and"),
    ("公司规模 > 1 OR 行业 = 'x'", "or"), ("公司规模 > 1 Or 行业 = 'x'", "or"), ("公司规模 > 1 或 行业 = 'x'", "or"),
    ("公司规模 > 1 或者 行业 = 'x'", "or"), ("公司规模>1或行业='x'", "or"),
])
def test_and_or_in_both_languages(text, keyword):
    pair = (Compare(SIZE_F, ">", 1), Compare(INDUSTRY_F, "=", "x"))
    assert p(text) == (And(pair) if keyword == "and" else Or(pair))


@pytest.mark.parametrize("text", ["NOT 访问了定价页", "not 访问了定价页", "非 访问了定价页", "非访问了定价页",
                                  "不 访问了定价页", "NOT visited the pricing page", "NOT (访问了定价页)"])
def test_not_in_both_languages(text):
    assert p(text) == Not(Has("visited_pricing_page"))


@pytest.mark.parametrize("text", ["行业 IN ('科技', '金融')", "行业 in ('科技','金融')", "行业 属于 ('科技'，'金融')",
                                  "行业 在 （'科技'、'金融'）", "industry IN (“科技”, “金融”)"])
def test_in_with_every_separator_and_parenthesis(text):
    assert p(text) == In(INDUSTRY_F, ("科技", "金融"))


def test_not_in_and_not_contains():
    assert p("行业 NOT IN ('科技')") == Not(In(INDUSTRY_F, ("科技",)))
    assert p("行业 不在 ('科技')") == Not(In(INDUSTRY_F, ("科技",)))
    assert p("行业 不属于 ('科技')") == Not(In(INDUSTRY_F, ("科技",)))
    assert p("公司规模 IN (1, 2, 3)") == In(SIZE_F, (1, 2, 3))
    assert p("行业 CONTAINS '科'") == Contains(INDUSTRY_F, "科")
    assert p("行业 包含 '科'") == Contains(INDUSTRY_F, "科")
    assert p("行业 不包含 '科'") == Not(Contains(INDUSTRY_F, "科"))
    assert p("行业 not contains '科'") == Not(Contains(INDUSTRY_F, "科"))


def test_facts_booleans_and_dates():
    assert p("访问了定价页") == Has("visited_pricing_page")
    assert p("visited the pricing page") == Has("visited_pricing_page")
    assert p("visited_pricing_page") == Has("visited_pricing_page")
    assert p("downloaded whitepaper") == Has("downloaded_whitepaper")
    assert p("访问了定价页且下载了白皮书") == And((Has("visited_pricing_page"), Has("downloaded_whitepaper")))
    consent = field("consent")
    assert p("已同意") == Compare(consent, "=", True)
    assert p("consent = FALSE") == Compare(consent, "=", False)
    assert p("已同意 = 否") == Compare(consent, "=", False)
    assert p("已同意 != 真") == Compare(consent, "!=", True)
    assert p("创建时间 >= '2024-06-30'") == Compare(field("created_at"), ">=", dt.date(2024, 6, 30))
    assert p("created at < '２０２４/1/5'") == Compare(field("created_at"), "<", dt.date(2024, 1, 5))


def test_precedence_not_then_and_then_or():
    a, b, c = Has("visited_pricing_page"), Has("downloaded_whitepaper"), Compare(SIZE_F, ">", 1)
    assert p("访问了定价页 OR 下载了白皮书 AND 公司规模 > 1") == Or((a, And((b, c))))
    assert p("访问了定价页 AND 下载了白皮书 OR 公司规模 > 1") == Or((And((a, b)), c))
    assert p("(访问了定价页 OR 下载了白皮书) AND 公司规模 > 1") == And((Or((a, b)), c))
    assert p("NOT 访问了定价页 AND 下载了白皮书") == And((Not(a), b))
    assert p("NOT (访问了定价页 AND 下载了白皮书)") == Not(And((a, b)))
    assert p("NOT NOT 访问了定价页") == Not(Not(a))
    assert p("非访问了定价页或下载了白皮书且公司规模>1") == Or((Not(a), And((b, c))))


# -- errors --------------------------------------------------------------------------------------------

BAD = [
    # text, position, English reason, Chinese reason
    ("行业 = '科技", 6, "the quoted text that starts here is not closed (add ')", "引号"),
    ("公司规模 >", 7, "expected a value after “>”", "“>”"),
    ("公司规模 > AND 行业 = 'x'", 8, "expected a value after “>”", "“>”"),
    ("公司规模 => 100", 6, "unknown operator “=>”", "“=>”"),
    ("公司规模 ~ 100", 6, "unexpected “~”", "“~”"),
    ("(公司规模 > 100", 1, "this “(” has no matching “)”", "“(”"),
    ("公司规模 > 100)", 11, "this “)” has no matching “(”", "“)”"),
    ("((公司规模 > 100) 行业 = 'x')", 15, "expected AND, OR or “)”, found “行业”", "“行业”"),
    ("公司规模 > 100 行业 = 'x'", 12, "expected AND or OR, found “行业”", "“行业”"),
    ("行业 = 科技", 6, "put text in quotes: '科技'", "'科技'"),
    ("公司规模", 5, "expected an operator after “公司规模”", "“公司规模”"),
    ("公司规模 > 100 AND", 15, "expected a field or a fact, found the end of the criterion", "结尾"),
    ("行业 IN '科技'", 7, "expected “(” after “IN”", "“IN”"),
    ("行业 IN ('科技' '金融')", 13, "expected “,” or “)”, found “'金融'”", "“'金融'”"),
    ("行业 IN ('科技',", 13, "expected a value after “,”", "“,”"),
    ("公司规模 > '大'", 8, "“公司规模” is a number", "“公司规模”"),
    ("行业 > 'a'", 4, "“行业” is text", "“行业”"),
    ("公司规模 CONTAINS '1'", 6, "CONTAINS works on text", "“公司规模”"),
    ("访问了定价页 = 1", 8, "“访问了定价页” is a fact", "“访问了定价页”"),
    ("创建时间 > '2024-02-30'", 8, "“2024-02-30” is not a date", "“2024-02-30”"),
    ("已同意 = 'yes'", 7, "“已同意” is true or false", "“已同意”"),
    ("行业 NOT = 'x'", 8, "expected IN or CONTAINS after “NOT”", "“NOT”"),
    ("", 1, "the criterion is empty", "为空"),
]


@pytest.mark.parametrize("text, position, english, chinese", BAD)
def test_errors_name_the_position_and_what_was_expected_in_english(text, position, english, chinese):
    with pytest.raises(RuleSyntaxError) as caught:
        p(text)
    assert caught.value.position == position
    assert str(caught.value).startswith(f"position {position}: ")
    assert english in str(caught.value)


def test_errors_in_chinese_and_english(app):
    with app.app_context():
        for text, position, english, chinese in BAD:
            with force_locale("zh"), pytest.raises(RuleSyntaxError) as caught:
                p(text)
            assert caught.value.position == position
            assert str(caught.value).startswith(f"第 {position} 个字符："), str(caught.value)
            assert chinese in str(caught.value), str(caught.value)
            assert english not in str(caught.value)
            with force_locale("en"), pytest.raises(RuleSyntaxError) as caught:
                p(text)
            assert str(caught.value).startswith(f"position {position}: ") and english in str(caught.value)
        with force_locale("zh"), pytest.raises(RuleSyntaxError) as caught:
            p("公司规模 >")
        assert str(caught.value) == "第 7 个字符：“>” 之后应为一个值"


def test_an_unknown_name_is_refused_with_the_known_names_in_both_languages(app):
    with pytest.raises(RuleFieldError) as caught:
        p("公司规模 > 1 AND 公司大小 > 100")
    error = caught.value
    assert (error.name, error.position) == ("公司大小", 14)
    assert ("公司规模", "company size") in error.known and ("访问了定价页", "visited the pricing page") in error.known
    message = str(error)
    assert message.startswith("position 14: unknown name “公司大小”; known names: ")
    for name in ("公司规模 / company size", "行业 / industry", "邮件开启 / email opens", "预算 / budget",
                 "访问了定价页 / visited the pricing page", "下载了白皮书 / downloaded the white paper"):
        assert name in message
    with app.app_context(), force_locale("zh"), pytest.raises(RuleFieldError) as caught:
        p("行业 = 'x' 且 所在地 = '上海'")
    assert str(caught.value).startswith("第 12 个字符：未知名称“所在地”") and "公司规模 / company size" in str(caught.value)
    with pytest.raises(RuleFieldError) as caught:
        p("company sizes > 1")
    assert caught.value.name == "company"


def test_injection_attempts_are_refused_or_stay_values(app):
    with pytest.raises(RuleSyntaxError) as caught:
        p("行业 = '科技'; DROP TABLE x")
    assert caught.value.position == 10 and "unexpected “;”" in str(caught.value)
    with pytest.raises(RuleFieldError) as caught:
        p("__import__('os')")
    assert caught.value.name == "__import__"
    with pytest.raises(RuleFieldError):
        p("行业 = '科技' OR eval('1')")
    with pytest.raises(RuleSyntaxError) as caught:
        p("公司规模 > 1 OR " * 90 + "公司规模 > 1")
    assert caught.value.position == MAX_LENGTH + 1
    assert f"at most {MAX_LENGTH} characters (this one has 1088)" in str(caught.value)
    with pytest.raises(RuleSyntaxError) as caught:
        p("(" * 60 + "公司规模 > 1" + ")" * 60)
    assert "nested too deeply" in str(caught.value)
    with pytest.raises(RuleSyntaxError):
        p("NOT " * 200 + "访问了定价页")
    with app.app_context():
        metadata.create_all(db.engine)
        db.session.execute(lead.insert(), [{"id": 1, "industry": "科技", "custom": {}}])
        hostile = p("行业 = '科技''; DROP TABLE test_rules_lead; --' OR 行业 CONTAINS '%' OR 地区 = 'x\") OR 1=1'")
        assert db.session.execute(select(lead.c.id).where(to_sql(hostile, VOCABULARY))).all() == []
        assert db.session.execute(select(lead.c.id).where(to_sql(p("行业 CONTAINS '_'"), VOCABULARY))).all() == []
        db.session.commit()
        assert inspect(db.engine).has_table("test_rules_lead")


def test_a_vocabulary_refuses_keywords_and_names_given_twice():
    with pytest.raises(ValueError, match="keyword"):
        Vocabulary([FieldSpec("x", "number", "和", "x", lead.c.id)])
    with pytest.raises(ValueError, match="two fields"):
        Vocabulary([FieldSpec("x", "number", "规模", "x", lead.c.id), FieldSpec("y", "number", "规模", "y", lead.c.id)])
    with pytest.raises(ValueError, match="type"):
        FieldSpec("x", "money", "金额", "amount", lead.c.id)


# -- the rule-set file ---------------------------------------------------------------------------------

def test_the_seed_rule_set_with_chinese_keys_and_with_english_keys_in_yaml():
    for source in (SEED_ZH, SEED_EN_YAML, SEED_ZH.encode("utf-8-sig")):
        rules = parse_rule_set(source, VOCABULARY)
        assert rules.threshold == 50
        assert [(r.index, r.points) for r in rules.rules] == [(1, 20), (2, 15), (3, 10), (4, 5), (5, 5)]
        assert rules.rules[0].ast == Compare(SIZE_F, ">", 100)
        assert rules.rules[2].ast == Has("visited_pricing_page")
    assert parse_rule_set(SEED_ZH, VOCABULARY).rules[1].criterion == "行业 = '科技'"
    mixed = parse_rule_set({"rules": [{"标准": "访问了定价页", "points": 10}], "资质认定阈值": 0}, VOCABULARY)
    assert mixed.to_document() == {"rules": [{"criterion": "访问了定价页", "points": 10}], "threshold": 0}
    assert parse_rule_set(mixed.to_document(), VOCABULARY) == mixed

    qualified = {"company_size": 200, "industry": "科技", "facts": {"visited_pricing_page", "downloaded_whitepaper"}}
    rules = parse_rule_set(SEED_ZH, VOCABULARY)
    assert score(rules, qualified) == 50 and rules.qualifies(50)
    assert score(rules, {"company_size": 101, "email_opens": 4}) == 25 and not rules.qualifies(25)
    assert explain(rules, {"company_size": 101, "email_opens": 4}) == [
        (1, "公司规模 > 100", 20, True), (2, "行业 = '科技'", 15, False), (3, "访问了定价页", 10, False),
        (4, "下载了白皮书", 5, False), (5, "邮件开启 > 3", 5, True)]


def test_every_problem_of_a_rule_set_is_reported_at_once():
    source = {"评分规则": [
        {"标准": "公司规模 > 100", "分数": 20},
        {"标准": "行业 = '科技", "分数": 15},
        {"标准": "公司大小 > 1", "分数": "many"},
        {"分数": 5},
        {"标准": "访问了定价页"},
        {"标准": "访问了定价页", "分数": 1, "权重": 2, "points": 3},
        "访问了定价页",
        {"标准": 5, "分数": 2.5},
    ], "资质认定阈值": -1, "版本": 2}
    with pytest.raises(RuleSetError) as caught:
        parse_rule_set(source, VOCABULARY)
    problems = caught.value.problems
    assert problems[0] == "unknown key “版本” (known keys: 评分规则 / rules, 资质认定阈值 / threshold)"
    assert problems[1] == "the threshold (资质认定阈值) must be a whole number from 0 to 1000000"
    assert "rule 2 (行业 = '科技): position 6: the quoted text that starts here is not closed (add ')" in problems
    assert "rule 3 (公司大小 > 1): the points (分数) must be a whole number from -1000000 to 1000000" in problems
    assert any(p.startswith("rule 3 (公司大小 > 1): position 1: unknown name “公司大小”; known names: ")
               for p in problems)
    assert "rule 4: the criterion (标准) is missing" in problems
    assert "rule 5 (访问了定价页): the points (分数) are missing" in problems
    assert "rule 6 (访问了定价页): unknown key “权重” (known keys: 标准 / criterion, 分数 / points)" in problems
    assert "rule 6 (访问了定价页): “points” is given twice" in problems
    assert any(p.startswith("rule 7: must be an object") for p in problems)
    assert "rule 8: the criterion (标准) must be text such as 公司规模 > 100" in problems
    assert "rule 8: the points (分数) must be a whole number from -1000000 to 1000000" in problems
    assert len(problems) == 12
    assert str(caught.value) == "\n".join(problems)


@pytest.mark.parametrize("source, message", [
    ("{}", "the threshold (资质认定阈值) is missing"),
    ('{"资质认定阈值": 5}', "the rules (评分规则) are missing"),
    ('{"评分规则": [], "资质认定阈值": 5}', "the rules (评分规则) must be a list of at least one rule"),
    ('{"评分规则": [}', "not valid JSON: Expecting value (line 1, column 11)"),
    ("评分规则: [\n  - {标准: x\n", "not valid YAML"),
    ("- 1\n- 2\n", "the rule file must be an object"),
    ("", "the rule file must be an object"),
    ("threshold: 5\nrules: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ("x" * 200_001, "the rule file may have at most 200000 characters"),
    (b"\xff\xfe", "the rule file is not UTF-8 text"),
])
def test_broken_rule_files_are_refused_with_a_clear_message(source, message):
    with pytest.raises(RuleSetError) as caught:
        parse_rule_set(source, VOCABULARY)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_rule_set_messages_in_chinese(app):
    with app.app_context(), force_locale("zh"), pytest.raises(RuleSetError) as caught:
        parse_rule_set({"评分规则": [{"标准": "行业 = '科技'", "分数": 1}, {"标准": "公司规模 >", "分数": 1}]},
                       VOCABULARY)
    assert caught.value.problems == ["缺少资质认定阈值（threshold）",
                                     "规则 2（公司规模 >）：第 7 个字符：“>” 之后应为一个值"]


# -- SQL and Python agree ------------------------------------------------------------------------------

def _rows(dialect: str) -> tuple[list[dict], list[dict]]:
    """Leads covering every operator's edge: missing values, boundaries, case, mistyped custom values.
    Text stored in full width compares folded on PostgreSQL only (SQLite's lower() knows ASCII alone)."""
    sizes = [None, 0, 50, 100, 101, 200, 5000]
    industries = [None, "科技", "金融", "Tech", "TECH", "fintech", "", "100%_x",
                  "ｔｅｃｈ" if dialect == "postgresql" else "tech", "O'Reilly"]
    opens = [None, 0, 3, 4, 12]
    consents = [None, True, False]
    customs = [{}, {"budget": 5}, {"budget": "5"}, {"budget": 3.5}, {"region": "华东", "seats": 2}, {"region": 7},
               {"region": "East China", "vip": True}, {"vip": False}, {"vip": "true"}, {"budget": None}]
    days = [None, dt.datetime(2024, 6, 29, 23, 59, tzinfo=UTC), dt.datetime(2024, 6, 30, 0, 0, tzinfo=UTC),
            dt.datetime(2024, 6, 30, 23, 59, 59, tzinfo=UTC), dt.datetime(2024, 7, 1, 0, 0, tzinfo=UTC)]
    facts = [(), ("visited_pricing_page",), ("downloaded_whitepaper",),
             ("visited_pricing_page", "downloaded_whitepaper")]
    rows, fact_rows = [], []
    for i in range(1, 211):
        rows.append({"id": i, "company_size": sizes[i % 7], "industry": industries[i % 10], "email_opens": opens[i % 5],
                     "consent": consents[i % 3], "custom": customs[(i // 3) % 10], "created_at": days[(i // 2) % 5]})
        fact_rows.extend({"lead_id": i, "fact": key} for key in facts[(i // 7) % 4])
    return rows, fact_rows


def _records(rows, fact_rows) -> list[dict]:
    facts = {}
    for row in fact_rows:
        facts.setdefault(row["lead_id"], set()).add(row["fact"])
    return [{**row, "facts": facts.get(row["id"], set())} for row in rows]


AGREE = [
    "公司规模 > 100", "公司规模 >= 100", "公司规模 < 100", "公司规模 <= 100", "公司规模 = 100", "公司规模 != 100",
    "公司规模 > 100.5", "公司规模 IN (0, 200)", "公司规模 NOT IN (0, 200)", "NOT 公司规模 > 100",
    "行业 = '科技'", "行业 = 'tech'", "行业 = 'ＴＥＣＨ'", "行业 != 'tech'", "行业 = ''", "行业 != ''",
    "行业 IN ('科技', 'Tech', '金融')", "行业 不在 ('科技')", "行业 CONTAINS 'tech'", "行业 包含 '%_'",
    "行业 包含 '_'", "行业 包含 '%'", "行业 NOT CONTAINS 'tech'", "行业 = 'o''reilly'", "行业 IN (100, '科技')",
    "邮件开启 > 3", "邮件开启 = 0", "已同意", "已同意 = FALSE", "已同意 != TRUE", "NOT 已同意",
    "创建时间 = '2024-06-30'", "创建时间 != '2024-06-30'", "创建时间 > '2024-06-30'", "创建时间 >= '2024-06-30'",
    "创建时间 < '2024-06-30'", "创建时间 <= '2024-06-30'",
    "预算 > 4", "座位数 > 1", "预算 = 5", "预算 != 5", "预算 <= 3.5", "预算 IN (5, 3.5)", "地区 = '华东'", "地区 != '华东'",
    "地区 CONTAINS 'east'", "地区 IN ('华东', '7')", "重要客户", "重要客户 = FALSE", "NOT 重要客户",
    "访问了定价页", "下载了白皮书", "NOT 访问了定价页", "访问了定价页 AND NOT 下载了白皮书",
    "(公司规模 > 100 OR 行业 = '科技') AND NOT (访问了定价页 OR 邮件开启 > 3)",
    "公司规模 > 100 且 行业 IN ('科技', '金融') 或 下载了白皮书 且 非 已同意",
]


def test_sql_and_python_agree_on_every_operator(app):
    with app.app_context():
        rows, fact_rows = _rows(db.engine.dialect.name)
        metadata.create_all(db.engine)
        db.session.execute(lead.insert(), rows)
        db.session.execute(fact.insert(), fact_rows)
        db.session.commit()
        records = _records(rows, fact_rows)
        for text in AGREE:
            ast = p(text)
            in_sql = set(db.session.scalars(select(lead.c.id).where(to_sql(ast, VOCABULARY))))
            in_python = {r["id"] for r in records if evaluate(ast, r)}
            assert in_sql == in_python, text
            assert 0 < len(in_python) < len(rows), text  # each criterion tells the rows apart


def test_changing_the_rules_rescores_every_lead_in_one_update(app):
    rows, fact_rows = _rows("sqlite")
    rows += [
        {**rows[0], "id": 1001, "company_size": 200, "industry": "科技", "email_opens": 0, "custom": {}},
        {**rows[0], "id": 1002, "company_size": 101, "industry": "金融", "email_opens": 4, "custom": {}},
    ]
    fact_rows += [{"lead_id": 1001, "fact": "visited_pricing_page"}, {"lead_id": 1001, "fact": "downloaded_whitepaper"}]
    statements = []
    with app.app_context():
        metadata.create_all(db.engine)
        db.session.execute(lead.insert(), rows)
        db.session.execute(fact.insert(), fact_rows)
        db.session.commit()
        event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        for source in (SEED_ZH, SEED_EN_YAML):
            rules = parse_rule_set(source, VOCABULARY)
            statements.clear()
            db.session.execute(update(lead).values(score=score_sql(rules, VOCABULARY)))
            db.session.commit()
            assert len(statements) == 1 and statements[0].lstrip().upper().startswith("UPDATE")
            scores = dict(db.session.execute(select(lead.c.id, lead.c.score)).all())
            assert scores[1001] == 50 and rules.qualifies(scores[1001])
            assert scores[1002] == 25 and not rules.qualifies(scores[1002])
            records = _records(rows, fact_rows)
            assert {r["id"]: score(rules, r) for r in records} == scores
            assert len(set(scores.values())) > 5
            qualified = set(db.session.scalars(select(lead.c.id).where(score_sql(rules, VOCABULARY) >= 50)))
            assert qualified == {r["id"] for r in records if rules.qualifies(score(rules, r))}
