"""Lists over large tables through FAB: a capped row count, and rison arguments validated without
re-checking their JSON schema on every request."""
from __future__ import annotations

import types

from flask import current_app
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import format_number
from flask_babel import lazy_gettext as _l
from markupsafe import escape


class CappedCount(int):
    """A list count that stopped at the cap: its value is the cap, and it reads "more than <cap>"."""

    def __str__(self) -> str:
        return str(_l("more than %(count)s", count=format_number(int(self))))

    def __html__(self) -> str:
        return str(escape(str(self)))


class CappedCountInterface(SQLAInterface):
    """FAB's data interface whose list count stops after `BIGLEDGER_LIST_COUNT_CAP` rows.

    FAB counts every row that matches a list's filters before it reads one page; on a large table that
    count costs more than the page. Past the cap the count is a `CappedCount` holding the cap (0 = no cap).
    """

    def query_count(self, query, filters=None, select_columns=None) -> int:
        inner = self._apply_inner_all(query, filters, select_columns=select_columns, aliases_mapping={})
        cap = int(current_app.config.get("BIGLEDGER_LIST_COUNT_CAP") or 0)
        if cap <= 0:
            return inner.count()
        count = inner.limit(cap + 1).count()
        return CappedCount(cap) if count > cap else count


class CappedCountApiMixin:
    """Mix into a ModelRestApi whose datamodel is a `CappedCountInterface`: the list answer says, in
    `count_capped`, whether `count` is the cap rather than the number of matching records."""

    def pre_get_list(self, data: dict) -> None:
        capped = isinstance(data.get("count"), CappedCount)
        data["count"], data["count_capped"] = int(data.get("count") or 0), capped
        super_pre_get_list = getattr(super(), "pre_get_list", None)
        if super_pre_get_list:
            super_pre_get_list(data)


def cache_rison_schema_validation() -> None:
    """FAB's `@rison` decorator validates arguments with `jsonschema.validate`, which first checks the schema
    itself against the JSON Schema meta-schema, on every request (milliseconds per list call). Validate
    with one validator per schema, built and checked once; the errors are the same."""
    import flask_appbuilder.api as fab_api
    import jsonschema

    if isinstance(fab_api.jsonschema, types.SimpleNamespace):
        return
    validators: dict[int, tuple] = {}

    def validate(instance, schema):
        found = validators.get(id(schema))
        if found is None or found[1] is not schema:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            found = validators[id(schema)] = (cls(schema), schema)  # the schema kept alive: its id stays its own
        error = jsonschema.exceptions.best_match(found[0].iter_errors(instance))
        if error is not None:
            raise error

    fab_api.jsonschema = types.SimpleNamespace(validate=validate, ValidationError=jsonschema.ValidationError)
