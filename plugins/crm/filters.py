"""List and API filters on custom fields: `key=value` against the record's `custom` JSON, in SQL."""
from __future__ import annotations

from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.filters import SQLAFilterConverter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l
from sqlalchemy import String, cast, func, or_


def _split(value) -> tuple[str, str] | None:
    text = str(value or "")
    for sep in ("=", "＝", ":", "："):
        if sep in text:
            key, _, wanted = text.partition(sep)
            if key.strip():
                return key.strip(), wanted.strip()
    return None


class _CustomFilter(BaseFilter):
    def _value(self, key: str):
        return cast(self.model.custom[key].as_string(), String)

    def apply(self, query, value):
        parts = _split(value)
        if parts is None:
            return query.filter(False)  # "key=value" is the only form: anything else matches nothing
        return query.filter(self.condition(self._value(parts[0]), parts[1]))


class FilterCustomEqual(_CustomFilter):
    name = _l("Custom field is (key=value)")
    arg_name = "cf_eq"

    def condition(self, column, wanted):
        return column == wanted


class FilterCustomContains(_CustomFilter):
    name = _l("Custom field contains (key=value)")
    arg_name = "cf_ct"

    def condition(self, column, wanted):
        return func.lower(column).contains(wanted.lower(), autoescape=True)


class FilterCustomEmpty(_CustomFilter):
    name = _l("Custom field is empty (key=)")
    arg_name = "cf_empty"

    def condition(self, column, _wanted):
        return or_(column.is_(None), column == "", column == "[]")


class CrmFilterConverter(SQLAFilterConverter):
    conversion_table = (("is_custom_column", [FilterCustomEqual, FilterCustomContains, FilterCustomEmpty]),
                        *SQLAFilterConverter.conversion_table)


class CrmInterface(SQLAInterface):
    """FAB's interface, with the custom-field filters on the `custom` column."""

    filter_converter_class = CrmFilterConverter

    def is_custom_column(self, col_name: str) -> bool:
        return col_name == "custom"
