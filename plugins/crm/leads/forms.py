"""Web forms that capture leads, as plain logic: which fields a form may ask for, checking a form's definition,
reading a visitor's submission into lead values, cleaning text, and the signed, time-stamped form token.

No Flask or Flask-AppBuilder here (only flask_babel's gettext for messages); the screens and the public
page are in `form_views.py`.
"""
from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from itsdangerous import (
    BadSignature,
    SignatureExpired,
    TimestampSigner,
    URLSafeTimedSerializer,
)

CUSTOM = "custom:"
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
HONEYPOT = "url"  # a field people never see (hidden by CSS) and bots gladly fill in
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?")
TOKEN_SALT = "bigledger.crm.lead-form"
TEXT_LIMIT = 1000  # for hidden fields and custom text fields; lead fields have their own limits


@dataclass(frozen=True)
class LeadField:
    """A lead field a form can ask for: how it is entered and what it is called."""

    input: str  # text, email, tel, number, url or textarea
    label: Any


LEAD_FIELDS: dict[str, LeadField] = {
    "name": LeadField("text", _l("Your name")),
    "email": LeadField("email", _l("E-mail")),
    "phone": LeadField("tel", _l("Phone")),
    "company_name": LeadField("text", _l("Company")),
    "title": LeadField("text", _l("Job title")),
    "company_size": LeadField("number", _l("Company size")),
    "industry": LeadField("text", _l("Industry")),
    "website": LeadField("url", _l("Website")),
    "country": LeadField("text", _l("Country")),
    "city": LeadField("text", _l("City")),
    "address": LeadField("text", _l("Address")),
    "message": LeadField("textarea", _l("Your message")),
}
CUSTOM_INPUTS = {"text": "text", "number": "number", "date": "date", "select": "select",
                 "multiselect": "multiselect", "boolean": "checkbox"}


class FormDefinitionError(Exception):
    """A form definition an admin cannot save; `problems` says what to fix (translated)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class TokenError(Exception):
    """A form token that is refused: `reason` is `invalid`, `expired`, `too_fresh` or `replayed`."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# -- text ---------------------------------------------------------------------------------------------------

_CONTROL = {c for c in range(0x20) if c not in (0x09, 0x0A)} | {0x7F} | set(range(0x80, 0xA0))
_ONE_LINE = {**{c: None for c in _CONTROL}, 0x09: " ", 0x0A: " "}
_MULTILINE = {c: None for c in _CONTROL}


def plain_text(value: Any, *, multiline: bool = False, limit: int | None = None) -> str:
    """`value` as plain text: control characters removed (tabs and line breaks kept only in multi-line text),
    Unicode NFC, trimmed, and cut at `limit` characters. HTML is kept as text: it is escaped when shown."""
    text = unicodedata.normalize("NFC", str(value or "").replace("\r\n", "\n").replace("\r", "\n"))
    text = text.translate(_MULTILINE if multiline else _ONE_LINE).strip()
    return text[:limit] if limit is not None else text


def web_url(value: str | None) -> str | None:
    """An http(s) address with a host, or None (also for `javascript:` and other schemes)."""
    text = plain_text(value, limit=2000)
    if not text:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return text


# -- a form's definition ------------------------------------------------------------------------------------

@dataclass
class Choice:
    """A field an admin may put on a form: a lead field or a lead custom field."""

    key: str
    label: str
    label_en: str
    input: str
    custom: Any = None  # the CustomField for custom fields


def choices(custom_fields: list) -> list[Choice]:
    """Every field a form may ask for: the lead fields, then the active custom fields of leads."""
    from flask_babel import force_locale

    found = []
    for key, spec in LEAD_FIELDS.items():
        with force_locale("zh"):
            zh = str(spec.label)
        with force_locale("en"):
            en = str(spec.label)
        found.append(Choice(key, zh, en, spec.input))
    for item in custom_fields:
        found.append(Choice(CUSTOM + item.key, item.label, item.label_en or item.label,
                            CUSTOM_INPUTS.get(item.type, "text"), item))
    return found


def clean_definition(values: Mapping[str, Any], known_fields: set[str]) -> dict[str, Any]:
    """Check what an admin entered for a form and return the values to store on `LeadForm`.

    `values` holds name, slug, title(_en), fields (list of {field, required, label, label_en, position}),
    consent_required, consent_text(_en), thank_you(_en), redirect_url, team_id, channel, campaign and active;
    `known_fields` the field keys a form may use. Raises FormDefinitionError listing every problem."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key, limit in (("name", 200), ("title", 200), ("title_en", 200), ("channel", 100), ("campaign", 200)):
        out[key] = plain_text(values.get(key), limit=limit) or None
    for key in ("consent_text", "consent_text_en", "thank_you", "thank_you_en"):
        out[key] = plain_text(values.get(key), multiline=True, limit=5000) or None
    if not out["name"]:
        problems.append(gettext("Name: give the form a name."))
    slug = plain_text(values.get("slug")).lower()
    if not SLUG.fullmatch(slug):
        problems.append(gettext("Link name: use 1 to 100 lower-case letters, digits and hyphens, e.g. spring-expo."))
    out["slug"] = slug
    raw_redirect = plain_text(values.get("redirect_url"))
    out["redirect_url"] = web_url(raw_redirect) if raw_redirect else None
    if raw_redirect and out["redirect_url"] is None:
        problems.append(gettext("Redirect address: give an http:// or https:// address, or leave it empty to "
                                "show the thank-you message."))
    elif out["redirect_url"] and len(out["redirect_url"]) > 1000:
        problems.append(gettext("Redirect address: at most 1000 characters."))
    out["consent_required"] = bool(values.get("consent_required"))
    if out["consent_required"] and not (out["consent_text"] or out["consent_text_en"]):
        problems.append(gettext("Consent: write the consent text the visitor agrees to."))
    out["active"] = bool(values.get("active"))
    team = values.get("team_id")
    out["team_id"] = int(team) if str(team or "").isdigit() else None

    fields, seen = [], set()
    for spec in values.get("fields") or []:
        key = str(spec.get("field") or "")
        if key not in known_fields:
            problems.append(gettext("Fields: %(field)s is not a lead field or a custom field of leads.",
                                    field=key))
            continue
        if key in seen:
            continue
        seen.add(key)
        try:
            position = int(spec.get("position") or 0)
        except (TypeError, ValueError):
            position = 0
        fields.append({"field": key, "required": bool(spec.get("required")), "position": position,
                       "label": plain_text(spec.get("label"), limit=200) or None,
                       "label_en": plain_text(spec.get("label_en"), limit=200) or None})
    fields.sort(key=lambda f: f["position"])
    by_key = {f["field"]: f for f in fields}
    if not fields:
        problems.append(gettext("Fields: choose at least one field."))
    elif "name" in by_key:
        by_key["name"]["required"] = True  # a lead needs a name
    elif "email" in by_key:
        by_key["email"]["required"] = True  # the address then serves as the lead's name
    else:
        problems.append(gettext("Fields: the form must ask for the name or the e-mail address."))
    for position, spec in enumerate(fields):
        spec["position"] = position
    out["fields"] = fields
    if problems:
        raise FormDefinitionError(problems)
    return out


# -- a visitor's submission ---------------------------------------------------------------------------------

@dataclass
class Submission:
    """What a visitor sent, read into lead values (`lead`), custom field values (`custom`) and the consent;
    `problems` maps a field's input name to what is wrong with it (translated, naming the field)."""

    lead: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    consent: bool = False
    problems: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # as entered, to show the form again


def input_name(key: str) -> str:
    """The name of a field's input on the public form (`custom:budget` is `custom_budget`)."""
    return key.replace(CUSTOM, "custom_", 1)


def field_label(spec: dict, choice: Choice | None, language: str) -> str:
    """A form field's label in `language`: the form's own wording, else the field's name."""
    if language == "en":
        return spec.get("label_en") or spec.get("label") or (choice.label_en if choice else spec["field"])
    return spec.get("label") or spec.get("label_en") or (choice.label if choice else spec["field"])


def read_submission(specs: list[dict], data: Mapping[str, Any], choices_by_key: dict[str, Choice],
                    language: str, *, consent_required: bool, convert_custom) -> Submission:
    """Read the form's fields from `data` (a MultiDict or dict of str). Required fields, numbers and custom
    field types are checked here; lead values are checked again by `clean_lead` when the lead is created.
    `convert_custom(custom_field, raw)` converts a custom value or raises ValueError (translated)."""
    result = Submission()
    for spec in specs:
        key = spec["field"]
        choice = choices_by_key.get(key)
        if choice is None:  # a custom field switched off since the form was built
            continue
        name = input_name(key)
        label = field_label(spec, choice, language)
        if choice.input == "multiselect":
            getter = getattr(data, "getlist", None)
            raw = [plain_text(v, limit=TEXT_LIMIT) for v in (getter(name) if getter else data.get(name) or [])]
            raw = [v for v in raw if v]
            empty = not raw
        else:
            raw = plain_text(data.get(name), multiline=choice.input == "textarea", limit=10_000)
            empty = not raw
        result.values[name] = raw
        if empty:
            if spec.get("required"):
                result.problems[name] = gettext("%(field)s: please fill this in.", field=label)
            continue
        if choice.custom is not None:
            try:
                result.custom[choice.custom.key] = convert_custom(choice.custom, raw)
            except ValueError as exc:
                result.problems[name] = gettext("%(field)s: %(problem)s", field=label, problem=str(exc))
        elif choice.input == "number":
            try:
                result.lead[key] = int(str(raw).replace(",", "").strip())
            except ValueError:
                result.problems[name] = gettext("%(field)s: give a whole number.", field=label)
        else:
            result.lead[key] = raw
    result.consent = str(data.get("consent") or "") in ("1", "on", "yes", "true")
    result.values["consent"] = result.consent
    if consent_required and not result.consent:
        result.problems["consent"] = gettext("Consent: please tick the box to agree.")
    if "name" not in result.lead and result.lead.get("email"):
        result.lead["name"] = result.lead["email"]
    return result


def tracking(data: Mapping[str, Any]) -> dict[str, str | None]:
    """The UTM parameters and the referrer carried by the form's hidden fields, as plain text."""
    found: dict[str, str | None] = {key: plain_text(data.get(key), limit=200) or None for key in UTM_FIELDS}
    found["referrer"] = web_url(data.get("referrer"))
    if found["referrer"]:
        found["referrer"] = found["referrer"][:1000]
    return found


# -- the form token -----------------------------------------------------------------------------------------

class _Signer(TimestampSigner):
    """A timestamp signer whose time can be given (for tokens issued at a known moment)."""

    def __init__(self, *args, issued_at: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.issued_at = issued_at

    def get_timestamp(self) -> int:
        return int(self.issued_at) if self.issued_at is not None else super().get_timestamp()


def _serializer(secret: str, issued_at: float | None = None) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=TOKEN_SALT, signer=_Signer, signer_kwargs={"issued_at": issued_at})


def issue_token(secret: str, form_id: int, *, issued_at: float | None = None) -> str:
    """A token for one showing of form `form_id`: signed with the app's secret, time-stamped, with a random
    nonce that is recorded when the form is sent (so it is accepted once)."""
    return _serializer(secret, issued_at).dumps({"f": form_id, "n": secrets.token_urlsafe(24)})


def read_token(secret: str, token: str, form_id: int, *, min_age: float, max_age: float,
               now: float | None = None) -> str:
    """The nonce of a valid token for form `form_id`. Raises TokenError: `invalid` (not signed by us, or
    for another form), `expired` (older than `max_age` seconds) or `too_fresh` (younger than `min_age`)."""
    import time

    serializer = _serializer(secret)
    try:
        data, signed_at = serializer.loads(token or "", max_age=max_age, return_timestamp=True)
    except SignatureExpired:
        raise TokenError("expired") from None
    except BadSignature:
        raise TokenError("invalid") from None
    if not isinstance(data, dict) or data.get("f") != form_id or not isinstance(data.get("n"), str):
        raise TokenError("invalid")
    age = (now if now is not None else time.time()) - signed_at.timestamp()
    if age < min_age:
        raise TokenError("too_fresh")
    return data["n"][:64]
