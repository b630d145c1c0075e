"""The finance bridge's screens and REST API for its standalone storage: invoices (issue a draft), payments
(record one against an issued invoice), exchange rates and credit holds. Every change goes through
services.py, so the screen, the API and the demo follow the same rules."""
from __future__ import annotations

from flask import flash, g, redirect, request, url_for
from flask_appbuilder import ModelRestApi, ModelView, action, has_access
from flask_appbuilder import expose as expose_view
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.models.sqla.filters import FilterEqual
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from werkzeug.exceptions import BadRequest
from wtforms import BooleanField, IntegerField
from wtforms.validators import DataRequired, Optional

from bigledger_core.db import db

from .models import CreditHold, ExchangeRate, Invoice, InvoiceLine, Payment
from .services import (
    FinanceError,
    _currency,
    apply_payment,
    crm_customers,
    issue_invoice,
    status_label,
)

LABELS = {
    "number": _l("Invoice number"), "customer_name": _l("Customer"), "company_id": _l("Company ID"),
    "contact_id": _l("Contact ID"), "currency": _l("Currency"), "status": _l("Status"),
    "payment_terms_days": _l("Payment terms (days)"), "issued_on": _l("Issued on"), "due_on": _l("Due on"),
    "total": _l("Total"), "paid": _l("Paid"), "outstanding": _l("Outstanding"), "reference": _l("Reference"),
    "created_at": _l("Created at"), "description": _l("Description"), "product_code": _l("Product code"),
    "quantity": _l("Quantity"), "unit_price": _l("Unit price"), "discount": _l("Discount"), "amount": _l("Amount"),
    "invoice": _l("Invoice"), "received_at": _l("Received at (UTC)"), "from_currency": _l("From currency"),
    "to_currency": _l("To currency"), "valid_from": _l("Valid from"), "rate": _l("Rate"),
    "on_hold": _l("On credit hold"), "reason": _l("Reason"), "updated_at": _l("Updated at"),
}
_READ_API = {"get_list": "get", "get": "get", "info": "info"}
_CRUD_API = {**_READ_API, "post": "post", "put": "put", "delete": "delete"}


def _user_id() -> int | None:
    user = getattr(g, "user", None)
    return getattr(user, "id", None) if getattr(user, "is_authenticated", False) else None


# -- invoices -----------------------------------------------------------------------------------------------

class InvoiceLineView(ModelView):
    datamodel = SQLAInterface(InvoiceLine)
    class_permission_name = "FinanceInvoice"
    base_permissions = ["can_list", "can_show"]
    list_title = _l("Invoice lines")
    list_columns = ["description", "product_code", "quantity", "unit_price", "discount", "amount"]
    label_columns = LABELS


class InvoiceView(ModelView):
    """Invoices (发票): drafts made for won deals, issued ones that are owed."""

    route_base = "/finance/invoices"
    datamodel = SQLAInterface(Invoice)
    class_permission_name = "FinanceInvoice"
    base_permissions = ["can_list", "can_show", "can_edit", "can_issue"]
    method_permission_name = {"list": "list", "show": "show", "edit": "edit", "issue": "issue"}
    list_title = show_title = _l("Invoices")
    list_columns = ["number", "customer_name", "status", "currency", "total", "paid", "issued_on", "due_on",
                    "created_at"]
    show_columns = ["number", "customer_name", "company_id", "contact_id", "status", "currency", "total", "paid",
                    "outstanding", "payment_terms_days", "issued_on", "due_on", "reference", "created_at"]
    edit_columns = ["payment_terms_days", "reference"]
    search_columns = ["number", "customer_name", "company_id", "contact_id", "status", "currency", "issued_on",
                      "due_on"]
    base_order = ("id", "desc")
    label_columns = LABELS
    formatters_columns = {"status": status_label}
    related_views = [InvoiceLineView]

    def pre_update(self, item):
        if item.status != "draft":  # an issued invoice's terms and due date are fixed
            db.session.rollback()
            raise FinanceError(gettext("Invoice %(number)s is %(status)s: only a draft can be changed.",
                                       number=item.number, status=status_label(item.status)))

    @action("issue", _l("Issue"), _l("Issue the selected draft invoices?"), "fa-paper-plane")
    def issue(self, items):
        items = items if isinstance(items, list) else [items]
        for invoice in items:
            try:
                issue_invoice(db.session, invoice)
                db.session.commit()
                flash(gettext("Invoice %(number)s issued, due on %(due)s.", number=invoice.number,
                              due=invoice.due_on.isoformat()), "success")
            except FinanceError as exc:
                db.session.rollback()
                flash(str(exc), "danger")
        return redirect(self.get_redirect())


class InvoiceApi(ModelRestApi):
    resource_name = "finance/invoice"
    datamodel = SQLAInterface(Invoice)
    class_permission_name = "FinanceInvoice"
    method_permission_name = {**_READ_API, "issue": "put"}
    openapi_spec_tag = "Finance"
    list_columns = ["id", "number", "customer_name", "company_id", "contact_id", "status", "currency", "total",
                    "paid", "issued_on", "due_on", "created_at"]
    show_columns = [*list_columns, "payment_terms_days", "reference", "lines.description", "lines.product_code",
                    "lines.quantity", "lines.unit_price", "lines.discount", "lines.amount"]
    search_columns = ["number", "company_id", "contact_id", "status", "currency"]
    include_route_methods = {"get", "get_list", "info", "issue"}

    @expose("/<int:pk>/issue", methods=["POST"])
    @protect()
    @safe
    def issue(self, pk):
        """Issue a draft invoice: it is owed from today and due after its payment terms.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the invoice's number, status and due date}
            404: {description: no such invoice}
            409: {description: the invoice is not a draft}
        """
        invoice = db.session.get(Invoice, pk)
        if invoice is None:
            return self.response_404()
        try:
            issue_invoice(db.session, invoice)
            db.session.commit()
        except FinanceError as exc:
            db.session.rollback()
            return self.response(409, message=str(exc))
        return self.response(200, id=invoice.id, number=invoice.number, status=invoice.status,
                             due_on=invoice.due_on.isoformat())


# -- payments -----------------------------------------------------------------------------------------------

class PaymentView(ModelView):
    """Payments (收款): money received against an issued invoice."""

    route_base = "/finance/payments"
    datamodel = SQLAInterface(Payment)
    class_permission_name = "FinancePayment"
    base_permissions = ["can_list", "can_show", "can_add"]
    list_title = show_title = _l("Payments")
    add_title = _l("Record a payment")
    list_columns = ["received_at", "invoice", "currency", "amount", "reference"]
    show_columns = ["received_at", "invoice", "company_id", "contact_id", "currency", "amount", "reference"]
    add_columns = ["invoice", "amount", "received_at", "reference"]
    search_columns = ["invoice", "company_id", "contact_id", "currency", "received_at"]
    base_order = ("received_at", "desc")
    label_columns = LABELS
    add_form_query_rel_fields = {"invoice": [["status", FilterEqual, "issued"]]}

    def pre_add(self, item):
        item.recorded_by_id = _user_id()
        try:
            apply_payment(db.session, item)
        except FinanceError:
            db.session.rollback()
            raise


class PaymentApi(ModelRestApi):
    resource_name = "finance/payment"
    datamodel = SQLAInterface(Payment)
    class_permission_name = "FinancePayment"
    method_permission_name = {"get_list": "get", "get": "get", "info": "info", "post": "post"}
    include_route_methods = {"get", "get_list", "info", "post"}
    openapi_spec_tag = "Finance"
    list_columns = show_columns = ["id", "invoice_id", "company_id", "contact_id", "currency", "amount",
                                   "received_at", "reference", "recorded_by_id"]
    add_columns = ["invoice_id", "amount", "received_at", "reference"]
    search_columns = ["invoice_id", "company_id", "contact_id", "currency", "received_at"]

    def pre_add(self, item):
        item.recorded_by_id = _user_id()
        try:
            apply_payment(db.session, item)
        except FinanceError as exc:
            db.session.rollback()
            raise BadRequest(str(exc)) from None


# -- exchange rates and credit holds ------------------------------------------------------------------------

def _check_rate(item: ExchangeRate) -> None:
    """Validate a rate edited on the screen or the API (the same rules as `services.set_rate`)."""
    try:
        item.from_currency, item.to_currency = _currency(item.from_currency), _currency(item.to_currency)
        if item.valid_from is None:
            raise FinanceError(gettext("valid_from: say from which day the rate applies."))
        if item.from_currency == item.to_currency:
            raise FinanceError(gettext("to_currency: a rate converts between two different currencies."))
        if item.rate is None or item.rate <= 0:
            raise FinanceError(gettext("rate: give a positive number such as 7.1234, not “%(value)s”.",
                                       value=str(item.rate)))
    except FinanceError:
        db.session.rollback()
        raise


class ExchangeRateView(ModelView):
    """Exchange rates (汇率) the reports convert with, when no finance module supplies them."""

    route_base = "/finance/rates"
    datamodel = SQLAInterface(ExchangeRate)
    class_permission_name = "FinanceExchangeRate"
    list_title = show_title = _l("Exchange rates")
    add_title = _l("Add exchange rate")
    edit_title = _l("Edit exchange rate")
    list_columns = ["from_currency", "to_currency", "valid_from", "rate"]
    add_columns = edit_columns = show_columns = list_columns
    search_columns = list_columns
    base_order = ("valid_from", "desc")
    label_columns = LABELS

    def pre_add(self, item):
        _check_rate(item)

    def pre_update(self, item):
        _check_rate(item)


class ExchangeRateApi(ModelRestApi):
    resource_name = "finance/exchange_rate"
    datamodel = SQLAInterface(ExchangeRate)
    class_permission_name = "FinanceExchangeRate"
    method_permission_name = _CRUD_API
    openapi_spec_tag = "Finance"
    list_columns = show_columns = ["id", "from_currency", "to_currency", "valid_from", "rate"]
    add_columns = edit_columns = ["from_currency", "to_currency", "valid_from", "rate"]
    search_columns = ["from_currency", "to_currency", "valid_from"]

    def pre_add(self, item):
        try:
            _check_rate(item)
        except FinanceError as exc:
            raise BadRequest(str(exc)) from None

    pre_update = pre_add


def _check_company(item: CreditHold) -> None:
    """A hold or terms belong to a company the CRM knows and that was not merged away (FinanceError)."""
    if item.company_id is None:
        raise FinanceError(gettext("company_id: choose the company"))
    company = crm_customers(company_ids=[item.company_id])["companies"].get(item.company_id)
    if company is None:
        raise FinanceError(gettext("company_id: there is no company %(id)s in the CRM", id=item.company_id))
    if company["merged_into"] is not None:
        raise FinanceError(gettext("company_id: company %(id)s was merged into %(survivor)s; use that one",
                                   id=item.company_id, survivor=company["merged_into"]))
    if item.payment_terms_days is not None and not 0 <= item.payment_terms_days <= 365:
        raise FinanceError(gettext("payment_terms_days: between 0 and 365 days, or empty for the default"))


class _NamedCompanies(SQLAInterface):
    """Shows each row's company by its CRM name, all of a page's names asked of the CRM at once."""

    def get_values(self, lst, list_columns):
        lst = list(lst)
        names = {cid: c["name"] for cid, c in crm_customers(
            company_ids=[row.company_id for row in lst])["companies"].items()} if lst else {}
        for row in lst:
            row.company_name = names.get(row.company_id, "—")
        return super().get_values(lst, list_columns)

    def get_values_item(self, item, show_columns):
        item.company_name = crm_customers(company_ids=[item.company_id])["companies"].get(
            item.company_id, {}).get("name", "—")
        return super().get_values_item(item, show_columns)


def _company_from_address():
    return request.args.get("company_id", type=int)


class CreditHoldView(ModelView):
    """Credit holds (信用冻结) and payment terms by company: new deals for a company on hold warn the sales rep;
    a company's own terms replace BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS on its invoices. The customer's 360° view
    links here with the company filled in."""

    route_base = "/finance/credit_holds"
    datamodel = _NamedCompanies(CreditHold)
    class_permission_name = "FinanceCreditHold"
    list_title = show_title = _l("Credit holds and payment terms")
    add_title = _l("Add credit hold or payment terms")
    edit_title = _l("Edit credit hold or payment terms")
    list_columns = ["company_name", "company_id", "on_hold", "reason", "payment_terms_days", "updated_at"]
    add_columns = edit_columns = ["company_id", "on_hold", "reason", "payment_terms_days"]
    show_columns = list_columns
    search_columns = ["company_id", "on_hold"]
    label_columns = {**LABELS, "company_name": _l("Company"),
                     "payment_terms_days": _l("Payment terms (days, empty: the default)")}
    edit_form_extra_fields = {
        "on_hold": BooleanField(_l("On credit hold")),
        "payment_terms_days": IntegerField(_l("Payment terms (days, empty: the default)"), validators=[Optional()]),
    }
    add_form_extra_fields = {
        "company_id": IntegerField(_l("Company ID"), validators=[DataRequired()], default=_company_from_address),
        **edit_form_extra_fields}

    @expose_view("/add", methods=["GET", "POST"])
    @has_access
    def add(self):
        """A company has one entry: asked to add one for a company that has it (the 360° view's link), the
        screen opens that entry instead."""
        company_id = request.args.get("company_id", type=int)
        if request.method == "GET" and company_id is not None:
            held = db.session.scalar(select(CreditHold.id).where(CreditHold.company_id == company_id))
            if held is not None:
                return redirect(url_for(".edit", pk=held))
        return super().add()

    def pre_add(self, item):
        try:
            _check_company(item)
        except FinanceError as exc:
            raise ValueError(str(exc)) from None

    pre_update = pre_add


class CreditHoldApi(ModelRestApi):
    resource_name = "finance/credit_hold"
    datamodel = SQLAInterface(CreditHold)
    class_permission_name = "FinanceCreditHold"
    method_permission_name = _CRUD_API
    openapi_spec_tag = "Finance"
    list_columns = show_columns = ["id", "company_id", "on_hold", "reason", "payment_terms_days", "updated_at"]
    add_columns = edit_columns = ["company_id", "on_hold", "reason", "payment_terms_days"]
    search_columns = ["company_id", "on_hold"]

    def pre_add(self, item):
        try:
            _check_company(item)
        except FinanceError as exc:
            raise BadRequest(str(exc)) from None

    pre_update = pre_add


def register(appbuilder) -> None:
    """Add the Finance menu (invoices, payments, exchange rates, credit holds) and its REST API."""
    category = {"category": "Finance", "category_label": _l("Finance"), "category_icon": "fa-money"}
    appbuilder.add_view_no_menu(InvoiceLineView)
    appbuilder.add_view(InvoiceView, "FinanceInvoice", label=_l("Invoices"), icon="fa-file-text-o", **category)
    appbuilder.add_view(PaymentView, "FinancePayment", label=_l("Payments"), icon="fa-credit-card", **category)
    appbuilder.add_view(ExchangeRateView, "FinanceExchangeRate", label=_l("Exchange rates"), icon="fa-exchange",
                        **category)
    appbuilder.add_view(CreditHoldView, "FinanceCreditHold", label=_l("Credit holds and terms"), icon="fa-ban",
                        **category)
    for api in (InvoiceApi, PaymentApi, ExchangeRateApi, CreditHoldApi):
        appbuilder.add_api(api)
