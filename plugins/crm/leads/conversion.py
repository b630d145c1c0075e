"""Converting a qualified lead into a company, a contact and a deal (and undoing it).

`convert_lead` and `undo_conversion` are the commands; the confirmation screen (`/crm/lead-convert/<id>`)
and the REST API (`POST /api/v1/crm/lead/<id>/convert`, `…/undo-convert`) call them and nothing else.

Which lead may be converted: a qualified one; an open one (new, working, nurturing) only when the user
says so explicitly (`unqualified_ok=True`: the screen's check box, the API's `"unqualified_ok": true`).
Converted and disqualified leads are refused.

Company and contact: the ones given, else the one existing record that duplicate detection finds with
confidence (the contact: the same normalized e-mail address or E.164 phone; the company: the same normalized
name, or the linked contact's primary company when the lead names none), else new ones made from the lead.
Two or more candidates are not guessed between: a new record is created unless the user picks one.

`lead.conversion` records what was created and what was linked, so `undo_conversion` deletes only what the
conversion created, and only while the deal is untouched.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_appbuilder.api import BaseApi, protect, safe
from flask_babel import gettext
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from bigledger_core.db import db, utcnow
from bigledger_core.events import emit
from bigledger_core.security import visible_record

from ..models import Activity, Address, Company, Contact, ContactCompany, Email, Phone
from ..normalize import normalize_name
from ..pipeline.models import Deal, DealLine
from ..pipeline.services import (
    StageChangeRefused,
    create_deal,
    default_pipeline,
    status_label,
)
from ..views import LEAD_STATUS_LABELS
from .models import Lead
from .services import OPEN_STATUSES, LeadError

CONVERTIBLE = ("qualified", *OPEN_STATUSES)
NEW = "new"  # as company_id or contact_id: create a record even when one matches
MAX_AMOUNT = Decimal("9999999999999999.99")


class ConversionRefused(LeadError):
    """The lead cannot be converted, or the conversion cannot be undone; the message says why (translated)."""


class ConversionInputError(LeadError):
    """A value given for the conversion is wrong; `field` names it and the message says why (translated)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


# -- finding what to link ---------------------------------------------------------------------------------

def _one(found: list[dict]) -> int | None:
    return found[0]["id"] if len(found) == 1 else None


def contact_candidates(session: Session, lead: Lead) -> list[dict]:
    """Contacts (not merged away) with the lead's normalized e-mail address or E.164 phone, each with its
    `reasons`. Every contact counts, whoever owns it: a conversion must not duplicate a record the user
    cannot see."""
    found: dict[int, set[str]] = {}
    if lead.email:
        for contact_id in session.scalars(select(Email.contact_id).where(Email.address == lead.email,
                                                                         Email.contact_id.is_not(None))):
            found.setdefault(contact_id, set()).add("email")
    if lead.phone_e164:
        for contact_id in session.scalars(select(Phone.contact_id).where(Phone.e164 == lead.phone_e164,
                                                                         Phone.contact_id.is_not(None))):
            found.setdefault(contact_id, set()).add("phone")
    if not found:
        return []
    rows = session.execute(select(Contact.id, Contact.full_name).where(Contact.id.in_(list(found)),
                                                                       Contact.merged_into_id.is_(None))
                           .order_by(Contact.id))
    return [{"kind": "contact", "id": r.id, "name": r.full_name, "reasons": sorted(found[r.id])} for r in rows]


def company_candidates(session: Session, lead: Lead) -> list[dict]:
    """Companies (not merged away) whose normalized name is the lead's company name."""
    key = normalize_name(lead.company_name)
    if not key:
        return []
    rows = session.execute(select(Company.id, Company.name).where(func.lower(Company.name) == key,
                                                                  Company.merged_into_id.is_(None))
                           .order_by(Company.id).limit(20))
    return [{"kind": "company", "id": r.id, "name": r.name, "reasons": ["name"]} for r in rows]


def _primary_company(session: Session, contact_id: int) -> int | None:
    rows = session.execute(select(ContactCompany.company_id, ContactCompany.is_primary)
                           .where(ContactCompany.contact_id == contact_id)).all()
    primary = [r.company_id for r in rows if r.is_primary]
    if primary:
        return primary[0]
    return rows[0].company_id if len(rows) == 1 else None


def proposal(session: Session, lead: Lead) -> dict[str, Any]:
    """What converting `lead` would do with no choice made: for the company and the contact, the candidates
    found and the id that would be linked (None: a new record is created)."""
    contacts = contact_candidates(session, lead)
    companies = company_candidates(session, lead)
    contact_id = _one(contacts)
    company_id = _one(companies)
    if company_id is None and contact_id is not None and not (lead.company_name or "").strip():
        company_id = _primary_company(session, contact_id)
    return {"contact_id": contact_id, "contacts": contacts, "company_id": company_id, "companies": companies,
            "create_company": company_id is None and bool((lead.company_name or "").strip())}


# -- converting -------------------------------------------------------------------------------------------

def _existing(session: Session, model, record_id, field: str):
    if isinstance(record_id, bool) or not isinstance(record_id, int):
        raise ConversionInputError(field, gettext("give the id of an existing record"))
    record = session.get(model, record_id)
    if record is None:
        raise ConversionInputError(field, gettext("there is no record %(id)s", id=record_id))
    if record.merged_into_id is not None:
        raise ConversionInputError(field, gettext("record %(id)s was merged into record %(survivor)s: use that one",
                                                  id=record_id, survivor=record.merged_into_id))
    return record


def _amount(amount) -> Decimal:
    if amount is None or amount == "":
        return Decimal(0)
    try:
        value = Decimal(str(amount)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        raise ConversionInputError("amount", gettext("give a number such as 12000.00")) from None
    if not value.is_finite() or value < 0 or value > MAX_AMOUNT:
        raise ConversionInputError("amount", gettext("give an amount from 0 to %(max)s", max=MAX_AMOUNT))
    return value


def _check_convertible(lead: Lead, unqualified_ok: bool) -> None:
    if lead.status == "converted" or lead.converted_at is not None:
        raise ConversionRefused(gettext("The lead “%(name)s” is already converted.", name=lead.name))
    if lead.status == "disqualified":
        raise ConversionRefused(gettext("The lead “%(name)s” is disqualified: a disqualified lead is not converted.",
                                        name=lead.name))
    if lead.status != "qualified" and not unqualified_ok:
        raise ConversionRefused(gettext(
            "The lead “%(name)s” is not qualified yet (score %(score)s). Confirm that you want to convert it "
            "anyway.", name=lead.name, score=lead.score))
    if lead.status not in CONVERTIBLE:
        raise ConversionRefused(gettext("A lead with status “%(status)s” cannot be converted.", status=lead.status))


def _address(lead: Lead) -> Address | None:
    country = (lead.country or "").strip()
    code = country.upper() if len(country) == 2 and country.isalpha() else None
    if not (lead.city or lead.address or code):
        return None
    return Address(kind="office", city=lead.city, street=lead.address, country=code, is_primary=True)


def _new_company(lead: Lead) -> Company:
    company = Company(name=lead.company_name.strip(), industry=lead.industry, employees=lead.company_size,
                      website=lead.website, status="prospect", owner_id=lead.owner_id, team_id=lead.team_id)
    country = (lead.country or "").strip()
    if country and not (len(country) == 2 and country.isalpha()):  # a country name, not an ISO code
        company.region = country[:100]
    address = _address(lead)
    if address is not None:
        company.addresses.append(address)
    return company


def _new_contact(lead: Lead) -> Contact:
    contact = Contact(full_name=lead.name, title=lead.title, owner_id=lead.owner_id, team_id=lead.team_id)
    if lead.email:
        contact.emails.append(Email(address=lead.email, kind="work", is_primary=True))
    if lead.phone:
        contact.phones.append(Phone(raw=lead.phone, e164=lead.phone_e164, kind="mobile", is_primary=True))
    return contact


def convert_lead(session: Session, lead: Lead, *, company_id: int | str | None = None,
                 contact_id: int | str | None = None, deal_name: str | None = None, amount=None,
                 currency: str | None = None, user_id: int | None = None, unqualified_ok: bool = False) -> Deal:
    """Convert `lead`: link or create its company and contact, open a deal in the default pipeline's first
    stage with the lead's source, channel and campaign, mark the lead converted and emit `crm_lead_converted`.
    `company_id` / `contact_id`: the record to link, "new" to create one even when a match exists, None to
    link the one confident match or create. Everything is checked first: ConversionRefused or
    ConversionInputError, and nothing is written."""
    session.refresh(lead, with_for_update=True)  # two conversions of one lead at once: the second waits, then sees it
    _check_convertible(lead, unqualified_ok)
    name = " ".join((deal_name or "").split()) or lead.company_name or lead.name
    if len(name) > 200:
        raise ConversionInputError("deal_name", gettext("at most %(max)d characters", max=200))
    value = _amount(amount)
    code = (currency or "").strip().upper() or "CNY"
    if len(code) != 3 or not code.isalpha():
        raise ConversionInputError("currency", gettext("give a three-letter currency code such as CNY"))
    pipeline = default_pipeline(session)
    if pipeline is None or not pipeline.stages:
        raise ConversionRefused(gettext("There is no sales pipeline yet: load one first."))
    found = proposal(session, lead)
    contact = None
    if contact_id not in (None, NEW):
        contact = _existing(session, Contact, contact_id, "contact_id")
    elif contact_id is None and found["contact_id"] is not None:
        contact = session.get(Contact, found["contact_id"])
    if company_id == NEW:
        company = None
        if not (lead.company_name or "").strip():
            raise ConversionInputError("company_id", gettext("the lead names no company to create"))
    elif company_id is not None:
        company = _existing(session, Company, company_id, "company_id")
    else:
        guess = found["company_id"]
        if guess is None and contact is not None and not (lead.company_name or "").strip():
            guess = _primary_company(session, contact.id)  # the chosen contact's company
        company = session.get(Company, guess) if guess is not None else None

    created = {"company": False, "contact": False, "link": None}
    if company is None and (lead.company_name or "").strip():
        company = _new_company(lead)
        session.add(company)
        created["company"] = True
    if contact is None:
        contact = _new_contact(lead)
        session.add(contact)
        created["contact"] = True
    session.flush()
    if company is not None and session.scalar(select(ContactCompany.id).where(
            ContactCompany.contact_id == contact.id, ContactCompany.company_id == company.id)) is None:
        primary = created["contact"] or session.scalar(select(func.count()).select_from(ContactCompany)
                                                       .where(ContactCompany.contact_id == contact.id)) == 0
        link = ContactCompany(contact_id=contact.id, company_id=company.id, is_primary=primary)
        session.add(link)
        session.flush()
        created["link"] = link.id

    deal = Deal(name=name, company_id=company.id if company else None, contact_id=contact.id,
                stage=pipeline.stages[0], amount=value, currency=code, source=lead.source, channel=lead.channel,
                campaign=lead.campaign, lead_id=lead.id, owner_id=lead.owner_id, team_id=lead.team_id)
    try:
        create_deal(session, deal, user_id=user_id)
    except StageChangeRefused as exc:
        raise ConversionRefused(str(exc)) from None
    session.flush()
    now = utcnow()
    lead.conversion = {
        "at": now.isoformat(), "by": user_id, "previous_status": lead.status,
        "company_id": company.id if company else None, "company_created": created["company"],
        "contact_id": contact.id, "contact_created": created["contact"], "link_created": created["link"],
        "deal_id": deal.id, "deal_stage_id": deal.stage_id, "deal_version": deal.version,
    }
    lead.status, lead.converted_at = "converted", now
    lead.contact_id, lead.company_id, lead.deal_id = contact.id, company.id if company else None, deal.id
    session.flush()
    emit(session, "crm_lead_converted", {
        "id": lead.id, "name": lead.name, "company_id": lead.company_id, "company_created": created["company"],
        "contact_id": contact.id, "contact_created": created["contact"], "deal_id": deal.id,
        "source": lead.source, "channel": lead.channel, "campaign": lead.campaign, "owner_id": lead.owner_id,
        "team_id": lead.team_id, "user_id": user_id})
    return deal


# -- undoing ----------------------------------------------------------------------------------------------

def undo_refusals(session: Session, lead: Lead) -> list[str]:
    """Why the conversion of `lead` cannot be undone (empty when it can)."""
    record = lead.conversion or {}
    if lead.status != "converted" or not record.get("deal_id"):
        return [gettext("The lead “%(name)s” is not converted.", name=lead.name)]
    deal = session.get(Deal, record["deal_id"])
    if deal is None:
        return [gettext("The deal of this conversion was deleted: the conversion can no longer be undone.")]
    reasons = []
    if deal.status != "open" or deal.stage_id != record.get("deal_stage_id"):
        reasons.append(gettext("The deal “%(deal)s” has moved on (stage %(stage)s, %(status)s).", deal=deal.name,
                               stage=deal.stage.name, status=status_label(deal.status)))
    elif deal.version != record.get("deal_version"):
        reasons.append(gettext("The deal “%(deal)s” was edited after the conversion.", deal=deal.name))
    if session.scalar(select(func.count()).select_from(Activity)
                      .where(Activity.deal_id == deal.id, Activity.done.is_(True))):
        reasons.append(gettext("Activities of the deal “%(deal)s” are done.", deal=deal.name))
    if session.scalar(select(func.count()).select_from(DealLine).where(DealLine.deal_id == deal.id)):
        reasons.append(gettext("The deal “%(deal)s” has line items.", deal=deal.name))
    used = []
    if record.get("contact_created"):
        used += _used_since(session, Contact, record["contact_id"], deal.id, lead.id)
    if record.get("company_created") and record.get("company_id"):
        used += _used_since(session, Company, record["company_id"], deal.id, lead.id)
    return reasons + used


def _used_since(session: Session, model, record_id: int, deal_id: int, lead_id: int) -> list[str]:
    """Why a record the conversion created may not be deleted: other deals, leads or activities use it."""
    record = session.get(model, record_id)
    if record is None:
        return []
    column = "contact_id" if model is Contact else "company_id"
    others = session.scalar(select(func.count()).select_from(Deal).where(getattr(Deal, column) == record_id,
                                                                         Deal.id != deal_id))
    others += session.scalar(select(func.count()).select_from(Lead).where(getattr(Lead, column) == record_id,
                                                                          Lead.id != lead_id))
    others += session.scalar(select(func.count()).select_from(Activity).where(
        getattr(Activity, column) == record_id, or_(Activity.deal_id.is_(None), Activity.deal_id != deal_id)))
    if not others:
        return []
    return [gettext("“%(name)s”, created by the conversion, has been used since (other deals, leads or "
                    "activities).", name=str(record))]


def undo_conversion(session: Session, lead: Lead) -> None:
    """Undo the conversion of `lead` while its deal is untouched (still open in the stage it started in,
    not edited, no activity done, no line items): the deal and the records the conversion created are
    deleted (linked ones are kept), and the lead gets its status from before the conversion back.
    ConversionRefused lists every reason otherwise."""
    session.refresh(lead, with_for_update=True)
    reasons = undo_refusals(session, lead)
    if reasons:
        raise ConversionRefused("\n".join(reasons))
    record = dict(lead.conversion)
    lead.status = record.get("previous_status") or "qualified"
    lead.converted_at, lead.conversion = None, {}
    lead.deal_id = lead.contact_id = lead.company_id = None
    session.flush()
    deal = session.get(Deal, record["deal_id"])
    for activity in session.scalars(select(Activity).where(Activity.deal_id == deal.id)):
        session.delete(activity)  # the first stage's open tasks
    session.delete(deal)
    session.flush()
    doomed = []
    if record.get("link_created"):
        doomed.append(session.get(ContactCompany, record["link_created"]))
    if record.get("contact_created"):
        doomed.append(session.get(Contact, record["contact_id"]))
    if record.get("company_created") and record.get("company_id"):
        doomed.append(session.get(Company, record["company_id"]))
    for obj in doomed:
        if obj is not None:
            session.delete(obj)
    session.flush()


# -- screen -----------------------------------------------------------------------------------------------

def _visible_lead(pk) -> Lead | None:
    return visible_record(Lead, pk, g.user, db.session)


def _form_id(value: str | None) -> int | str | None:
    """A record id chosen on the form, NEW to create one, or None (nothing chosen)."""
    text = (value or "").strip()
    if not text:
        return None
    if text == NEW:
        return NEW
    if not text.isdigit():
        raise ConversionInputError("id", gettext("give the id of an existing record"))
    return int(text)


class LeadConversionView(BaseView):
    """Convert a lead: the confirmation page with the company and contact it would link or create."""

    route_base = "/crm/lead-convert"
    default_view = "form"
    class_permission_name = "CrmLeadConversion"
    method_permission_name = {"form": "show", "convert": "edit", "undo": "edit"}
    base_permissions = ["can_show", "can_edit"]

    def _page(self, lead: Lead, error: str | None = None, status: int = 200):
        pipeline = default_pipeline(db.session)
        return self.render_template(
            "crm/lead_convert.html", lead=lead, found=proposal(db.session, lead), pipeline=pipeline,
            first_stage=pipeline.stages[0] if pipeline and pipeline.stages else None, error=error,
            undo_refusals=undo_refusals(db.session, lead) if lead.status == "converted" else [],
            deal=db.session.get(Deal, lead.deal_id) if lead.deal_id else None,
            title=gettext("Convert lead")), status

    @expose("/<int:pk>", methods=["GET"])
    @has_access
    def form(self, pk):
        lead = _visible_lead(pk)
        if lead is None:
            abort(404)
        return self._page(lead)

    @expose("/<int:pk>", methods=["POST"])
    @has_access
    def convert(self, pk):
        lead = _visible_lead(pk)
        if lead is None:
            abort(404)
        try:
            deal = convert_lead(db.session, lead, company_id=_form_id(request.form.get("company_id")),
                                contact_id=_form_id(request.form.get("contact_id")),
                                deal_name=request.form.get("deal_name"), amount=request.form.get("amount"),
                                currency=request.form.get("currency"), user_id=g.user.id,
                                unqualified_ok=request.form.get("unqualified_ok") == "1")
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            return self._page(_visible_lead(pk), error=str(exc), status=400)
        flash(gettext("The lead is converted: deal “%(deal)s” is open in the first stage.", deal=deal.name),
              "success")
        return redirect(url_for("DealView.show", pk=deal.id))

    @expose("/<int:pk>/undo", methods=["POST"])
    @has_access
    def undo(self, pk):
        lead = _visible_lead(pk)
        if lead is None:
            abort(404)
        try:
            undo_conversion(db.session, lead)
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            return self._page(_visible_lead(pk), error=str(exc), status=400)
        flash(gettext("The conversion is undone: the lead is %(status)s again.",
                      status=LEAD_STATUS_LABELS.get(lead.status, lead.status)), "success")
        return redirect(url_for("LeadView.show", pk=pk))


# -- REST API ---------------------------------------------------------------------------------------------

def _result(lead: Lead) -> dict:
    return {"id": lead.id, "status": lead.status, "company_id": lead.company_id, "contact_id": lead.contact_id,
            "deal_id": lead.deal_id, "converted_at": lead.converted_at.isoformat() if lead.converted_at else None,
            "conversion": lead.conversion or {}}


class LeadConversionApi(BaseApi):
    """Convert a lead into a company, a contact and a deal, and undo it while the deal is untouched."""

    resource_name = "crm/lead"
    class_permission_name = "CrmLeadConversion"
    method_permission_name = {"convert": "post", "undo_convert": "post", "conversion_proposal": "get"}
    openapi_spec_tag = "CRM leads"

    @expose("/<int:pk>/convert", methods=["GET"])
    @protect()
    @safe
    def conversion_proposal(self, pk):
        """What converting the lead would link or create, before doing it.
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: "company_id and contact_id that would be linked (null: created), candidates"}
            404: {description: no such lead (or not yours)}
        """
        lead = _visible_lead(pk)
        if lead is None:
            return self.response_404()
        return self.response(200, id=lead.id, status=lead.status, **proposal(db.session, lead))

    @expose("/<int:pk>/convert", methods=["POST"])
    @protect()
    @safe
    def convert(self, pk):
        """Convert the lead (`{"company_id", "contact_id", "deal_name", "amount", "currency", "unqualified_ok"}`,
        all optional): links or creates the company and contact, opens a deal in the default pipeline.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            201: {description: "the lead's status, company_id, contact_id, deal_id and what was created"}
            400: {description: "not convertible (converted, disqualified, not qualified) or a bad value"}
            404: {description: no such lead (or not yours)}
        """
        lead = _visible_lead(pk)
        if lead is None:
            return self.response_404()
        body = request.get_json(silent=True) if request.data else {}
        if not isinstance(body, dict):
            return self.response_400(message=gettext("Send a JSON object."))
        unknown = sorted(set(body) - {"company_id", "contact_id", "deal_name", "amount", "currency",
                                      "unqualified_ok"})
        if unknown:
            return self.response_400(message=gettext("%(field)s: not a field of a conversion", field=unknown[0]))
        try:
            convert_lead(db.session, lead, company_id=body.get("company_id"), contact_id=body.get("contact_id"),
                         deal_name=body.get("deal_name"), amount=body.get("amount"), currency=body.get("currency"),
                         user_id=getattr(g.user, "id", None), unqualified_ok=body.get("unqualified_ok") is True)
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(201, **_result(lead))

    @expose("/<int:pk>/undo-convert", methods=["POST"])
    @protect()
    @safe
    def undo_convert(self, pk):
        """Undo the conversion while the deal is untouched: the deal and the records it created are deleted.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the lead with its status from before the conversion}
            400: {description: "refused: every reason (the deal moved, was edited, has done activities…)"}
            404: {description: no such lead (or not yours)}
        """
        lead = _visible_lead(pk)
        if lead is None:
            return self.response_404()
        try:
            undo_conversion(db.session, lead)
            db.session.commit()
        except LeadError as exc:
            db.session.rollback()
            return self.response_400(message=str(exc))
        return self.response(200, **_result(lead))


def register(appbuilder) -> None:
    """Add the conversion screens and API."""
    appbuilder.add_view_no_menu(LeadConversionView)
    appbuilder.add_api(LeadConversionApi)

