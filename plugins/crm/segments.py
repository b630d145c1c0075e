"""Segments: saved filters over contacts or companies, validated when saved and evaluated in SQL.

A definition is `{"match": "all" | "any", "rules": [{"field": …, "op": …, "value": …}, …]}`; hand-written
definitions may use Chinese keys (匹配 with 全部/任一, 条件, 字段, 运算, 值). A rule's field is a standard
field of the record, `tag`, `custom:<key>`, `last_activity`, or a condition another module contributes
through `crm_segment_conditions` (e.g. purchases from the POS). Dates without a time are UTC days.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from flask_babel import gettext
from sqlalchemy import and_, case, func, literal, not_, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from bigledger_core.db import utcnow
from bigledger_core.security import visibility_clause

from .models import (
    COMPANY_STATUSES,
    Activity,
    Address,
    Company,
    Contact,
    ContactCompany,
    CustomField,
    Email,
    Segment,
    Tag,
    company_tag,
    contact_tag,
)
from .services import CrmValidationError, Problem

ENTITIES: dict[str, type] = {"contact": Contact, "company": Company}
MAX_RULES = 50
MAX_LIST = 500
MAX_DAYS = 36500

KEY_SYNONYMS = {"匹配": "match", "条件": "rules", "字段": "field", "运算": "op", "值": "value"}
MATCH_SYNONYMS = {"all": "all", "any": "any", "全部": "all", "任一": "any"}

TEXT_OPS = ("eq", "ne", "contains", "starts_with", "in", "empty", "not_empty")
NUMBER_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "empty", "not_empty")
REF_OPS = ("eq", "ne", "in", "empty", "not_empty")
TIME_OPS = ("eq", "ne", "gt", "gte", "lt", "lte")
CHOICE_OPS = ("eq", "ne", "in")
DOMAIN_OPS = ("eq", "ne", "contains", "in", "empty", "not_empty")
TAG_OPS = ("has", "has_not")
ACTIVITY_OPS = ("within_days", "not_within_days")
CUSTOM_OPS = {
    "text": ("eq", "ne", "contains", "empty", "not_empty"),
    "number": ("eq", "ne", "gt", "gte", "lt", "lte"),
    "date": ("before", "after", "on"),
    "select": ("eq", "ne", "in"),
    "multiselect": ("contains",),
    "boolean": ("is_true", "is_false"),
}
NO_VALUE_OPS = {"empty", "not_empty", "is_true", "is_false"}


@dataclass(frozen=True)
class _Standard:
    """A standard field: how its values are checked and which SQL it becomes."""

    kind: str  # text, number, ref, time, choice, related, domain
    ops: tuple[str, ...]
    column: str | None = None
    related: str | None = None  # company, address, email
    choices: tuple[str, ...] = ()


STANDARD_FIELDS: dict[str, dict[str, _Standard]] = {
    "contact": {
        "full_name": _Standard("text", TEXT_OPS, "full_name"),
        "title": _Standard("text", TEXT_OPS, "title"),
        "name_en": _Standard("text", TEXT_OPS, "name_en"),
        "owner_id": _Standard("ref", REF_OPS, "owner_id"),
        "team_id": _Standard("ref", REF_OPS, "team_id"),
        "created_at": _Standard("time", TIME_OPS, "created_at"),
        "company": _Standard("related", TEXT_OPS, "name", related="company"),
        "city": _Standard("related", TEXT_OPS, "city", related="address"),
        "province": _Standard("related", TEXT_OPS, "province", related="address"),
        "email_domain": _Standard("domain", DOMAIN_OPS, related="email"),
    },
    "company": {
        "name": _Standard("text", TEXT_OPS, "name"),
        "industry": _Standard("text", TEXT_OPS, "industry"),
        "region": _Standard("text", TEXT_OPS, "region"),
        "status": _Standard("choice", CHOICE_OPS, "status", choices=COMPANY_STATUSES),
        "employees": _Standard("number", NUMBER_OPS, "employees"),
        "owner_id": _Standard("ref", REF_OPS, "owner_id"),
        "team_id": _Standard("ref", REF_OPS, "team_id"),
        "created_at": _Standard("time", TIME_OPS, "created_at"),
        "parent_id": _Standard("ref", REF_OPS, "parent_id"),
        "city": _Standard("related", TEXT_OPS, "city", related="address"),
        "province": _Standard("related", TEXT_OPS, "province", related="address"),
    },
}


class _BadValue(ValueError):
    """A rule's value is refused; the message is translated."""


# -- validation ----------------------------------------------------------------------------------------

def validate_definition(session: Session, entity: str, definition: Any) -> dict:
    """The definition with English keys and cleaned values, or CrmValidationError naming each bad rule."""
    return _normalize(session, entity, definition, strict=True, fields=None)


def _custom_fields(session: Session, entity: str) -> dict[str, CustomField]:
    # Inactive fields keep their values on the records, so segments may still use them.
    return {f.key: f for f in session.scalars(select(CustomField).where(CustomField.entity == entity))}


def contributed_conditions(entity: str) -> dict[str, dict]:
    """Conditions of `entity` that enabled modules contribute (`crm_segment_conditions`), by field name."""
    if not has_app_context():
        return {}
    from bigledger_core.modules import enabled_modules

    host = current_app.extensions["bigledger"]
    return {condition["field"]: condition
            for _plugin, answer in host.call_each("crm_segment_conditions", modules=enabled_modules())
            for condition in answer or [] if condition.get("entity", "contact") == entity}


def field_reference(session: Session, entity: str) -> list[dict[str, Any]]:
    """Every field a segment of `entity` may use, in the order the segment screen lists them: dicts with `field`
    (as written in a rule), `ops`, `source` ("crm", "custom" or the contributing module) and, for custom and
    contributed fields, `label` ({"zh", "en"})."""
    fields: list[dict[str, Any]] = [{"field": name, "ops": list(spec.ops), "source": "crm", "label": None}
                                    for name, spec in STANDARD_FIELDS[entity].items()]
    fields += [{"field": "tag", "ops": list(TAG_OPS), "source": "crm", "label": None},
               {"field": "last_activity", "ops": list(ACTIVITY_OPS), "source": "crm", "label": None}]
    fields += [{"field": f"custom:{field.key}", "ops": list(CUSTOM_OPS.get(field.type, ())), "source": "custom",
                "label": {"zh": field.label, "en": field.label_en or field.label}}
               for field in sorted(_custom_fields(session, entity).values(), key=lambda f: f.key)]
    if has_app_context():
        from bigledger_core.modules import enabled_modules

        host = current_app.extensions["bigledger"]
        for plugin, answer in host.call_each("crm_segment_conditions", modules=enabled_modules()):
            fields += [{"field": c["field"], "ops": list(c["ops"]), "source": plugin, "label": dict(c["label"])}
                       for c in answer or [] if c.get("entity", "contact") == entity]
    return fields


def _contributed_value(condition: dict, op: str, value: Any) -> Any:
    try:
        return condition["check"](op, value)
    except ValueError as exc:
        raise _BadValue(str(exc)) from None


def _english(mapping: dict) -> dict:
    return {KEY_SYNONYMS.get(key, key): value for key, value in mapping.items()}


def _normalize(session: Session, entity: str, definition: Any, *, strict: bool,
               fields: dict[str, CustomField] | None) -> dict:
    if entity not in ENTITIES:
        raise CrmValidationError([Problem("entity", gettext("must be contact or company"))])
    if not isinstance(definition, dict):
        raise CrmValidationError([Problem("definition", gettext(
            'must be an object such as {"match": "all", "rules": [...]}'))])
    top = _english(definition)
    problems: list[Problem] = []
    for key in top:
        if key not in ("match", "rules"):
            problems.append(Problem(str(key), gettext("unknown key (use match and rules)")))
    raw_match = top.get("match", "all")
    match = MATCH_SYNONYMS.get(raw_match) if isinstance(raw_match, str) else None
    if match is None:
        problems.append(Problem("match", gettext("must be all or any (全部 or 任一)")))
    rules = top.get("rules")
    if not isinstance(rules, list) or not rules:
        problems.append(Problem("rules", gettext("give a list of at least one rule")))
        raise CrmValidationError(problems)
    if len(rules) > MAX_RULES:
        problems.append(Problem("rules", gettext("at most %(count)s rules", count=MAX_RULES)))
        raise CrmValidationError(problems)
    if fields is None:
        fields = _custom_fields(session, entity) if any(_is_custom(r) for r in rules) else {}
    tags = _known_tags(session, rules) if strict else None
    cleaned = []
    for position, rule in enumerate(rules):
        where = f"rules[{position}]"
        try:
            cleaned.append(_clean_rule(entity, rule, fields, tags, where))
        except CrmValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CrmValidationError(problems)
    return {"match": match, "rules": cleaned}


def _is_custom(rule: Any) -> bool:
    return isinstance(rule, dict) and str(_english(rule).get("field", "")).startswith("custom:")


def _known_tags(session: Session, rules: list) -> set[str]:
    names = {str(_english(r).get("value")) for r in rules
             if isinstance(r, dict) and _english(r).get("field") == "tag"}
    if not names:
        return set()
    return set(session.scalars(select(Tag.name).where(Tag.name.in_(names))))


def _clean_rule(entity: str, rule: Any, fields: dict[str, CustomField], tags: set[str] | None,
                where: str) -> dict:
    if not isinstance(rule, dict):
        raise CrmValidationError([Problem(where, gettext('must be an object such as '
                                                         '{"field": "title", "op": "eq", "value": "经理"}'))])
    rule = _english(rule)
    unknown = [str(key) for key in rule if key not in ("field", "op", "value")]
    if unknown:
        raise CrmValidationError([Problem(f"{where}.{key}", gettext("unknown key (use field, op and value)"))
                                  for key in unknown])
    name = rule.get("field")
    op = rule.get("op")
    value = rule.get("value")
    if not isinstance(name, str) or not name:
        raise CrmValidationError([Problem(f"{where}.field", gettext("give a field"))])
    ops, check = _field_rules(entity, name, fields, tags, where)
    if op not in ops:
        raise CrmValidationError([Problem(f"{where}.op", gettext(
            "%(op)s is not an operator of %(field)s (use %(ops)s)", op=op, field=name, ops=", ".join(ops)))])
    if op in NO_VALUE_OPS:
        return {"field": name, "op": op}
    try:
        return {"field": name, "op": op, "value": check(op, value)}
    except _BadValue as exc:
        raise CrmValidationError([Problem(f"{where}.value", str(exc))]) from None


def _field_rules(entity: str, name: str, fields: dict[str, CustomField], tags: set[str] | None,
                 where: str) -> tuple[tuple[str, ...], Callable[[str, Any], Any]]:
    """The operators a field takes and the function that checks and cleans its value."""
    if name == "tag":
        return TAG_OPS, lambda _op, value: _tag_value(value, tags)
    if name == "last_activity":
        return ACTIVITY_OPS, lambda _op, value: _days(value)
    if name.startswith("custom:"):
        field = fields.get(name.removeprefix("custom:"))
        if field is None:
            raise CrmValidationError([Problem(f"{where}.field", gettext(
                "%(field)s: unknown custom field", field=name))])
        return CUSTOM_OPS.get(field.type, ()), lambda op, value: _custom_value(field, op, value)
    spec = STANDARD_FIELDS[entity].get(name)
    contributed = contributed_conditions(entity).get(name) if spec is None else None
    if contributed is not None:
        return tuple(contributed["ops"]), lambda op, value: _contributed_value(contributed, op, value)
    if spec is None:
        raise CrmValidationError([Problem(f"{where}.field", gettext(
            "%(field)s is not a field of this record type", field=name))])
    return spec.ops, lambda op, value: _standard_value(spec, op, value)


def _many(op: str, value: Any, one: Callable[[Any], Any]) -> Any:
    if op != "in":
        return one(value)
    if isinstance(value, str):
        value = [part for part in re.split(r"[,，;；]", value) if part.strip()]
    if not isinstance(value, list) or not value:
        raise _BadValue(gettext("give a list of values"))
    if len(value) > MAX_LIST:
        raise _BadValue(gettext("at most %(count)s values", count=MAX_LIST))
    return [one(item) for item in value]


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _BadValue(gettext("give some text"))
    return value.strip()


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise _BadValue(gettext("%(value)s is not a number", value=value))
    if isinstance(value, (int, float)):
        return value
    try:
        number = float(str(value).replace(",", "").strip())
    except ValueError:
        raise _BadValue(gettext("%(value)s is not a number", value=value)) from None
    return int(number) if number.is_integer() else number


def _ref(value: Any) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise _BadValue(gettext("%(value)s is not an id", value=value))
    number = int(value)
    if number < 1:
        raise _BadValue(gettext("%(value)s is not an id", value=value))
    return number


def _days(value: Any) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())) \
            or not 1 <= int(value) <= MAX_DAYS:
        raise _BadValue(gettext("give a whole number of days from 1 to %(max)s", max=MAX_DAYS))
    return int(value)


def _date(value: Any) -> str:
    found = re.fullmatch(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})", value.strip()) if isinstance(value, str) else None
    try:
        if found is None:
            raise ValueError(value)
        return dt.date(*(int(part) for part in found.groups())).isoformat()
    except ValueError:
        raise _BadValue(gettext("%(value)s is not a date (YYYY-MM-DD)", value=value)) from None


def _moment(value: Any) -> str:
    """A date (`YYYY-MM-DD`, a whole UTC day) or a date and time (ISO 8601, UTC unless it says otherwise)."""
    text = str(value).strip().replace("/", "-") if isinstance(value, str) else ""
    if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", text):
        return _date(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _BadValue(gettext("%(value)s is not a date (YYYY-MM-DD) or a date and time", value=value)) from None
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return moment.isoformat()


def _choice(value: Any, choices: Iterable[str]) -> str:
    text = _text(str(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else _text(value)
    allowed = list(choices)
    if text not in allowed:
        raise _BadValue(gettext("%(value)s is not one of the choices (%(choices)s)", value=text,
                                choices=", ".join(allowed)))
    return text


def _tag_value(value: Any, tags: set[str] | None) -> str:
    name = _text(value)
    if tags is not None and name not in tags:
        raise _BadValue(gettext("there is no tag named %(name)s", name=name))
    return name


def _standard_value(spec: _Standard, op: str, value: Any) -> Any:
    if spec.kind in ("text", "related"):
        return _many(op, value, _text)
    if spec.kind == "domain":
        return _many(op, value, lambda v: _text(v).lower().lstrip("@"))
    if spec.kind == "number":
        return _many(op, value, _number)
    if spec.kind == "ref":
        return _many(op, value, _ref)
    if spec.kind == "time":
        return _moment(value)
    if spec.kind == "choice":
        return _many(op, value, lambda v: _choice(v, spec.choices))
    raise AssertionError(spec.kind)


def _options(field: CustomField) -> list[str]:
    return [str(option.get("value")) for option in field.options or [] if isinstance(option, dict)]


def _custom_value(field: CustomField, op: str, value: Any) -> Any:
    if field.type == "text":
        return _text(value)
    if field.type == "number":
        return _number(value)
    if field.type == "date":
        return _date(value)
    if field.type == "select":
        return _many(op, value, lambda v: _choice(v, _options(field)))
    if field.type == "multiselect":
        items = value if isinstance(value, list) else [value]
        if not items:
            raise _BadValue(gettext("give at least one choice"))
        return [_choice(item, _options(field)) for item in items]
    raise _BadValue(gettext("this field takes no value"))


# -- SQL -----------------------------------------------------------------------------------------------

def segment_clause(session: Session, entity: str, definition: Any, *,
                   fields: dict[str, CustomField] | None = None) -> ColumnElement[bool]:
    """The definition as a condition on Contact or Company (raises CrmValidationError if it is broken).

    A tag deleted since the segment was saved matches no record.
    """
    normalized = _normalize(session, entity, definition, strict=False, fields=fields)
    if fields is None:
        fields = _custom_fields(session, entity) if any(_is_custom(r) for r in normalized["rules"]) else {}
    builder = _Builder(ENTITIES[entity], entity, fields, session.get_bind().dialect.name)
    parts = [builder.rule(rule) for rule in normalized["rules"]]
    return and_(*parts) if normalized["match"] == "all" else or_(*parts)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filled(column) -> ColumnElement[bool]:
    return and_(column.is_not(None), column != "")


def _day(text: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


class _Builder:
    """Turns normalized rules into SQL on one model."""

    def __init__(self, model, entity: str, fields: dict[str, CustomField], dialect: str):
        self.model, self.entity, self.fields, self.dialect = model, entity, fields, dialect

    def rule(self, rule: dict) -> ColumnElement[bool]:
        name, op, value = rule["field"], rule["op"], rule.get("value")
        if name == "tag":
            return self._tag(op, value)
        if name == "last_activity":
            return self._activity(op, value)
        if name.startswith("custom:"):
            return self._custom(self.fields[name.removeprefix("custom:")], op, value)
        spec = STANDARD_FIELDS[self.entity].get(name)
        if spec is None:  # validated above: a condition another module contributes
            return contributed_conditions(self.entity)[name]["clause"](op, value, self.model.id)
        if spec.kind in ("related", "domain"):
            return self._related(spec, op, value)
        column = getattr(self.model, spec.column)
        if spec.kind == "time":
            return self._time(column, op, value)
        return self._column(column, spec.kind, op, value)

    # standard columns

    @staticmethod
    def _match(column, op: str, value: Any) -> ColumnElement[bool]:
        """The positive operators, shared by columns and related records."""
        if op == "eq":
            return column == value
        if op == "in":
            return column.in_(value)
        if op == "contains":
            return column.ilike(f"%{_escape(value)}%", escape="\\")
        if op == "starts_with":
            return column.ilike(f"{_escape(value)}%", escape="\\")
        return {"gt": column > value, "gte": column >= value, "lt": column < value, "lte": column <= value}[op]

    def _column(self, column, kind: str, op: str, value: Any) -> ColumnElement[bool]:
        text = kind == "text"
        if op == "ne":  # records without a value are "not X" too
            return or_(column.is_(None), column != value)
        if op == "empty":
            return or_(column.is_(None), column == "") if text else column.is_(None)
        if op == "not_empty":
            return _filled(column) if text else column.is_not(None)
        return self._match(column, op, value)

    def _time(self, column, op: str, value: str) -> ColumnElement[bool]:
        if "T" in value:
            moment = dt.datetime.fromisoformat(value)
            return {"eq": column == moment, "ne": column != moment, "gt": column > moment,
                    "gte": column >= moment, "lt": column < moment, "lte": column <= moment}[op]
        start, end = _day(value)
        return {"eq": and_(column >= start, column < end), "ne": or_(column < start, column >= end),
                "gt": column >= end, "gte": column >= start, "lt": column < start, "lte": column < end}[op]

    # related records: linked companies, addresses, e-mails

    def _related(self, spec: _Standard, op: str, value: Any) -> ColumnElement[bool]:
        model = self.model
        if spec.related == "company":
            column = Company.name

            def exists(condition):
                return select(literal(1)).select_from(ContactCompany).join(
                    Company, Company.id == ContactCompany.company_id).where(
                    ContactCompany.contact_id == model.id, Company.merged_into_id.is_(None), condition).exists()
        else:
            detail = Address if spec.related == "address" else Email
            owner = detail.contact_id if model is Contact else detail.company_id
            column = getattr(detail, spec.column) if spec.column else detail.address

            def exists(condition):
                return select(literal(1)).select_from(detail).where(owner == model.id, condition).exists()

        if spec.kind == "domain":
            def domain(text: str, op: str = "eq") -> ColumnElement[bool]:
                pattern = f"%@%{_escape(text)}%" if op == "contains" else f"%@{_escape(text)}"
                return column.like(pattern, escape="\\")

            if op == "in":
                return exists(or_(*[domain(v) for v in value]))
            if op in ("eq", "contains"):
                return exists(domain(value, op))
            if op == "ne":
                return ~exists(domain(value))
        else:
            if op == "ne":
                return ~exists(column == value)
            if op not in ("empty", "not_empty"):
                return exists(self._match(column, op, value))
        filled = exists(_filled(column))
        return filled if op == "not_empty" else ~filled

    def _tag(self, op: str, name: str) -> ColumnElement[bool]:
        link = contact_tag if self.model is Contact else company_tag
        owner = link.c.contact_id if self.model is Contact else link.c.company_id
        has = select(literal(1)).select_from(link).join(Tag, Tag.id == link.c.tag_id).where(
            owner == self.model.id, Tag.name == name).exists()
        return has if op == "has" else ~has

    def _activity(self, op: str, days: int) -> ColumnElement[bool]:
        owner = Activity.contact_id if self.model is Contact else Activity.company_id
        since = utcnow() - dt.timedelta(days=days)
        recent = select(literal(1)).select_from(Activity).where(
            owner == self.model.id, Activity.occurred_at >= since).exists()
        return recent if op == "within_days" else ~recent

    # custom fields (JSON)

    def _custom(self, field: CustomField, op: str, value: Any) -> ColumnElement[bool]:
        custom = self.model.custom
        key = field.key
        if field.type == "number":
            number = case((self._json_is_number(key), custom[key].as_float()), else_=None)
            if op == "ne":
                return or_(number.is_(None), number != value)
            return self._match(number, op, value)
        if field.type == "multiselect":
            return self._json_has_all(key, value)
        if field.type == "boolean":
            is_true = self._json_is_true(key)
            return is_true if op == "is_true" else not_(is_true)
        text = custom[key].as_string()
        if field.type == "date":
            return {"before": text < value, "after": text > value, "on": text == value}[op]
        return self._column(text, "text", op, value)

    def _path(self, key: str) -> str:
        return f'$."{key}"'

    def _json_is_number(self, key: str) -> ColumnElement[bool]:
        custom = self.model.custom
        if self.dialect == "postgresql":
            return func.jsonb_typeof(custom[key]) == "number"
        return func.json_type(custom, self._path(key)).in_(("integer", "real"))

    def _json_is_true(self, key: str) -> ColumnElement[bool]:
        custom = self.model.custom
        if self.dialect == "postgresql":
            return type_coerce(custom, JSONB).contains({key: True})
        return func.coalesce(func.json_type(custom, self._path(key)), "") == "true"

    def _json_has_all(self, key: str, values: Sequence[str]) -> ColumnElement[bool]:
        custom = self.model.custom
        if self.dialect == "postgresql":
            return type_coerce(custom, JSONB).contains({key: list(values)})
        items = func.json_each(custom, self._path(key)).table_valued("value")
        return and_(*[select(literal(1)).select_from(items).where(items.c.value == v).exists() for v in values])


# -- members -------------------------------------------------------------------------------------------

def _conditions(session: Session, segment: Segment, visibility, fields=None) -> list:
    """Not merged, visible to the user (`visibility` from `visibility_clause`) and in the segment."""
    model = _model(segment)
    conditions = [model.merged_into_id.is_(None),
                  segment_clause(session, segment.entity, segment.definition or {}, fields=fields)]
    if visibility is not None:
        conditions.append(visibility)
    return conditions


def _model(segment: Segment):
    model = ENTITIES.get(segment.entity)
    if model is None:
        raise CrmValidationError([Problem("entity", gettext("must be contact or company"))])
    return model


def member_count(session: Session, segment: Segment, user) -> int:
    """How many records of the segment `user` may see (merged records never count)."""
    model = _model(segment)
    conditions = _conditions(session, segment, visibility_clause(model, user, session))
    return session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0


def members(session: Session, segment: Segment, user, page: int = 1, per_page: int = 50) -> list:
    """One page of the segment's records that `user` may see, ordered by name."""
    model = _model(segment)
    conditions = _conditions(session, segment, visibility_clause(model, user, session))
    page, per_page = max(page, 1), min(max(per_page, 1), 500)
    name = model.full_name if model is Contact else model.name
    query = select(model).where(*conditions).order_by(name, model.id).offset((page - 1) * per_page).limit(per_page)
    return list(session.scalars(query))


def member_ids(session: Session, segment: Segment, user):
    """A SELECT of the ids of every record of the segment that `user` may see, in the members page's order
    (name, then id): what its export reads."""
    model = _model(segment)
    conditions = _conditions(session, segment, visibility_clause(model, user, session))
    name = model.full_name if model is Contact else model.name
    return select(model.id).where(*conditions).order_by(name, model.id)


def member_counts(session: Session, segments: Sequence[Segment], user) -> dict[int, int | None]:
    """Counts of several segments in one query; None for a segment whose definition is broken."""
    counts: dict[int, int | None] = {}
    columns = []
    context: dict[str, tuple[dict[str, CustomField], Any]] = {}
    for segment in segments:
        model = ENTITIES.get(segment.entity)
        if model is None:
            counts[segment.id] = None
            continue
        if segment.entity not in context:
            context[segment.entity] = (_custom_fields(session, segment.entity),
                                       visibility_clause(model, user, session))
        fields, visibility = context[segment.entity]
        try:
            conditions = _conditions(session, segment, visibility, fields)
        except CrmValidationError:
            counts[segment.id] = None
            continue
        columns.append(select(func.count()).select_from(model).where(*conditions)
                       .scalar_subquery().label(f"s{segment.id}"))
    if columns:
        row = session.execute(select(*columns)).one()
        for column, value in zip(columns, row, strict=True):
            counts[int(column.name[1:])] = value
    return counts


def definition_problems(session: Session, segment: Segment) -> list[Problem]:
    """What is wrong with a saved segment's definition now (empty when it can be evaluated)."""
    try:
        _conditions(session, segment, None)
    except CrmValidationError as exc:
        return exc.problems
    return []
