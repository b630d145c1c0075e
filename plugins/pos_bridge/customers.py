"""How the bridge asks the POS for a customer's purchases and loyalty: the `pos_` module-service hooks.

A POS module registered by the deployment answers first; the bridge's own storage (`store.py`) answers with
`trylast=True` when none does. Only enabled modules (and plugins registered outside the module system) are
asked.
"""
from __future__ import annotations

import datetime as dt

from flask import g, has_request_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from bigledger_core.db import in_ids
from bigledger_core.modules import ask_service

from .models import LoyaltyCard

RECENT_DAYS = 90


class PosCustomer:
    """Who the POS is asked about: the CRM contacts (a company's people, or one contact) and what a POS knows
    them by: phones (E.164), e-mail addresses and loyalty card numbers. Those three are read (in one query)
    the first time a POS module asks for one of them: the bridge's own storage needs only the contact ids,
    and a company's people may be hundreds."""

    def __init__(self, contact_ids, name: str, phones=(), emails=(), cards=(), *, session: Session | None = None):
        self.contact_ids: tuple[int, ...] = tuple(contact_ids)
        self.name = name
        self._session = session
        self._known: dict[str, tuple[str, ...]] | None = None if session is not None else {
            "phone": tuple(phones), "email": tuple(emails), "card": tuple(cards)}

    def _identities(self) -> dict[str, tuple[str, ...]]:
        if self._known is None:
            self._known = _identities(self._session, self.contact_ids)
        return self._known

    @property
    def phones(self) -> tuple[str, ...]:
        return self._identities()["phone"]

    @property
    def emails(self) -> tuple[str, ...]:
        return self._identities()["email"]

    @property
    def cards(self) -> tuple[str, ...]:
        return self._identities()["card"]

    def _key(self) -> tuple:
        return self.contact_ids, self.name, self.phones, self.emails, self.cards

    def __eq__(self, other) -> bool:
        return isinstance(other, PosCustomer) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"PosCustomer(contact_ids={self.contact_ids!r}, name={self.name!r})"


def _identities(session: Session, ids: tuple[int, ...]) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {"phone": [], "email": [], "card": []}
    if ids:
        answer = ask("crm_customers", company_ids=[], contact_ids=list(ids), external_ids=[]) or {}
        people = answer.get("contacts", {})
        for contact_id in ids:
            person = people.get(contact_id) or {}
            found["phone"] += [p for p in person.get("phones", ()) if p not in found["phone"]]
            found["email"] += [e for e in person.get("emails", ()) if e not in found["email"]]
        for number in session.scalars(select(LoyaltyCard.number).where(in_ids(session, LoyaltyCard.contact_id, ids))
                                      .order_by(LoyaltyCard.id)):
            if number not in found["card"]:
                found["card"].append(number)
    return {kind: tuple(values) for kind, values in found.items()}


def pos_customer(session: Session, customer) -> PosCustomer:
    """The POS view of a CRM `CustomerRef` (kept for the rest of the request)."""
    key = ("pos_customer", customer.kind, customer.id)
    cache = g.setdefault("pos_bridge_customers", {}) if has_request_context() else {}
    if key not in cache:
        cache[key] = PosCustomer(customer.contact_ids, customer.name, session=session)
    return cache[key]


ask = ask_service  # `pos_*` hooks: the deployment's POS module first, else this bridge


def recent_since(now: dt.datetime) -> dt.datetime:
    """Where "recent" purchases begin: RECENT_DAYS before `now`."""
    return now - dt.timedelta(days=RECENT_DAYS)
