"""Lead scoring rule sets: the file an admin writes, checked as a whole, and the score it gives.

    {"评分规则": [{"标准": "公司规模 > 100", "分数": 20}, {"标准": "访问了定价页", "分数": 10}],
     "资质认定阈值": 50}

Keys may be Chinese (评分规则, 标准, 分数, 资质认定阈值) or English (rules, criterion, points,
threshold), mixed freely; the text may be JSON or YAML. Each criterion is in the rule language of
`plugins.crm.common.rules`. A lead's score is the sum of the points of the rules it meets; it is
qualified at or above the threshold. `score_sql` computes the score of every lead in one SQL
expression (for a set-based UPDATE); `explain` says which rules fired for one lead.

The module imports neither Flask nor Flask-AppBuilder (only flask_babel's gettext for messages).
"""
from __future__ import annotations

import functools
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml
from flask_babel import gettext
from sqlalchemy import Integer, case, literal
from sqlalchemy.sql.elements import ColumnElement

from ..common.rules import Node, RuleError, Vocabulary, evaluate, parse, to_sql

MAX_RULES = 200
MAX_DOCUMENT = 200_000
MAX_POINTS = 1_000_000

TOP_KEYS = {"评分规则": "rules", "rules": "rules", "资质认定阈值": "threshold", "threshold": "threshold"}
RULE_KEYS = {"标准": "criterion", "criterion": "criterion", "分数": "points", "points": "points"}


@dataclass(frozen=True)
class Rule:
    """One scoring rule: its 1-based place in the file, the criterion as written, its tree and points."""

    index: int
    criterion: str
    ast: Node
    points: int


@dataclass(frozen=True)
class RuleSet:
    """A checked rule set: the rules in file order and the qualification threshold."""

    rules: tuple[Rule, ...]
    threshold: int

    def to_document(self) -> dict:
        """The rule set as a document with English keys (what is stored and exported)."""
        return {"rules": [{"criterion": rule.criterion, "points": rule.points} for rule in self.rules],
                "threshold": self.threshold}

    def qualifies(self, score: int) -> bool:
        """Whether a lead with this score is qualified (at or above the threshold)."""
        return score >= self.threshold


class Explanation(NamedTuple):
    """Whether one rule fired for a lead, and the points it gave."""

    index: int
    criterion: str
    points: int
    fired: bool


class RuleSetError(ValueError):
    """A rule set is refused; `problems` lists every problem found (translated), one per line of str()."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _load(source: Any) -> Any:
    """The document in `source`: a mapping as is, or JSON or YAML text."""
    if isinstance(source, Mapping):
        return source
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise RuleSetError([gettext("the rule file is not UTF-8 text")]) from None
    if not isinstance(source, str):
        raise RuleSetError([gettext("give the rule set as JSON or YAML text")])
    if len(source) > MAX_DOCUMENT:
        raise RuleSetError([gettext("the rule file may have at most %(max)s characters", max=MAX_DOCUMENT)])
    text = source.lstrip("\ufeff")
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise RuleSetError([gettext("not valid JSON: %(error)s (line %(line)s, column %(column)s)",
                                        error=exc.msg, line=exc.lineno, column=exc.colno)]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark, error = getattr(exc, "problem_mark", None), getattr(exc, "problem", None) or str(exc)
        if mark is None:
            raise RuleSetError([gettext("not valid YAML: %(error)s", error=error)]) from None
        raise RuleSetError([gettext("not valid YAML: %(error)s (line %(line)s, column %(column)s)", error=error,
                                    line=mark.line + 1, column=mark.column + 1)]) from None


def _english(mapping: Mapping, keys: dict[str, str], problems: list[str]) -> dict[str, Any]:
    """The mapping with English keys; unknown or repeated keys are reported."""
    known = ", ".join(f"{zh} / {en}" for zh, en in _pairs(keys))
    result: dict[str, Any] = {}
    for key, value in mapping.items():
        english = keys.get(key.strip() if isinstance(key, str) else key)
        if english is None:
            problems.append(gettext("unknown key “%(key)s” (known keys: %(known)s)", key=key, known=known))
        elif english in result:
            problems.append(gettext("“%(key)s” is given twice", key=key))
        else:
            result[english] = value
    return result


def _pairs(keys: dict[str, str]) -> list[tuple[str, str]]:
    chinese = {english: key for key, english in keys.items() if not key.isascii()}
    return [(chinese[english], english) for english in dict.fromkeys(keys.values())]


def _whole(value: Any) -> int | None:
    """`value` as a whole number, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_rule_set(source: Any, vocabulary: Vocabulary) -> RuleSet:
    """The checked rule set in `source` (JSON or YAML text, bytes, or an already loaded mapping), its
    criteria resolved through `vocabulary`.

    Every rule is checked; RuleSetError lists all the problems found, each naming the rule and the
    position in its criterion, and nothing of a refused rule set should be saved."""
    document = _load(source)
    if not isinstance(document, Mapping):
        raise RuleSetError([gettext('the rule file must be an object such as {"评分规则": [...], '
                                    '"资质认定阈值": 50}')])
    problems: list[str] = []
    top = _english(document, TOP_KEYS, problems)
    threshold = _whole(top.get("threshold"))
    if "threshold" not in top:
        problems.append(gettext("the threshold (资质认定阈值) is missing"))
    elif threshold is None or not 0 <= threshold <= MAX_POINTS:
        problems.append(gettext("the threshold (资质认定阈值) must be a whole number from 0 to %(max)s",
                                max=MAX_POINTS))
    raw_rules = top.get("rules")
    rules: list[Rule] = []
    if "rules" not in top:
        problems.append(gettext("the rules (评分规则) are missing"))
    elif not isinstance(raw_rules, list) or not raw_rules:
        problems.append(gettext("the rules (评分规则) must be a list of at least one rule"))
    elif len(raw_rules) > MAX_RULES:
        problems.append(gettext("at most %(max)s rules", max=MAX_RULES))
    else:
        for index, raw in enumerate(raw_rules, start=1):
            rule = _rule(index, raw, vocabulary, problems)
            if rule is not None:
                rules.append(rule)
    if problems:
        raise RuleSetError(problems)
    return RuleSet(tuple(rules), threshold)


def _rule(index: int, raw: Any, vocabulary: Vocabulary, problems: list[str]) -> Rule | None:
    """One checked rule, or None after adding its problems, each naming the rule."""
    mine: list[str] = []
    if not isinstance(raw, Mapping):
        problems.append(gettext("rule %(index)s: %(problem)s", index=index, problem=gettext(
            'must be an object such as {"标准": "公司规模 > 100", "分数": 20}')))
        return None
    rule = _english(raw, RULE_KEYS, mine)
    criterion, points = rule.get("criterion"), _whole(rule.get("points"))
    if "points" not in rule:
        mine.append(gettext("the points (分数) are missing"))
    elif points is None or abs(points) > MAX_POINTS:
        mine.append(gettext("the points (分数) must be a whole number from -%(max)s to %(max)s", max=MAX_POINTS))
    ast = None
    if "criterion" not in rule:
        mine.append(gettext("the criterion (标准) is missing"))
    elif not isinstance(criterion, str):
        mine.append(gettext("the criterion (标准) must be text such as %(example)s", example="公司规模 > 100"))
    else:
        try:
            ast = parse(criterion, vocabulary)
        except RuleError as exc:
            mine.append(str(exc))
    for problem in mine:
        if isinstance(criterion, str) and criterion.strip():
            problems.append(gettext("rule %(index)s (%(criterion)s): %(problem)s", index=index,
                                    criterion=_short(criterion), problem=problem))
        else:
            problems.append(gettext("rule %(index)s: %(problem)s", index=index, problem=problem))
    if mine or ast is None:
        return None
    return Rule(index, criterion, ast, points)


def _short(criterion: str, limit: int = 60) -> str:
    return criterion if len(criterion) <= limit else criterion[:limit - 1] + "…"


def score_sql(rule_set: RuleSet, vocabulary: Vocabulary) -> ColumnElement:
    """The score of a row as one SQL expression: the sum of CASE WHEN criterion THEN points ELSE 0 END
    over the rules, for `UPDATE lead SET score = <this>` over all leads at once."""
    parts = [case((to_sql(rule.ast, vocabulary), literal(rule.points, Integer())), else_=literal(0, Integer()))
             for rule in rule_set.rules]
    return functools.reduce(operator.add, parts) if parts else literal(0, Integer())


def explain(rule_set: RuleSet, record: Mapping) -> list[Explanation]:
    """Why a record has its score: each rule, in file order, with whether it fired."""
    return [Explanation(rule.index, rule.criterion, rule.points, evaluate(rule.ast, record))
            for rule in rule_set.rules]


def score(rule_set: RuleSet, record: Mapping) -> int:
    """The score of one record (the points of the rules it meets), as `score_sql` computes it."""
    return sum(item.points for item in explain(rule_set, record) if item.fired)
