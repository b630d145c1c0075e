"""The rule language: one small criteria language for scoring, assignment rules, segments, workflow
conditions and sequence branches. A criterion is parsed (never evaluated as code) into a tree, which
becomes either a SQL condition (`to_sql`, for set-based work) or a Python test of one record (`evaluate`,
for previews and explanations). Both give the same answer for the same data.

    公司规模 > 100 且 行业 = '科技'
    company_size >= 50 AND (industry IN ('科技', '金融') OR visited_pricing_page)

Names are resolved through a `Vocabulary` the caller provides: its fields (with their Chinese and
English names, a type and a SQL expression) and its facts (things a record did, true or false).
The grammar, keywords and messages are described in docs/rules.md.

The module imports neither Flask nor Flask-AppBuilder (only flask_babel's gettext for messages).
"""
from __future__ import annotations

import datetime as dt
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask_babel import gettext
from sqlalchemy import Float, String, and_, case, false, literal, not_, null, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

MAX_LENGTH = 1000
MAX_DEPTH = 50
TYPES = ("number", "text", "date", "boolean")
JSON_TYPES = ("number", "text", "boolean")

# Keywords and the operators written as words, by the (lower-case) spelling a user types.
KEYWORDS = {
    "and": "AND", "且": "AND", "并且": "AND", "和": "AND",
    "or": "OR", "或": "OR", "或者": "OR",
    "not": "NOT", "非": "NOT", "不": "NOT",
    "in": "IN", "属于": "IN", "在": "IN",
    "contains": "CONTAINS", "包含": "CONTAINS",
    "true": "TRUE", "真": "TRUE", "是": "TRUE",
    "false": "FALSE", "假": "FALSE", "否": "FALSE",
}
WORD_OPERATORS = {
    "等于": "=", "不等于": "!=", "大于": ">", "小于": "<",
    "大于等于": ">=", "不小于": ">=", "小于等于": "<=", "不大于": "<=",
}
SYMBOL_OPERATORS = {">": ">", ">=": ">=", "≥": ">=", "<": "<", "<=": "<=", "≤": "<=",
                    "=": "=", "==": "=", "!=": "!=", "<>": "!=", "≠": "!="}
QUOTES = {"'": "'", '"': '"', "「": "」", "『": "』", "‘": "’", "“": "”"}
ORDERING = (">", ">=", "<", "<=")
OPERATOR_HINT = "> >= < <= = != IN CONTAINS"

_OPERATOR_CHARS = re.compile(r"[<>=!≥≤≠]+")
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_LATIN_TAIL = "[0-9a-z_\u00c0-\u024f]"
_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_JSON_KEY = re.compile(r"[\w\-]+")


# -- errors --------------------------------------------------------------------------------------------

class RuleError(ValueError):
    """A criterion is refused. `position` is the 1-based character where the problem is; `reason` says
    what is wrong (translated); `str()` gives both."""

    def __init__(self, reason: str, position: int):
        self.reason, self.position = reason, position
        super().__init__(gettext("position %(position)s: %(reason)s", position=position, reason=reason))


class RuleSyntaxError(RuleError):
    """The criterion is not written in the rule language (or uses a field in a way its type forbids)."""


class RuleFieldError(RuleError):
    """The criterion names a field or fact the vocabulary does not know. `known` lists the names that
    would be understood, as (Chinese, English) pairs."""

    def __init__(self, name: str, position: int, known: list[tuple[str, str]]):
        self.name, self.known = name, known
        names = ", ".join(f"{zh} / {en}" if zh != en else zh for zh, en in known)
        super().__init__(gettext("unknown name “%(name)s”; known names: %(names)s", name=name, names=names),
                         position)


# -- vocabulary ----------------------------------------------------------------------------------------

Expression = ColumnElement | Callable[[], ColumnElement]


@dataclass(frozen=True)
class FieldSpec:
    """A field criteria may test: its canonical name, type (number, text, date or boolean), Chinese and
    English names plus any other aliases, the SQL expression it is read from (or a function returning
    it), and where `evaluate` finds it in a record (`path`, the canonical name unless given)."""

    name: str
    type: str
    zh: str
    en: str
    sql: Expression
    aliases: tuple[str, ...] = ()
    path: tuple[str, ...] = ()

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"{self.name}: type must be one of {', '.join(TYPES)}")
        if not self.path:
            object.__setattr__(self, "path", (self.name,))


@dataclass(frozen=True)
class FactSpec:
    """A fact (something the record did): its key, Chinese and English names plus aliases, and its SQL
    condition, which must be true or false (never NULL) for every row, typically an EXISTS. `evaluate`
    takes a fact as true when its key is in the record's ``facts`` collection."""

    key: str
    zh: str
    en: str
    sql: Expression
    aliases: tuple[str, ...] = ()


def _fold_name(text: str) -> str:
    """How names are matched: NFKC, lower case, spaces and underscores alike."""
    return re.sub(r"[\s_]+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def _is_latin(char: str) -> bool:
    return bool(re.fullmatch(_LATIN_TAIL, char))


class Vocabulary:
    """The fields and facts criteria may name, each reachable by its canonical name, its Chinese and
    English names and its aliases (matched ignoring case, width, and spaces versus underscores)."""

    def __init__(self, fields: Iterable[FieldSpec] = (), facts: Iterable[FactSpec] = ()):
        self.fields = {f.name: f for f in fields}
        self.facts = {f.key: f for f in facts}
        self._names: dict[str, FieldSpec | FactSpec | tuple[str, str]] = {}
        for spec in [*self.fields.values(), *self.facts.values()]:
            canonical = spec.name if isinstance(spec, FieldSpec) else spec.key
            for alias in {canonical, spec.zh, spec.en, *spec.aliases}:
                key = _fold_name(alias)
                if not key:
                    continue
                if key in KEYWORDS or key in WORD_OPERATORS:
                    raise ValueError(f"{alias!r} is a keyword of the rule language and cannot name {canonical}")
                if self._names.get(key, spec) is not spec:
                    raise ValueError(f"{alias!r} names two fields or facts")
                self._names[key] = spec
        for word, keyword in KEYWORDS.items():
            self._names[word] = ("kw", keyword)
        for word, op in WORD_OPERATORS.items():
            self._names[word] = ("op", op)
        patterns = []
        for key in sorted(self._names, key=len, reverse=True):
            pattern = r"[\s_]+".join(re.escape(word) for word in key.split(" "))
            patterns.append(pattern + (f"(?!{_LATIN_TAIL})" if _is_latin(key[-1]) else ""))
        self._pattern = re.compile("|".join(patterns))

    def known(self) -> list[tuple[str, str]]:
        """The (Chinese, English) names of every field, then every fact."""
        return [(spec.zh, spec.en) for spec in [*self.fields.values(), *self.facts.values()]]

    def _match(self, folded: str, start: int) -> tuple[int, FieldSpec | FactSpec | tuple[str, str]] | None:
        found = self._pattern.match(folded, start)
        if not found or not found.group():
            return None
        return found.end(), self._names[_fold_name(found.group())]

    def _names_at(self, folded: str, start: int) -> bool:
        """Whether a field or fact name (not a keyword) starts at `start`."""
        matched = self._match(folded, start)
        return matched is not None and not isinstance(matched[1], tuple)

    def field_sql(self, name: str) -> ColumnElement:
        return _expression(self.fields[name].sql)

    def fact_sql(self, key: str) -> ColumnElement:
        return _expression(self.facts[key].sql)


def _expression(sql: Expression) -> ColumnElement:
    return sql() if callable(sql) and not isinstance(sql, ColumnElement) else sql


# -- custom fields in a JSON column --------------------------------------------------------------------

class _json_kind(FunctionElement):
    """The JSON type of one key of a JSON column, the same word on every database: number, string,
    true, false, null, object or array (NULL when the key is missing). Arguments: the column, the key
    and its SQLite JSON path, both as bound parameters so cached statements get the right ones."""

    type = String()
    name = "json_kind"
    inherit_cache = True


@compiles(_json_kind)
def _json_kind_sqlite(element, compiler, **kw):
    column, _key, path = element.clauses
    kind = f"json_type({compiler.process(column, **kw)}, {compiler.process(path, **kw)})"
    return f"CASE {kind} WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' WHEN 'text' THEN 'string' " \
           f"ELSE {kind} END"


@compiles(_json_kind, "postgresql")
def _json_kind_postgresql(element, compiler, **kw):
    column, key, _path = element.clauses
    value = f"CAST(({compiler.process(column, **kw)} -> {compiler.process(key, **kw)}) AS json)"
    return f"CASE json_typeof({value}) WHEN 'boolean' THEN {value} #>> '{{}}' ELSE json_typeof({value}) END"


def json_field(column: ColumnElement, key: str, type: str) -> ColumnElement:
    """The SQL expression of custom field `key` stored in the JSON `column`: its value when the JSON
    value has the field's type (number, text or boolean), else NULL, as `evaluate` sees it."""
    if type not in JSON_TYPES:
        raise ValueError(f"custom field {key}: type must be one of {', '.join(JSON_TYPES)}")
    if not _JSON_KEY.fullmatch(key):
        raise ValueError(f"custom field key {key!r}: use letters, digits, _ and -")
    kind = _json_kind(column, literal(key, String()), literal(f'$."{key}"', String()))
    if type == "number":
        return case((kind == "number", column[key].as_float()), else_=null())
    if type == "text":
        return case((kind == "string", column[key].as_string()), else_=null())
    return case((kind == "true", true()), (kind == "false", false()), else_=null())


def custom_field(column: ColumnElement, key: str, type: str, zh: str, en: str, aliases: Iterable[str] = (),
                 record_key: str = "custom") -> FieldSpec:
    """A FieldSpec for custom field `key` kept in the JSON `column`; `evaluate` reads it from
    ``record[record_key][key]``."""
    return FieldSpec(name=f"{record_key}.{key}", type=type, zh=zh, en=en, aliases=tuple(aliases),
                     sql=lambda: json_field(column, key, type), path=(record_key, key))


# -- the tree ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldRef:
    """A field as a criterion uses it: canonical name, type, and where `evaluate` finds its value."""

    name: str
    type: str
    path: tuple[str, ...]


@dataclass(frozen=True)
class Compare:
    """`field op value`; op is one of = != > >= < <=."""

    field: FieldRef
    op: str
    value: Any


@dataclass(frozen=True)
class In:
    """`field IN (value, …)`."""

    field: FieldRef
    values: tuple


@dataclass(frozen=True)
class Contains:
    """`field CONTAINS 'text'`: the text is part of the field's value."""

    field: FieldRef
    value: str


@dataclass(frozen=True)
class Has:
    """A bare fact name: true when the record has the fact."""

    fact: str


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple


@dataclass(frozen=True)
class Or:
    operands: tuple


Node = Compare | In | Contains | Has | Not | And | Or


# -- tokens --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    kind: str  # name, unknown, number, string, op, kw, "(", ")", ",", end
    value: Any
    text: str  # as written
    start: int  # 0-based

    @property
    def position(self) -> int:
        return self.start + 1


def _view(text: str) -> str:
    """The text with each character width-normalized and lower-cased where that keeps it one
    character, so positions in it are positions in what the user wrote."""
    chars = []
    for char in text:
        normal = unicodedata.normalize("NFKC", char)
        char = normal if len(normal) == 1 else char
        lower = char.lower()
        chars.append(lower if len(lower) == 1 else char)
    return "".join(chars)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _is_cjk(char: str) -> bool:
    return not char.isascii() and char.isalpha() and not _is_latin(char)


def _tokens(text: str, vocabulary: Vocabulary) -> Iterator[_Token]:
    view = _view(text)
    i, n = 0, len(view)
    while True:
        while i < n and view[i].isspace():
            i += 1
        if i >= n:
            yield _Token("end", None, "", n)
            return
        char = view[i]
        matched = vocabulary._match(view, i)
        if matched:
            end, meaning = matched
            if isinstance(meaning, tuple):
                yield _Token(meaning[0], meaning[1], text[i:end], i)
            else:
                yield _Token("name", meaning, text[i:end], i)
            i = end
        elif char in QUOTES:
            value, end = _string(text, view, i)
            yield _Token("string", value, text[i:end], i)
            i = end
        elif found := _NUMBER.match(view, i):
            number = found.group()
            yield _Token("number", Decimal(number) if "." in number else int(number), text[i:found.end()], i)
            i = found.end()
        elif found := _OPERATOR_CHARS.match(view, i):
            symbol = found.group()
            if symbol not in SYMBOL_OPERATORS:
                raise RuleSyntaxError(gettext("unknown operator “%(op)s” (use %(ops)s)", op=text[i:found.end()],
                                              ops=OPERATOR_HINT), i + 1)
            yield _Token("op", SYMBOL_OPERATORS[symbol], text[i:found.end()], i)
            i = found.end()
        elif char in "()":
            yield _Token(char, char, text[i], i)
            i += 1
        elif char in ",、":
            yield _Token(",", ",", text[i], i)
            i += 1
        elif _is_word(char):
            end = i + 1
            while end < n and _is_word(view[end]) and not (_is_cjk(view[end]) and vocabulary._names_at(view, end)):
                end += 1
            yield _Token("unknown", text[i:end], text[i:end], i)
            i = end
        else:
            raise RuleSyntaxError(gettext("unexpected “%(text)s”", text=text[i]), i + 1)


def _string(text: str, view: str, start: int) -> tuple[str, int]:
    """The value of the quoted text starting at `start` and the index after it. A closing quote written
    twice ('' in '…') stands for itself."""
    closing = QUOTES[view[start]]
    parts, i = [], start + 1
    while i < len(view):
        if view[i] == closing:
            if closing in "'\"" and i + 1 < len(view) and view[i + 1] == closing:
                parts.append(text[i])
                i += 2
                continue
            return "".join(parts), i + 1
        parts.append(text[i])
        i += 1
    raise RuleSyntaxError(gettext("the quoted text that starts here is not closed (add %(quote)s)",
                                  quote=closing), start + 1)


# -- parser --------------------------------------------------------------------------------------------

def parse(text: str, vocabulary: Vocabulary) -> Node:
    """The tree of criterion `text`, with names resolved through `vocabulary`.

    Raises RuleSyntaxError (with the position of the problem) or RuleFieldError (an unknown name, with
    the names that are known)."""
    if not isinstance(text, str):
        raise RuleSyntaxError(gettext("a criterion is text such as %(example)s", example="公司规模 > 100"), 1)
    if len(text) > MAX_LENGTH:
        raise RuleSyntaxError(gettext("a criterion may have at most %(max)s characters (this one has "
                                      "%(length)s)", max=MAX_LENGTH, length=len(text)), MAX_LENGTH + 1)
    if not text.strip():
        raise RuleSyntaxError(gettext("the criterion is empty"), 1)
    return _Parser(text, vocabulary).criterion()


def _describe(token: _Token) -> str:
    return gettext("the end of the criterion") if token.kind == "end" else f"“{token.text}”"


class _Parser:
    """Recursive descent; precedence NOT > AND > OR."""

    def __init__(self, text: str, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        self.tokens = _tokens(text, vocabulary)
        self.current = next(self.tokens)
        self.depth = 0

    def advance(self) -> _Token:
        token = self.current
        if token.kind != "end":
            self.current = next(self.tokens)
        return token

    def at(self, kind: str, value: Any = None) -> bool:
        return self.current.kind == kind and (value is None or self.current.value == value)

    def deeper(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleSyntaxError(gettext("nested too deeply (at most %(max)s levels)", max=MAX_DEPTH),
                                  token.position)

    def criterion(self) -> Node:
        node = self.disjunction()
        if self.at(")"):
            raise RuleSyntaxError(gettext("this “)” has no matching “(”"), self.current.position)
        if not self.at("end"):
            raise RuleSyntaxError(gettext("expected AND or OR, found %(found)s", found=_describe(self.current)),
                                  self.current.position)
        return node

    def disjunction(self) -> Node:
        operands = [self.conjunction()]
        while self.at("kw", "OR"):
            self.advance()
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def conjunction(self) -> Node:
        operands = [self.negation()]
        while self.at("kw", "AND"):
            self.advance()
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def negation(self) -> Node:
        if self.at("kw", "NOT"):
            token = self.advance()
            self.deeper(token)
            node = Not(self.negation())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        token = self.current
        if token.kind == "(":
            self.advance()
            self.deeper(token)
            node = self.disjunction()
            if self.at("end"):
                raise RuleSyntaxError(gettext("this “(” has no matching “)”"), token.position)
            if not self.at(")"):
                raise RuleSyntaxError(gettext("expected AND, OR or “)”, found %(found)s",
                                              found=_describe(self.current)), self.current.position)
            self.advance()
            self.depth -= 1
            return node
        if token.kind == "unknown":
            raise RuleFieldError(token.text, token.position, self.vocabulary.known())
        if token.kind == "name":
            return self.test()
        raise RuleSyntaxError(gettext("expected a field or a fact, found %(found)s", found=_describe(token)),
                              token.position)

    def test(self) -> Node:
        token = self.advance()
        spec = token.value
        if isinstance(spec, FactSpec):
            if self.at("op") or self.at("kw", "IN") or self.at("kw", "CONTAINS"):
                raise RuleSyntaxError(gettext("“%(name)s” is a fact: it is tested alone, without an operator "
                                              "or a value", name=token.text), self.current.position)
            return Has(spec.key)
        field = FieldRef(spec.name, spec.type, spec.path)
        negated = False
        if self.at("kw", "NOT"):
            self.advance()
            if not (self.at("kw", "IN") or self.at("kw", "CONTAINS")):
                raise RuleSyntaxError(gettext("expected IN or CONTAINS after “%(token)s”, found %(found)s",
                                              token="NOT", found=_describe(self.current)), self.current.position)
            negated = True
        if self.at("op"):
            node = self.comparison(token, field)
        elif self.at("kw", "IN"):
            node = self.membership(token, field)
        elif self.at("kw", "CONTAINS"):
            node = self.containment(token, field)
        elif field.type == "boolean":
            return Compare(field, "=", True)
        else:
            raise RuleSyntaxError(gettext("expected an operator after “%(name)s” (%(ops)s), found %(found)s",
                                          name=token.text, ops=OPERATOR_HINT, found=_describe(self.current)),
                                  self.current.position)
        return Not(node) if negated else node

    def value(self, after: _Token) -> _Token:
        token = self.current
        if token.kind in ("number", "string") or (token.kind == "kw" and token.value in ("TRUE", "FALSE")):
            return self.advance()
        if token.kind in ("unknown", "name"):
            raise RuleSyntaxError(gettext("expected a value after “%(token)s”; put text in quotes: '%(text)s'",
                                          token=after.text, text=token.text), token.position)
        raise RuleSyntaxError(gettext("expected a value after “%(token)s”", token=after.text), token.position)

    def comparison(self, name: _Token, field: FieldRef) -> Node:
        op_token = self.advance()
        op = op_token.value
        if op in ORDERING and field.type in ("text", "boolean"):
            raise RuleSyntaxError(_type_hint(name.text, field.type), op_token.position)
        return Compare(field, op, _typed(name, field, self.value(op_token)))

    def membership(self, name: _Token, field: FieldRef) -> Node:
        keyword = self.advance()
        if field.type not in ("number", "text"):
            raise RuleSyntaxError(_type_hint(name.text, field.type), keyword.position)
        if not self.at("("):
            raise RuleSyntaxError(gettext("expected “(” after “%(token)s”, found %(found)s", token=keyword.text,
                                          found=_describe(self.current)), self.current.position)
        opening = self.advance()
        values, after = [], opening
        while True:
            values.append(_typed(name, field, self.value(after)))
            if self.at(")"):
                self.advance()
                return In(field, tuple(values))
            if self.at("end"):
                raise RuleSyntaxError(gettext("this “(” has no matching “)”"), opening.position)
            if not self.at(","):
                raise RuleSyntaxError(gettext("expected “,” or “)”, found %(found)s", found=_describe(self.current)),
                                      self.current.position)
            after = self.advance()

    def containment(self, name: _Token, field: FieldRef) -> Node:
        keyword = self.advance()
        if field.type != "text":
            raise RuleSyntaxError(gettext("CONTAINS works on text, and “%(name)s” is not text", name=name.text),
                                  keyword.position)
        return Contains(field, _typed(name, field, self.value(keyword)))


def _type_hint(name: str, type: str) -> str:
    if type == "number":
        return gettext("“%(name)s” is a number: compare it with a number such as 100", name=name)
    if type == "text":
        return gettext("“%(name)s” is text: compare it with = != IN or CONTAINS and a value in quotes", name=name)
    if type == "date":
        return gettext("“%(name)s” is a date: compare it with > >= < <= = != and a date in quotes such as "
                       "'2024-06-30'", name=name)
    return gettext("“%(name)s” is true or false: use it alone, or compare it with = TRUE or = FALSE", name=name)


def _typed(name: _Token, field: FieldRef, token: _Token) -> Any:
    """The value of literal `token` for `field`, or a RuleSyntaxError when its type does not fit."""
    is_bool = token.kind == "kw"
    if field.type == "number" and token.kind == "number":
        return token.value
    if field.type == "text" and not is_bool:
        return token.value if token.kind == "string" else token.text.strip()
    if field.type == "boolean" and is_bool:
        return token.value == "TRUE"
    if field.type == "date" and token.kind == "string":
        found = _DATE.fullmatch(unicodedata.normalize("NFKC", token.value).strip())
        try:
            if not found:
                raise ValueError(token.value)
            return dt.date(*(int(part) for part in found.groups()))
        except ValueError:
            raise RuleSyntaxError(gettext("“%(value)s” is not a date (write it as YYYY-MM-DD)",
                                          value=token.value), token.position) from None
    raise RuleSyntaxError(_type_hint(name.text, field.type), token.position)


# -- SQL -----------------------------------------------------------------------------------------------

class _folded(FunctionElement):
    """Text as compared: lower case, and on PostgreSQL also NFKC (full-width letters and digits as
    half-width). SQLite's lower() changes only ASCII letters."""

    type = String()
    name = "lower"
    inherit_cache = True


@compiles(_folded)
def _folded_default(element, compiler, **kw):
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(_folded, "postgresql")
def _folded_postgresql(element, compiler, **kw):
    return f"lower(normalize(CAST({compiler.process(element.clauses, **kw)} AS text), NFKC))"


def fold(text: str) -> str:
    """A text value as compared (NFKC, lower case): what `_folded` does in SQL."""
    return unicodedata.normalize("NFKC", text).lower()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _day_bounds(day: dt.date, column: ColumnElement) -> tuple[Any, Any]:
    if isinstance(column.type, sqltypes.DateTime):
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        return start, start + dt.timedelta(days=1)
    return day, day + dt.timedelta(days=1)


def _number(value: int | Decimal) -> ColumnElement:
    return literal(value) if isinstance(value, int) else literal(float(value), Float())


def to_sql(node: Node, vocabulary: Vocabulary) -> ColumnElement:
    """The criterion as a SQL condition that is true or false (never NULL) for every row: a missing
    value makes `=`, `>`, IN and CONTAINS false and `!=` true, as in `evaluate`."""
    if isinstance(node, And):
        return and_(*(to_sql(operand, vocabulary) for operand in node.operands))
    if isinstance(node, Or):
        return or_(*(to_sql(operand, vocabulary) for operand in node.operands))
    if isinstance(node, Not):
        return not_(to_sql(node.operand, vocabulary))
    if isinstance(node, Has):
        return vocabulary.fact_sql(node.fact)
    column = vocabulary.field_sql(node.field.name)
    present = column.is_not(None)
    kind = node.field.type
    if isinstance(node, Contains):
        pattern = f"%{_escape_like(fold(node.value))}%"
        return and_(present, _folded(column).like(literal(pattern, String()), escape="\\"))
    if isinstance(node, In):
        if kind == "text":
            return and_(present, _folded(column).in_([fold(v) for v in node.values]))
        return and_(present, column.in_([_number(v) for v in node.values]))
    op, value = node.op, node.value
    if kind == "date":
        start, end = _day_bounds(value, column)
        test = {"=": and_(column >= start, column < end), "!=": or_(column < start, column >= end),
                ">": column >= end, ">=": column >= start, "<": column < start, "<=": column < end}[op]
    elif kind == "text":
        test = _compare(_folded(column), op, literal(fold(value), String()))
    elif kind == "boolean":
        test = _compare(column, op, true() if value else false())
    else:
        test = _compare(column, op, _number(value))
    return or_(column.is_(None), test) if op == "!=" else and_(present, test)


_OPERATORS = {"=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt,
              "<=": operator.le}


def _compare(left: ColumnElement, op: str, right: ColumnElement) -> ColumnElement:
    return _OPERATORS[op](left, right)


# -- Python --------------------------------------------------------------------------------------------

def _lookup(record: Mapping, path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _value(field: FieldRef, record: Mapping) -> Any:
    """The record's value of `field` with the type the criterion expects, or None (missing, or of
    another type, as the SQL of a JSON custom field sees it)."""
    value = _lookup(record, field.path)
    if field.type == "number":
        return value if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) else None
    if field.type == "text":
        return fold(value) if isinstance(value, str) else None
    if field.type == "boolean":
        return value if isinstance(value, bool) else None
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) if value.tzinfo else value).date()
    return value if isinstance(value, dt.date) else None


def evaluate(node: Node, record: Mapping) -> bool:
    """Whether `record` meets the criterion. The record maps field names (or the paths of custom
    fields) to values, and ``facts`` to the collection of the keys of the facts it has."""
    if isinstance(node, And):
        return all(evaluate(operand, record) for operand in node.operands)
    if isinstance(node, Or):
        return any(evaluate(operand, record) for operand in node.operands)
    if isinstance(node, Not):
        return not evaluate(node.operand, record)
    if isinstance(node, Has):
        return node.fact in (record.get("facts") or ())
    value = _value(node.field, record)
    if value is None:
        return isinstance(node, Compare) and node.op == "!="
    if isinstance(node, Contains):
        return fold(node.value) in value
    if isinstance(node, In):
        return value in ({fold(v) for v in node.values} if node.field.type == "text" else set(node.values))
    expected = fold(node.value) if node.field.type == "text" else node.value
    return _OPERATORS[node.op](value, expected)
