"""Bilingual labels stored in data (choices of custom fields, roles): the one for the user's language."""
from __future__ import annotations

from bigledger_core.i18n import current_locale


def option_label(option: dict) -> str:
    """`{"value": "a", "label": "甲", "label_en": "A"}` → "A" in English, "甲" otherwise."""
    if current_locale() == "en" and option.get("label_en"):
        return str(option["label_en"])
    return str(option.get("label") or option.get("value"))
