"""How the CRM compares people and companies: names (width, case, pinyin), phones (E.164), e-mails."""
from __future__ import annotations

import re
import unicodedata

from bigledger_core.normalize import (  # noqa: F401  (the CRM imports them from here)
    InvalidValue,
    normalize_email,
    parse_phone,
    phone_query,
)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_SPACES = re.compile(r"\s+")
_COMPOUND_SURNAMES = {
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "长孙", "宇文", "司徒",
    "夏侯", "轩辕", "端木", "独孤", "南宫", "西门", "百里", "呼延", "闻人", "澹台", "公冶", "钟离",
}


def normalize_name(value: str | None) -> str:
    """Full-width to half-width, case folded, spaces collapsed: how names are compared."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", value or "").casefold()).strip()


def has_chinese(value: str | None) -> bool:
    return bool(_CJK.search(value or ""))


def syllables(text: str) -> list[str]:
    """The pinyin syllables of `text`; characters without pinyin are dropped. pypinyin loads its phrase
    dictionary on import, so commands that never compare names skip it."""
    from pypinyin import lazy_pinyin

    return [s.strip() for s in lazy_pinyin(text, errors="ignore") if s.strip()]


def pinyin_forms(value: str | None) -> list[str]:
    """`张伟` → ["zhangwei", "zhang wei", "zw"]; nothing for a name without Chinese characters."""
    if not has_chinese(value):
        return []
    return list(_pinyin_forms(normalize_name(value)))


# Names repeat (an import of 100,000 people has a few thousand distinct names), so their forms are kept, up to
# _FORMS_KEPT names; the dictionary starts again when it is full.
_FORMS: dict[str, tuple[str, str, str]] = {}
_FORMS_KEPT = 50_000


def _pinyin_forms(name: str) -> tuple[str, str, str]:
    forms = _FORMS.get(name)
    if forms is None:
        spoken = syllables(name)  # pypinyin's first-letter style is each syllable's first letter
        forms = "".join(spoken), " ".join(spoken), "".join(s[:1] for s in spoken)
        if len(_FORMS) >= _FORMS_KEPT:
            _FORMS.clear()
        _FORMS[name] = forms
    return forms


def pinyin_of(names) -> dict[str, tuple[str, str, str]]:
    """The pinyin forms of the Chinese names among `names`, by normalized name: worked out where there is
    time (a process reading an import file) and handed to `learn_pinyin` where they will be needed."""
    found = {}
    for value in names:
        if value and has_chinese(value):
            name = normalize_name(value)
            found[name] = _pinyin_forms(name)
    return found


def learn_pinyin(forms: dict[str, tuple[str, str, str]]) -> None:
    """Keep forms from `pinyin_of`, so that `pinyin_forms` of those names needs no dictionary look-up."""
    if len(_FORMS) + len(forms) > _FORMS_KEPT:
        _FORMS.clear()
    _FORMS.update(forms)


def name_keys(value: str | None) -> tuple[str | None, str | None]:
    """A Chinese name's pinyin and initials as typed into the search box (`张伟` → "zhangwei", "zw"), which
    search matches exactly before anything else; (None, None) for a name without Chinese characters."""
    forms = pinyin_forms(value)
    return (forms[0], forms[2]) if forms else (None, None)


def search_text(*names: str | None) -> str:
    """What the search box matches for a record with these names: each name normalized, with pinyin."""
    parts: list[str] = []
    for name in names:
        if name and name.strip():
            parts.append(normalize_name(name))
            parts.extend(pinyin_forms(name))
    return " | ".join(dict.fromkeys(parts))


def split_chinese_name(full: str) -> tuple[str | None, str | None]:
    """(family, given) for a Chinese name of 2–4 characters (`欧阳娜娜` → 欧阳, 娜娜); else (None, None)."""
    name = full.strip()
    if not (2 <= len(name) <= 4) or not all(_CJK.match(c) for c in name):
        return None, None
    family = name[:2] if name[:2] in _COMPOUND_SURNAMES and len(name) > 2 else name[:1]
    return family, name[len(family):]


def display_name(family: str | None, given: str | None) -> str:
    """Chinese order without a space (张伟), Western order with one (Wei Zhang → given family)."""
    family, given = (family or "").strip(), (given or "").strip()
    if has_chinese(family) or has_chinese(given):
        return f"{family}{given}"
    return " ".join(part for part in (given, family) if part)


def address_hash(address: str) -> str:
    """SHA-256 (hex) of an e-mail address trimmed and in lower case: how the suppression list and consent
    records find a person, also after their address was erased."""
    import hashlib

    return hashlib.sha256((address or "").strip().lower().encode("utf-8")).hexdigest()
