"""E-mail templates: Jinja in a sandbox, checked when saved, rendered per recipient.

A template is written by staff and filled with data that leads typed into web forms, so both sides are
untrusted. Two independent walls keep a mail harmless:

1. `validate` (at save) and `prepare` (before sending) walk the parsed template and refuse anything but
   merge fields, a small set of filters, `if`, one level of `for`, and `set`/`with` of merge fields. No
   attribute or item starting with `_`, no function calls, no `include`/`import`/`macro`/`autoescape`.
2. Rendering uses an `ImmutableSandboxedEnvironment` whose attribute lookup only reads keys of the plain
   dicts built by `lead_context` (never a Python attribute), whose calls always fail, with no globals and
   only the allowed filters. A template stored in the database by other means still cannot reach Python
   objects, the configuration or the secret key.

Interface used by the scheduler (services.py):

    class TemplateError(BigLedgerError): .problems: list[str]   # translated, each says where
    validate(session, template: EmailTemplate) -> None           # raises TemplateError
    prepare(template: EmailTemplate, language: str | None) -> Prepared
        Prepared.language: "zh" | "en" (the version picked); Prepared.render(context) -> (subject, html, text)
    lead_context(lead: Mapping, owner: Mapping | None, *, unsubscribe_url: str = "",
                 sender: str = "") -> dict
"""
from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from jinja2 import ChainableUndefined, TemplateSyntaxError, nodes
from jinja2 import Template as JinjaTemplate
from jinja2.filters import FILTERS as JINJA_FILTERS
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bigledger_core.errors import BigLedgerError
from bigledger_core.mail.inbound import html_to_text

from ..leads.vocabulary import FIELDS as SCORING_FIELDS
from ..models import CustomField
from .models import EmailTemplate

MAX_SUBJECT_CHARS = 300
MAX_BODY_CHARS = 200_000
MAX_RENDERED_SUBJECT = 998  # the longest header line RFC 5322 allows, and the message table's column
MAX_LOOP_ITEMS = 100  # a loop walks at most this many items, so one mail stays cheap to render
MAX_PROBLEMS = 30

ROOTS = ("lead", "owner", "sender", "unsubscribe_url", "today")
# the lead's own fields a template may name; `lead.custom.KEY` (and `lead.KEY`) reach its custom fields
LEAD_FIELDS = tuple(dict.fromkeys((
    "name", "title", "company_name", "company_size", "industry", "website", "email", "phone", "address",
    "city", "country", "language", "score", "status", "message",
    *(name for name, *_ in SCORING_FIELDS))))
_LEAD_FIELD_SET = frozenset(LEAD_FIELDS)
OWNER_FIELDS = ("name", "first_name", "last_name", "email", "phone")
SENDER_FIELDS = ("name", "email")
DATE_FIELDS = ("year", "month", "day")
LOOP_FIELDS = ("index", "index0", "revindex", "revindex0", "first", "last", "length", "previtem", "nextitem")
FIELDS_OF = {"lead": LEAD_FIELDS, "owner": OWNER_FIELDS, "sender": SENDER_FIELDS, "today": DATE_FIELDS,
             "loop": LOOP_FIELDS}
FILTERS = ("default", "d", "upper", "lower", "title", "capitalize", "trim", "truncate", "replace", "round",
           "int", "float", "join", "length", "count", "first", "last", "e", "escape", "date")
# names people try in template-injection probes; refused with "is not allowed" rather than "unknown"
FORBIDDEN_NAMES = frozenset({
    "config", "self", "request", "session", "g", "cycler", "joiner", "namespace", "lipsum", "range", "dict",
    "url_for", "get_flashed_messages", "super", "caller", "varargs", "kwargs", "environment", "context",
    "os", "sys", "builtins", "import", "eval", "exec", "open", "globals", "locals", "getattr", "loop"})
_STATEMENTS = {
    nodes.Macro: "macro", nodes.CallBlock: "call", nodes.Include: "include", nodes.Import: "import",
    nodes.FromImport: "from … import", nodes.Extends: "extends", nodes.Block: "block", nodes.ExprStmt: "do",
    nodes.EvalContextModifier: "autoescape", nodes.ScopedEvalContextModifier: "autoescape",
    nodes.OverlayScope: "scope", nodes.Continue: "continue", nodes.Break: "break",
}
_PLAIN_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.If, nodes.CondExpr, nodes.Compare,
    nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Neg, nodes.Pos, nodes.Add, nodes.Sub, nodes.Mul,
    nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Concat, nodes.Tuple, nodes.List, nodes.Dict, nodes.Pair,
    nodes.Keyword, nodes.Slice, nodes.FilterBlock,
)
PARTS = {
    "subject_zh": _l("subject (中文)"), "html_zh": _l("body (中文)"),
    "subject_en": _l("subject (English)"), "html_en": _l("body (English)"),
}
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_SUBJECT_BREAKS = re.compile(r"\s*[\r\n]+\s*")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


class TemplateError(BigLedgerError):
    """A template that cannot be saved or rendered. `problems` are translated sentences, each naming the
    part (subject or body, Chinese or English), the line and column, and what is wrong; `fields` holds, for
    each problem, the column it concerns (or None), so that a form can show it next to that field."""

    def __init__(self, problems: list[str], fields: list[str | None] | None = None):
        super().__init__("\n".join(problems))
        self.problems = list(problems)
        self.fields = list(fields) if fields is not None else [None] * len(self.problems)

    def by_field(self) -> dict[str | None, list[str]]:
        """The problems grouped by the column they concern (None: the template as a whole)."""
        grouped: dict[str | None, list[str]] = {}
        for field, problem in zip(self.fields, self.problems, strict=True):
            grouped.setdefault(field, []).append(problem)
        return grouped


# -- checking a template's source ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Fields:
    """What `lead.X` may name. `custom` None: not checked (before sending, a field may have been removed
    since the template was saved; it then renders empty)."""

    custom: frozenset[str] | None = None


@dataclass
class _Finding:
    line: int
    needle: str
    message: str


class _Checker:
    """Walks a parsed template and collects what it refuses, with the line and the text to point at."""

    def __init__(self, fields: _Fields):
        self.fields = fields
        self.findings: list[_Finding] = []
        self.loop_vars: set[str] = set()
        self.set_vars: set[str] = set()

    def check(self, tree: nodes.Template) -> list[_Finding]:
        for node in tree.find_all(nodes.For):
            self.loop_vars |= _names(node.target)
        for node in tree.find_all((nodes.Assign, nodes.AssignBlock)):
            self.set_vars |= _names(node.target)
        for node in tree.find_all(nodes.With):
            for target in node.targets:
                self.set_vars |= _names(target)
        self.visit(tree, 0)
        return self.findings

    def refuse(self, node: nodes.Node, needle: str, message: str) -> None:
        self.findings.append(_Finding(getattr(node, "lineno", 1) or 1, needle, message))

    def visit(self, node: nodes.Node, depth: int) -> None:
        """Check `node`; `depth` counts the `for` loops around it."""
        handler = getattr(self, f"visit_{type(node).__name__}", None)
        if handler is not None:
            handler(node, depth)
        elif type(node) in _STATEMENTS:
            tag = _STATEMENTS[type(node)]
            self.refuse(node, tag.split()[0], gettext("`{%% %(tag)s %%}` is not allowed in e-mail templates",
                                                      tag=tag))
        elif isinstance(node, _PLAIN_NODES):
            if isinstance(node, nodes.Mod) and isinstance(node.left, nodes.Const) and isinstance(node.left.value,
                                                                                               str):
                self.refuse(node, "%", gettext("formatting with `%` is not allowed; write the text around the "
                                               "merge field instead"))
            self.children(node, depth)
        elif isinstance(node, nodes.Pow):
            self.refuse(node, "**", gettext("`**` is not allowed"))
        else:
            self.refuse(node, "", gettext("this construct is not allowed in e-mail templates"))

    def children(self, node: nodes.Node, depth: int) -> None:
        for child in node.iter_child_nodes():
            self.visit(child, depth)

    # names and the paths below them -------------------------------------------------------------------

    def name_problem(self, name: str, depth: int) -> str | None:
        if name in ROOTS or name in self.loop_vars or name in self.set_vars:
            return None
        if name == "loop" and depth > 0:
            return None
        if name in FORBIDDEN_NAMES or name.startswith("_"):
            return gettext("`%(name)s` is not allowed", name=name)
        return gettext("`%(name)s` is not a merge field (use %(roots)s)", name=name, roots=", ".join(ROOTS))

    def visit_Name(self, node: nodes.Name, depth: int) -> None:
        if node.ctx != "load":
            self.check_target(node)
            return
        problem = self.name_problem(node.name, depth)
        if problem is None and node.name in ("lead", "owner", "sender", "loop"):
            problem = gettext("`%(name)s` needs a field, for example `%(name)s.%(field)s`", name=node.name,
                              field=FIELDS_OF[node.name][0])
        if problem:
            self.refuse(node, node.name, problem)

    def check_target(self, node: nodes.Name) -> None:
        name = node.name
        if name in ROOTS or name in FORBIDDEN_NAMES or name.startswith("_"):
            self.refuse(node, name, gettext("`%(name)s` cannot be assigned: choose another name", name=name))

    def visit_Getattr(self, node: nodes.Node, depth: int) -> None:
        base, path, inner = _path(node)
        for expression in inner:
            self.visit(expression, depth)
        problem, needle = self.path_problem(base, path, depth)
        if problem:
            self.refuse(node, needle, problem)
        if not isinstance(base, nodes.Name | nodes.Const):
            self.visit(base, depth)

    visit_Getitem = visit_Getattr

    def path_problem(self, base: nodes.Node, path: list, depth: int) -> tuple[str | None, str]:
        """What is wrong with reading `path` below `base`, and the text to point at."""
        if isinstance(base, nodes.Name) and base.name in FORBIDDEN_NAMES | {"loop"}:
            problem = self.name_problem(base.name, depth)
            if problem:
                return problem, base.name
        for key in path:
            if isinstance(key, str) and key.startswith("_"):
                return gettext("`%(name)s` is not allowed", name=key), key
        for key in path:
            if not isinstance(key, str | int):
                return gettext("only fixed names or numbers may be used between [ ]"), "["
        if not isinstance(base, nodes.Name):
            first = next((k for k in path if isinstance(k, str)), None)
            if first is not None:
                return gettext("`%(name)s` is not allowed: only merge fields have fields", name=first), first
            return None, ""
        problem = self.name_problem(base.name, depth)
        if problem:
            return problem, base.name
        names = [k for k in path if isinstance(k, str)]
        if not names or base.name in self.loop_vars or base.name in self.set_vars:
            return None, ""
        return self.field_problem(base.name, path)

    def field_problem(self, root: str, path: list) -> tuple[str | None, str]:
        first = path[0]
        if not isinstance(first, str):
            return gettext("`%(name)s` needs a field, for example `%(name)s.%(field)s`", name=root,
                           field=FIELDS_OF.get(root, ("name",))[0]), root
        if root in ("sender", "owner", "today", "loop") and first not in FIELDS_OF[root]:
            return gettext("`%(root)s.%(field)s` does not exist; use one of: %(fields)s", root=root, field=first,
                           fields=", ".join(FIELDS_OF[root])), first
        if root == "unsubscribe_url":
            return gettext("`%(name)s` has no fields", name=root), first
        if root == "lead":
            return self.lead_problem(path)
        return self.deeper_problem(root, path[:1], path[1:])

    def lead_problem(self, path: list) -> tuple[str | None, str]:
        first, rest = path[0], path[1:]
        custom = self.fields.custom
        if first == "custom":
            if not rest:
                return gettext("`lead.custom` needs a custom field, for example `lead.custom.KEY`"), "custom"
            key = rest[0]
            if custom is not None and key not in custom:
                return gettext("`lead.custom.%(field)s` is not an active custom field of leads",
                               field=key), str(key)
            return self.deeper_problem("lead", path[:2], rest[1:])
        if first not in LEAD_FIELDS and custom is not None and first not in custom:
            return gettext("`lead.%(field)s` is not a lead field or an active custom field of leads",
                           field=first), first
        return self.deeper_problem("lead", path[:1], rest)

    @staticmethod
    def deeper_problem(root: str, head: list, rest: list) -> tuple[str | None, str]:
        """Below a field only numbers (`lead.name[0]`) may follow, except the parts of a date."""
        for key in rest:
            if isinstance(key, str) and key not in DATE_FIELDS:
                field = ".".join(str(k) for k in [root, *head])
                return gettext("`%(field)s` has no field `%(name)s`", field=field, name=key), key
        return None, ""

    # the rest ----------------------------------------------------------------------------------------------

    def visit_Call(self, node: nodes.Call, depth: int) -> None:
        callee = node.node
        label = callee.attr if isinstance(callee, nodes.Getattr) else getattr(callee, "name", "")
        self.refuse(node, label or "(", gettext("calling `%(name)s()` is not allowed: merge fields are values, "
                                                "not functions", name=label or "…"))
        self.children(node, depth)

    def visit_Filter(self, node: nodes.Filter, depth: int) -> None:
        if node.name not in FILTERS:
            self.refuse(node, node.name, gettext("the filter `%(name)s` is not allowed (allowed: %(filters)s)",
                                                 name=node.name, filters=", ".join(FILTERS)))
        self.children(node, depth)

    def visit_Test(self, node: nodes.Test, depth: int) -> None:
        if node.name not in _TESTS:
            self.refuse(node, node.name, gettext("the test `%(name)s` is not allowed", name=node.name))
        self.children(node, depth)

    def visit_For(self, node: nodes.For, depth: int) -> None:
        if depth > 0:
            self.refuse(node, "for", gettext("a loop inside a loop is not allowed"))
        if node.recursive:
            self.refuse(node, "recursive", gettext("recursive loops are not allowed"))
        for name in [node.target, *node.target.find_all(nodes.Name)]:
            if isinstance(name, nodes.Name):
                self.check_target(name)
        self.visit(node.iter, depth)
        if node.test is not None:
            self.visit(node.test, depth + 1)
        for child in node.body:
            self.visit(child, depth + 1)
        for child in node.else_:
            self.visit(child, depth)

    def visit_Scope(self, node: nodes.Scope, depth: int) -> None:
        # the parser wraps `{% autoescape %}` in a Scope; switching escaping off would let lead data write HTML
        if any(True for _ in node.find_all(nodes.EvalContextModifier)):
            self.refuse(node, "autoescape", gettext("`{%% %(tag)s %%}` is not allowed in e-mail templates",
                                                    tag="autoescape"))
        else:
            self.children(node, depth)

    def visit_Assign(self, node: nodes.Assign, depth: int) -> None:
        self.visit(node.target, depth)
        self.no_set_vars(node.node)
        self.visit(node.node, depth)

    def visit_AssignBlock(self, node: nodes.AssignBlock, depth: int) -> None:
        self.visit(node.target, depth)
        for child in node.body:
            self.no_set_vars(child)
        self.children(node, depth)

    def visit_With(self, node: nodes.With, depth: int) -> None:
        for value in node.values:
            self.no_set_vars(value)
        self.children(node, depth)

    def no_set_vars(self, value: nodes.Node) -> None:
        """A `set` combines merge fields and fixed text, never another `set`: chains of sets could double a
        value at each step and make one mail gigabytes long."""
        for name in value.find_all(nodes.Name):
            if name.ctx == "load" and name.name in self.set_vars:
                self.refuse(name, name.name, gettext("`%(name)s` cannot be used in a `set`: a `set` combines "
                                                     "merge fields and fixed text only", name=name.name))


def _names(target: nodes.Node) -> set[str]:
    """The names a `for`, `set` or `with` target declares (`x`, or `a, b`)."""
    found = [target] if isinstance(target, nodes.Name) else list(target.find_all(nodes.Name))
    return {name.name for name in found}


def _path(node: nodes.Node) -> tuple[nodes.Node, list, list[nodes.Node]]:
    """`lead.custom['x'][0]` → (Name lead, ["custom", "x", 0], []): the base, the keys read below it (a key
    that is not a constant stays a node) and the expressions inside [ ] that need checking themselves."""
    path: list = []
    inner: list[nodes.Node] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            path.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int) and \
                not isinstance(node.arg.value, bool):
            path.append(node.arg.value)
        elif isinstance(node.arg, nodes.Slice):
            path.append(0)  # a slice of a text or a list; its bounds are checked as expressions
            inner.append(node.arg)
        else:
            path.append(node.arg)
            inner.append(node.arg)
        node = node.node
    path.reverse()
    return node, path, inner


@dataclass(frozen=True)
class _Token:
    line: int
    column: int
    kind: str
    value: str
    target: bool  # a name being assigned by `for`, `set` or `with`


def _tokens(source: str) -> list[_Token]:
    """The template's tokens with their line and column (Jinja's lexer gives lines only)."""
    found: list[_Token] = []
    line, column, previous = 1, 1, ""
    try:
        for lineno, kind, value in _environment("zh", html=False).lexer.tokeniter(source, None):
            if lineno != line:  # whitespace control (`{%-`) may have dropped text; follow the lexer's line
                line, column = lineno, 1
            if kind != "data" and kind != "whitespace":
                found.append(_Token(line, column, kind, value, kind == "name" and previous in ("set", "for",
                                                                                           "with")))
                previous = value
            breaks = value.count("\n")
            if breaks:
                line += breaks
                column = len(value) - value.rfind("\n")
            else:
                column += len(value)
    except TemplateSyntaxError:
        pass
    return found


class _Locator:
    """Finds the line and column of what a finding points at: the next token on its line with that text
    (Jinja records lines, not columns, so this follows the order in which the checker reports)."""

    def __init__(self, source: str):
        self.tokens = _tokens(source)
        self.lines = _LINE_BREAKS.split(source) or [""]
        self.cursors: dict[tuple[int, str], int] = {}

    def __call__(self, finding: _Finding) -> tuple[int, int]:
        line, needle = finding.line, finding.needle
        candidates = [t for t in self.tokens if t.line == line and needle and not t.target and (
            t.value.strip("-") == needle or t.kind == "string" and needle in t.value)]
        after = self.cursors.get((line, needle), 0)
        chosen = next((t for t in candidates if t.column > after), candidates[0] if candidates else None)
        if chosen is not None:
            self.cursors[(line, needle)] = chosen.column
            offset = chosen.value.find(needle) if chosen.kind == "string" else 0
            return line, chosen.column + max(offset, 0)
        text = self.lines[min(max(line, 1), len(self.lines)) - 1]
        index = text.find(needle) if needle else -1
        return line, (index if index >= 0 else max(text.find("{{"), text.find("{%"), 0)) + 1


def _source_problems(source: str, fields: _Fields) -> list[tuple[int, int | None, str]]:
    """(line, column, problem) for one part's source; column None for a syntax error."""
    try:
        tree = _environment("zh", html=False).parse(source)
    except TemplateSyntaxError as exc:
        return [(exc.lineno or 1, None, gettext("not a valid template: %(error)s", error=exc.message or ""))]
    locate = _Locator(source)
    return [(*locate(finding), finding.message) for finding in _Checker(fields).check(tree)]


def _where(part: str, line: int, column: int | None, problem: str) -> str:
    if column is None:
        return gettext("%(part)s, line %(line)s: %(problem)s", part=PARTS[part], line=line, problem=problem)
    return gettext("%(part)s, line %(line)s, column %(column)s: %(problem)s", part=PARTS[part], line=line,
                   column=column, problem=problem)


def active_custom_keys(session: Session) -> frozenset[str]:
    """The keys of the active custom fields of leads: what `lead.custom.KEY` may name."""
    return frozenset(session.scalars(select(CustomField.key).where(CustomField.entity == "lead",
                                                                   CustomField.active.is_(True))))


def validate(session: Session, template: EmailTemplate) -> None:
    """Check a template before it is saved; raises TemplateError listing every problem with its place.

    At least one language needs both a subject and a body; a half-filled version is refused (it is almost
    always a mistake). Sizes are limited and every part must pass the sandbox's rules and name only
    existing lead fields and active custom fields."""
    problems: list[str] = []
    fields: list[str | None] = []

    def add(field: str | None, problem: str) -> None:
        if problem not in problems:
            problems.append(problem)
            fields.append(field)

    if not (template.name or "").strip():
        add("name", gettext("name: give the template a name"))
    half_filled = False
    for language in ("zh", "en"):
        subject, body = _text_of(template, f"subject_{language}"), _text_of(template, f"html_{language}")
        if bool(subject) != bool(body):
            half_filled = True
            missing = f"html_{language}" if subject else f"subject_{language}"
            add(missing, gettext("%(part)s: empty; fill in both the subject and the body of this language, or "
                                 "neither", part=PARTS[missing]))
    if not complete_languages(template) and not half_filled:
        add("subject_zh", gettext("Give a subject and a body in Chinese, in English or in both."))
    keys = _Fields(active_custom_keys(session))
    for part, limit in (("subject_zh", MAX_SUBJECT_CHARS), ("html_zh", MAX_BODY_CHARS),
                        ("subject_en", MAX_SUBJECT_CHARS), ("html_en", MAX_BODY_CHARS)):
        source = _text_of(template, part)
        if not source:
            continue
        if len(source) > limit:
            add(part, gettext("%(part)s: %(count)s characters, longer than the %(limit)s allowed",
                              part=PARTS[part], count=len(source), limit=limit))
            continue
        for line, column, problem in _source_problems(source, keys):
            add(part, _where(part, line, column, problem))
    if problems:
        raise TemplateError(problems[:MAX_PROBLEMS], fields[:MAX_PROBLEMS])


def _text_of(template: EmailTemplate, part: str) -> str:
    value = getattr(template, part, None)
    return value if isinstance(value, str) and value.strip() else ""


# -- the sandbox ---------------------------------------------------------------------------------------------

class _Empty(ChainableUndefined):
    """A missing value: prints nothing, has no fields, counts as 0 and compares false, so that a lead with
    an empty field still gets its mail."""

    __slots__ = ()

    def _nothing(self, *_args):
        return self

    def _false(self, *_args) -> bool:
        return False

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _nothing
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _nothing
    __pos__ = __neg__ = _nothing
    __lt__ = __le__ = __gt__ = __ge__ = _false

    def __int__(self) -> int:
        return 0

    def __float__(self) -> float:
        return 0.0


class _Sandbox(ImmutableSandboxedEnvironment):
    """The rendering environment. Beyond Jinja's sandbox: a field is read only as a key of a dict (or the
    year, month and day of a date, or a loop's counters), never as a Python attribute; every call fails;
    repeating text with `*` and formatting with `%` are capped or refused."""

    intercepted_binops = frozenset({"*", "%", "**"})

    def getattr(self, obj, attribute):
        return self._field(obj, attribute)

    def getitem(self, obj, argument):
        if isinstance(argument, str):
            return self._field(obj, argument)
        if isinstance(obj, str | list | tuple) and isinstance(argument, int | slice) and \
                not isinstance(argument, bool):
            try:
                return obj[argument]
            except IndexError:
                pass
        return self.undefined(obj=obj, name=argument)

    def _field(self, obj, name: str):
        if not name.startswith("_"):
            if isinstance(obj, Mapping):
                if name in obj:
                    return obj[name]
            elif isinstance(obj, dt.date) and name in DATE_FIELDS or isinstance(obj, LoopContext) and \
                    name in LOOP_FIELDS:
                return getattr(obj, name)
        return self.undefined(obj=obj, name=name)

    def call(self, context, obj, /, *args, **kwargs):
        raise SecurityError("calls are not allowed in e-mail templates")

    def call_binop(self, context, operator_, left, right):
        if operator_ == "**" or operator_ == "%" and isinstance(left, str):
            raise SecurityError(f"{operator_!r} is not allowed in e-mail templates")
        if operator_ == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int) and \
                        len(sequence) * max(times, 0) > 10_000:
                    raise SecurityError("repeated text is too long")
        return self.binop_table[operator_](left, right)


def _replace(value, old, new, count=None) -> str:
    """`replace`, refusing a result longer than 100,000 characters (it could otherwise grow a mail without
    bound)."""
    text, old, new = str(value if value is not None else ""), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    limit = -1 if count is None else max(int(count), 0)
    if limit >= 0:
        hits = min(hits, limit)
    if len(text) + hits * len(new) > 100_000:
        raise SecurityError("replace makes the text too long")
    return text.replace(old, new, limit)


def _date(language: str, value, format: str | None = None) -> str:
    """A date in the recipient's language (`2026年3月5日` / `5 March 2026`), or by a strftime `format`."""
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value[:10])
        except ValueError:
            return value
    if not isinstance(value, dt.date):
        return ""
    if format:
        try:
            return value.strftime(str(format)[:50])
        except ValueError:
            return ""
    if language == "en":
        return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"
    return f"{value.year}年{value.month}月{value.day}日"


def _first_items(value):
    """What a `for` walks: at most MAX_LOOP_ITEMS items; nothing for a missing value."""
    if value is None or isinstance(value, ChainableUndefined):
        return []
    if isinstance(value, Mapping):
        return list(value)[:MAX_LOOP_ITEMS]
    try:
        return list(value[:MAX_LOOP_ITEMS]) if isinstance(value, str | list | tuple) else []
    except TypeError:
        return []


_TESTS = frozenset({"defined", "undefined", "none", "number", "string", "boolean", "integer", "float", "even",
                    "odd", "divisibleby", "eq", "ne", "lt", "le", "gt", "ge", "in", "true", "false", "lower",
                    "upper", "sequence", "mapping", "iterable", "equalto", "greaterthan", "lessthan", "==", "!=",
                    "<", "<=", ">", ">="})


@functools.cache
def _environment(language: str, *, html: bool) -> _Sandbox:
    """The sandbox for one language (the `date` filter's default form) and one kind of output: HTML is
    auto-escaped; subjects and text are not."""
    env = _Sandbox(autoescape=html, undefined=_Empty, finalize=_printable, cache_size=0)
    env.globals.clear()
    env.filters = {name: JINJA_FILTERS[name] for name in FILTERS if name in JINJA_FILTERS}
    env.filters.update(replace=_replace, date=functools.partial(_date, language), _bl_items=_first_items)
    env.tests = {name: test for name, test in env.tests.items() if name in _TESTS}
    return env


_SCALARS = (str, int, float, Decimal, dt.date)
_SIMPLE = frozenset({str, int, float, bool, Decimal, dt.date, dt.datetime})


def _printable(value):
    """What `{{ … }}` prints: text, numbers and dates as they are, a list as "a, b"; nothing for anything
    else (a missing value, a whole record, or an object that only a template stored past the checks could
    reach), so that no Python representation ever appears in a mail."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value if isinstance(item, _SCALARS))
    return ""


def _cap_loops(tree: nodes.Template) -> nodes.Template:
    """Make every `for` walk its items through `_bl_items` (at most MAX_LOOP_ITEMS)."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "_bl_items", [], [], None, None, lineno=loop.lineno)
    return tree


# -- preparing and rendering ---------------------------------------------------------------------------------

_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(rf"http://{_MARK_OPEN}(\d+){_MARK_CLOSE}")


def text_source(html_source: str) -> str | None:
    """The plain-text template made from an HTML template's source, so that each mail is rendered as text
    without parsing its HTML. Every Jinja tag is swapped for a marker that `html_to_text` keeps as text (an
    `http://` marker, so that a link whose address is a merge field keeps it), the HTML is turned into text,
    literal braces are quoted, and the tags are put back. Returns None when the result is not a valid
    template; mails then get `html_to_text` of their rendered HTML."""
    env = _environment("zh", html=False)
    tags: list[str] = []
    seen: dict[str, int] = {}
    pieces: list[str] = []
    current: list[str] | None = None
    in_comment = False
    try:
        for _line, kind, value in env.lexer.tokeniter(html_source, None):
            if kind in ("variable_begin", "block_begin"):
                current = [value]
            elif kind in ("variable_end", "block_end") and current is not None:
                current.append(value)
                tag = "".join(current)
                current = None
                index = seen.setdefault(tag, len(tags))
                if index == len(tags):
                    tags.append(tag)
                pieces.append(f"http://{_MARK_OPEN}{index}{_MARK_CLOSE}")
            elif current is not None:
                current.append(value)
            elif kind == "comment_begin":
                in_comment = True
            elif kind == "comment_end":
                in_comment = False
            elif kind == "data" and not in_comment:
                pieces.append(value.replace(_MARK_OPEN, "").replace(_MARK_CLOSE, ""))
    except TemplateSyntaxError:
        return None
    text = html_to_text("".join(pieces)).replace("{", "{{ '{' }}")
    text = _MARK.sub(lambda m: tags[int(m.group(1))], text)
    try:
        tree = env.parse(text)
    except TemplateSyntaxError:
        return None
    if _Checker(_Fields()).check(tree):
        return None
    return text


@dataclass(frozen=True)
class _Compiled:
    subject: JinjaTemplate
    html: JinjaTemplate
    text: JinjaTemplate | None


@functools.lru_cache(maxsize=128)
def _compile(language: str, subject: str, html: str) -> _Compiled:
    """The three compiled templates of one version; cached by their source, so an edited template (which
    changes the source) is compiled again and an unchanged one is compiled once per process."""
    text = text_source(html)
    return _Compiled(_build(language, "subject", subject, html=False), _build(language, "html", html, html=True),
                     _build(language, "html", text, html=False) if text is not None else None)


def _build(language: str, part: str, source: str, *, html: bool) -> JinjaTemplate:
    env = _environment(language, html=html)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError([_where(f"{part}_{language}", exc.lineno or 1, None,
                                    gettext("not a valid template: %(error)s", error=exc.message or ""))],
                            [f"{part}_{language}"]) from None
    findings = _Checker(_Fields()).check(tree)
    if findings:
        locate = _Locator(source)
        where = [_where(f"{part}_{language}", *locate(f), f.message) for f in findings]
        raise TemplateError(where[:MAX_PROBLEMS], [f"{part}_{language}"] * len(where[:MAX_PROBLEMS]))
    return env.from_string(_cap_loops(tree))


@dataclass(frozen=True)
class Prepared:
    """One version of a template, compiled and ready to be filled for many recipients."""

    template_id: int | None
    name: str
    language: str
    compiled: _Compiled

    def render(self, context: Mapping) -> tuple[str, str, str]:
        """(subject, html, text) for one recipient's context (see `lead_context`). The subject has no line
        breaks. Raises TemplateError when the template fails at run time (it never reaches Python objects;
        this happens e.g. for text repeated beyond the limits)."""
        compiled = self.compiled
        try:
            subject = compiled.subject.render(context)
            html = compiled.html.render(context)
            text = compiled.text.render(context) if compiled.text is not None else html_to_text(html)
        except Exception as exc:  # noqa: BLE001  (whatever a template raises stops this mail, not the run)
            raise TemplateError([gettext("The template %(name)s could not be filled in: %(error)s",
                                         name=self.name, error=f"{type(exc).__name__}: {exc}"[:300])]) from None
        subject = _SUBJECT_BREAKS.sub(" ", subject).strip()[:MAX_RENDERED_SUBJECT]
        if compiled.text is not None:
            text = _tidy(text)
        return subject, html, text


_BLANK_LINES = re.compile(r"[ \t]*\n(?:[ \t]*\n)+[ \t]*")
_LINE_ENDS = re.compile(r"[ \t]*\n[ \t]*")


def _tidy(text: str) -> str:
    """Lines trimmed and at most one blank line in a row, as `html_to_text` leaves its own output (the lines
    that held only a tag, like `{% endif %}`, come out empty)."""
    return _LINE_ENDS.sub("\n", _BLANK_LINES.sub("\n\n", text)).strip()


def complete_languages(template: EmailTemplate) -> list[str]:
    """The languages whose version has both a subject and a body."""
    return [language for language in ("zh", "en")
            if _text_of(template, f"subject_{language}") and _text_of(template, f"html_{language}")]


def pick_language(template: EmailTemplate, language: str | None) -> str:
    """The version for a recipient: English ones (`en`, `en-GB`…) get the English version when it is
    complete, everyone else the Chinese one; each falls back to the other. Raises TemplateError when neither
    is complete."""
    complete = complete_languages(template)
    if not complete:
        raise TemplateError([gettext("The template %(name)s has no complete version (subject and body).",
                                     name=template.name)])
    wanted = "en" if (language or "").strip().lower().startswith("en") else "zh"
    return wanted if wanted in complete else complete[0]


def prepare(template: EmailTemplate, language: str | None) -> Prepared:
    """The version of `template` for a recipient speaking `language`, compiled (once per process and source)
    and checked again, so that a template changed in the database without `validate` is refused here
    (TemplateError) rather than sent."""
    chosen = pick_language(template, language)
    compiled = _compile(chosen, _text_of(template, f"subject_{chosen}"), _text_of(template, f"html_{chosen}"))
    return Prepared(template.id, template.name, chosen, compiled)


# -- the data a template sees --------------------------------------------------------------------------------

def _plain(value, depth: int = 0):
    """A value a template may see: text, numbers, booleans, dates, and lists and dicts of them. Anything else
    becomes text, so that no Python object with methods reaches a template."""
    if value is None or isinstance(value, str | bool | int | float | Decimal | dt.date):
        return value
    if depth < 3 and isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in list(value)[:MAX_LOOP_ITEMS]]
    if depth < 3 and isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items() if not str(k).startswith("_")}
    return str(value)


def person_name(first: str | None, last: str | None) -> str:
    """A user's name as people write it: 张伟 (family name first, no space) for Chinese names, "Wei Zhang"
    for others."""
    first, last = (first or "").strip(), (last or "").strip()
    if _CJK.search(first) or _CJK.search(last):
        return f"{last}{first}"
    return " ".join(part for part in (first, last) if part)


def _today(zone: str | None) -> dt.date:
    try:
        return dt.datetime.now(ZoneInfo(zone)).date() if zone else dt.datetime.now(dt.UTC).date()
    except (ValueError, KeyError):
        return dt.datetime.now(dt.UTC).date()


def lead_context(lead: Mapping, owner: Mapping | None, *, unsubscribe_url: str = "",
                 sender: str = "") -> dict:
    """What a template sees, built from plain mappings (a database row's `_mapping` will do):

    `lead`: its fields (LEAD_FIELDS that are set) and `lead.custom.KEY`, each custom field also as `lead.KEY`
    unless a lead field has that name; `owner`: name, first_name, last_name, email, phone; `sender`: name and
    email of the From address ("Name <address>"); `unsubscribe_url`; `today`: the date in the lead's time
    zone. Empty values are left out, so that they print nothing and `default(…)` applies."""
    custom = _plain(lead.get("custom") or {})
    if not isinstance(custom, dict):
        custom = {}
    custom = {key: value for key, value in custom.items() if value is not None}
    values = {key: value for key, value in custom.items() if key not in _LEAD_FIELD_SET and key != "custom"}
    for name in LEAD_FIELDS:
        value = lead.get(name)
        if value is not None and value != "":
            values[name] = value if type(value) in _SIMPLE else _plain(value)
    values["custom"] = custom
    return {"lead": values, "owner": _owner(owner), "unsubscribe_url": unsubscribe_url or "",
            "sender": _sender(sender or ""), "today": _today(lead.get("timezone"))}


@functools.lru_cache(maxsize=32)
def _sender_fields(sender: str) -> tuple[tuple[str, str], ...]:
    """The name and address of a From value, parsed once per value (parsing costs more than a render)."""
    name, address = parseaddr(sender)
    return tuple((key, value) for key, value in (("name", name or address), ("email", address)) if value)


def _sender(sender: str) -> dict:
    return dict(_sender_fields(sender))


def _owner(owner: Mapping | None) -> dict:
    if not owner:
        return {}
    values = {name: _plain(owner.get(name)) for name in OWNER_FIELDS if owner.get(name) not in (None, "")}
    if owner.get("first_name") or owner.get("last_name"):
        values["name"] = person_name(owner.get("first_name"), owner.get("last_name"))
    return values


def lead_record(lead) -> dict:
    """A Lead (ORM object) as the plain mapping `lead_context` reads."""
    record = {name: getattr(lead, name, None) for name in LEAD_FIELDS}
    record["custom"] = dict(lead.custom or {})
    record["timezone"] = getattr(lead, "timezone", None)
    return record


def owner_record(user) -> dict | None:
    """A user (FAB User) as the plain mapping `lead_context` reads as the owner."""
    if user is None:
        return None
    return {"first_name": user.first_name, "last_name": user.last_name, "email": user.email,
            "phone": getattr(user, "phone", None)}


@dataclass(frozen=True)
class Rendered:
    """A template filled in for one lead, as the preview and the test mail show it."""

    subject: str
    html: str
    text: str
    language: str


def render_for_lead(session: Session, template: EmailTemplate, lead, *, language: str | None = None,
                    unsubscribe_url: str = "#") -> Rendered:
    """Fill `template` for `lead` (in `language`, by default the lead's), as the scheduler would: for the
    preview and the test mail. Raises TemplateError."""
    from flask import current_app
    from flask_appbuilder.security.sqla.models import User

    owner = session.get(User, lead.owner_id) if lead.owner_id else None
    prepared = prepare(template, language or lead.language)
    context = lead_context(lead_record(lead), owner_record(owner), unsubscribe_url=unsubscribe_url,
                           sender=current_app.config.get("BIGLEDGER_MAIL_FROM") or "")
    subject, html, text = prepared.render(context)
    return Rendered(subject, html, text, prepared.language)


__all__ = ["FILTERS", "LEAD_FIELDS", "MAX_BODY_CHARS", "MAX_SUBJECT_CHARS", "OWNER_FIELDS", "ROOTS", "Prepared",
           "Rendered", "TemplateError", "active_custom_keys", "complete_languages", "lead_context", "lead_record",
           "owner_record", "person_name", "pick_language", "prepare", "render_for_lead", "text_source", "validate"]
