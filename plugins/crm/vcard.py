"""vCard 3.0 for contacts: export for phones and mail programs, and import through the importer."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import vobject

from .models import Contact

# vCard TEL types ↔ our phone kinds, and the importer's column of each kind.
_TEL_TYPES = {"mobile": "CELL", "work": "WORK", "home": "HOME", "fax": "FAX", "other": "VOICE"}
_PHONE_COLUMNS = {"mobile": "mobile", "work": "work phone", "home": "home phone", "fax": "fax", "other": "phone"}
_EMAIL_TYPES = {"work": "WORK", "personal": "HOME", "other": "INTERNET"}


def _card_data(item: Any) -> dict[str, Any]:
    """The fields a card needs, from a Contact (relationships are read) or a dict of exporter.contact_rows."""
    if not isinstance(item, Contact):
        return item
    company = next((link for link in item.links if link.is_primary), item.links[0] if item.links else None)
    address = next((a for a in item.addresses if a.is_primary), item.addresses[0] if item.addresses else None)
    data = {key: getattr(item, key) for key in ("full_name", "family_name", "given_name", "title", "external_id")}
    data["company"] = company.company.name if company else None
    data["phones"] = [(p.kind, p.raw) for p in sorted(item.phones, key=lambda p: (not p.is_primary, p.id or 0))]
    data["emails"] = [(e.kind, e.address) for e in sorted(item.emails, key=lambda e: (not e.is_primary, e.id or 0))]
    if address is not None:
        data.update({key: getattr(address, key) for key in ("street", "district", "city", "province", "postcode",
                                                              "country")})
    return data


def contacts_to_vcard(contacts: Iterable[Any]) -> str:
    """vCard 3.0 text of the contacts: FN, N, ORG, TITLE, TEL and EMAIL with TYPE, ADR (no notes).

    Each item is a Contact or a dict from `exporter.contact_rows` (which loads details set-based).
    The UID is the contact's external id when it has one, so that a re-import updates the contact.
    """
    cards = []
    for item in contacts:
        data = _card_data(item)
        card = vobject.vCard()
        card.add("fn").value = data.get("full_name") or ""
        card.add("n").value = vobject.vcard.Name(family=data.get("family_name") or "",
                                                 given=data.get("given_name") or "")
        if data.get("company"):
            card.add("org").value = [data["company"]]
        if data.get("title"):
            card.add("title").value = data["title"]
        for kind, raw in data.get("phones") or []:
            tel = card.add("tel")
            tel.value = raw
            tel.params["TYPE"] = [_TEL_TYPES.get(kind, "VOICE")]
        for kind, address in data.get("emails") or []:
            email = card.add("email")
            email.value = address
            email.params["TYPE"] = ["INTERNET"] + ([_EMAIL_TYPES[kind]] if kind in ("work", "personal") else [])
        if any(data.get(key) for key in ("street", "district", "city", "province", "postcode", "country")):
            card.add("adr").value = vobject.vcard.Address(
                street=data.get("street") or "", extended=data.get("district") or "", city=data.get("city") or "",
                region=data.get("province") or "", code=data.get("postcode") or "", country=data.get("country") or "")
        if data.get("external_id"):
            card.add("uid").value = data["external_id"]
        cards.append(card.serialize())
    return "".join(cards)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value if v).strip()
    return str(value or "").strip()


def vcard_to_rows(text: str) -> list[dict[str, str]]:
    """One importer row per card, with English headers the importer recognises.

    Phones land in the column of their TYPE (CELL → mobile, WORK → work phone, HOME, FAX, other);
    several values in one column are separated by "; ". Raises ValueError for text that is not vCard.
    """
    rows = []
    try:
        cards = list(vobject.readComponents(text, ignoreUnreadable=True))
    except Exception as exc:  # vobject raises ParseError and assorted errors for malformed input
        raise ValueError(str(exc) or type(exc).__name__) from None
    for card in cards:
        if card.name.upper() != "VCARD":
            continue
        row: dict[str, str] = {}
        contents = card.contents
        if "fn" in contents:
            row["full name"] = _text(contents["fn"][0].value)
        if "n" in contents:
            name = contents["n"][0].value
            row["family name"] = _text(getattr(name, "family", ""))
            row["given name"] = _text(getattr(name, "given", ""))
        if "org" in contents:
            org = contents["org"][0].value
            row["company"] = _text(org[0] if isinstance(org, list) and org else org)
        if "title" in contents:
            row["title"] = _text(contents["title"][0].value)
        phones: dict[str, list[str]] = {}
        for tel in contents.get("tel", []):
            types = {t.upper() for value in tel.params.get("TYPE", []) for t in value.split(",")}
            kind = next((k for k, t in _TEL_TYPES.items() if t in types and k != "other"), "other")
            phones.setdefault(_PHONE_COLUMNS[kind], []).append(_text(tel.value))
        for column, numbers in phones.items():
            row[column] = "; ".join(n for n in numbers if n)
        emails: dict[str, list[str]] = {}
        for email in contents.get("email", []):
            types = {t.upper() for value in email.params.get("TYPE", []) for t in value.split(",")}
            column = "personal email" if "HOME" in types else "email"
            emails.setdefault(column, []).append(_text(email.value))
        for column, addresses in emails.items():
            row[column] = "; ".join(a for a in addresses if a)
        if "adr" in contents:
            adr = contents["adr"][0].value
            row.update({"address": _text(adr.street), "district": _text(adr.extended), "city": _text(adr.city),
                        "province": _text(adr.region), "postcode": _text(adr.code), "country": _text(adr.country)})
        if "uid" in contents:
            row["external id"] = _text(contents["uid"][0].value)
        rows.append(row)
    return rows
