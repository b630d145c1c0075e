"""Phone numbers and e-mail addresses as every BigLedger module stores and compares them: E.164 and a
normalized address. Modules that match customers (the CRM, the POS bridge) agree on these forms."""
from __future__ import annotations

import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email


class InvalidValue(ValueError):
    """A phone number or e-mail address that cannot be used; the text says why."""


def parse_phone(raw: str, region: str = "CN") -> str:
    """E.164 form of a phone number written any way (`138 0013 8000`, `+86 138-0013-8000`)."""
    text = (raw or "").strip()
    if not text:
        raise InvalidValue("empty phone number")
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue(f"{text!r} is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidValue(f"{text!r} is not a possible phone number in {region.upper()}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_query(text: str, region: str = "CN") -> str | None:
    """E.164 for search input that looks like a phone number, else None."""
    digits = re.sub(r"[\s\-().]", "", text)
    if len(re.sub(r"\D", "", digits)) < 5 or not re.fullmatch(r"\+?\d+", digits):
        return None
    try:
        return parse_phone(text, region)
    except InvalidValue:
        return None


def normalize_email(raw: str) -> str:
    """The address as stored and compared (domain lower-cased, Unicode normalized)."""
    try:
        result = validate_email((raw or "").strip(), check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as exc:
        raise InvalidValue(f"{raw!r} is not an e-mail address ({exc})") from None
    local, _, domain = result.normalized.rpartition("@")
    return f"{local.lower()}@{domain.lower()}"
