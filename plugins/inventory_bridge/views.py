"""The inventory bridge's screens and REST API for its standalone storage: products, stock per warehouse, price
lists with their prices, the companies that buy from a list; and the availability check a sales rep asks before
promising (`GET /api/v1/inventory/availability`). Every save is checked by services.py, so the screen and the
API follow the same rules."""
from __future__ import annotations

from decimal import Decimal

from flask import request
from flask_appbuilder import ModelRestApi, ModelView
from flask_appbuilder.api import BaseApi, expose, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import BadRequest

from bigledger_core.db import db

from .models import CustomerPriceList, PriceList, PriceListItem, Product, Stock
from .services import (
    InventoryError,
    check_products,
    clean_customer_price_list,
    clean_price_list,
    clean_price_list_item,
    clean_product,
    clean_stock,
    parse_codes,
    parse_currency,
    parse_quantity,
)

LABELS = {
    "code": _l("Product code"), "name": _l("Name"), "name_en": _l("English name"), "unit": _l("Unit"),
    "stocked": _l("Kept in stock"), "active": _l("Sold"), "created_at": _l("Created at"), "product": _l("Product"),
    "product_id": _l("Product"), "warehouse": _l("Warehouse"), "on_hand": _l("On hand"), "reserved": _l("Reserved"),
    "available": _l("Available to sell"), "updated_at": _l("Updated at"), "currency": _l("Currency"),
    "is_default": _l("Default list of its currency"), "valid_from": _l("Valid from"), "valid_to": _l("Valid to"),
    "price_list": _l("Price list"), "min_quantity": _l("From quantity"), "price": _l("Unit price"),
    "company_id": _l("Company ID"),
}
_READ_API = {"get_list": "get", "get": "get", "info": "info"}
_CRUD_API = {**_READ_API, "post": "post", "put": "put", "delete": "delete"}


class _CheckedView:
    """A screen whose saves go through a services.py check; a refusal is shown and nothing is saved."""

    check = None

    def _check(self, item):
        try:
            type(self).check(db.session, item)
        except InventoryError:
            db.session.rollback()
            raise

    def pre_add(self, item):
        self._check(item)

    def pre_update(self, item):
        self._check(item)


class _CheckedApi(_CheckedView):
    """The same for the REST API: a refusal is a 400 whose message names the field."""

    def _check(self, item):
        try:
            super()._check(item)
        except InventoryError as exc:
            raise BadRequest(str(exc)) from None


# -- products and stock ---------------------------------------------------------------------------------------

class StockView(_CheckedView, ModelView):
    """Stock (库存): what each warehouse holds of a product, and how much of it is reserved."""

    route_base = "/inventory/stock"
    datamodel = SQLAInterface(Stock)
    class_permission_name = "InventoryStock"
    check = staticmethod(clean_stock)
    list_title = show_title = _l("Stock")
    add_title = _l("Add stock")
    edit_title = _l("Edit stock")
    list_columns = ["product", "warehouse", "on_hand", "reserved", "available", "updated_at"]
    show_columns = list_columns
    add_columns = edit_columns = ["product", "warehouse", "on_hand", "reserved"]
    search_columns = ["product", "warehouse", "on_hand", "reserved"]
    order_columns = ["warehouse", "on_hand", "reserved", "updated_at"]
    label_columns = LABELS


class PriceListItemView(_CheckedView, ModelView):
    """The prices of a list, with their quantity tiers."""

    route_base = "/inventory/prices"
    datamodel = SQLAInterface(PriceListItem)
    class_permission_name = "InventoryPriceList"
    check = staticmethod(clean_price_list_item)
    list_title = show_title = _l("Prices")
    add_title = _l("Add price")
    edit_title = _l("Edit price")
    list_columns = ["price_list", "product", "min_quantity", "price"]
    add_columns = edit_columns = show_columns = list_columns
    search_columns = list_columns
    label_columns = LABELS


class ProductView(_CheckedView, ModelView):
    """Products (产品): what sales reps put on line items, by code."""

    route_base = "/inventory/products"
    datamodel = SQLAInterface(Product)
    class_permission_name = "InventoryProduct"
    check = staticmethod(clean_product)
    list_title = show_title = _l("Products")
    add_title = _l("Add product")
    edit_title = _l("Edit product")
    list_columns = ["code", "name", "name_en", "unit", "stocked", "active"]
    show_columns = [*list_columns, "created_at"]
    add_columns = edit_columns = list_columns
    search_columns = list_columns
    base_order = ("code", "asc")
    label_columns = LABELS
    related_views = [StockView, PriceListItemView]


class CustomerPriceListView(_CheckedView, ModelView):
    """Customer price lists (客户价目表): companies that buy from a list of their own."""

    route_base = "/inventory/customer_price_lists"
    datamodel = SQLAInterface(CustomerPriceList)
    class_permission_name = "InventoryCustomerPriceList"
    check = staticmethod(clean_customer_price_list)
    list_title = show_title = _l("Customer price lists")
    add_title = _l("Add customer price list")
    edit_title = _l("Edit customer price list")
    list_columns = ["company_id", "price_list"]
    add_columns = edit_columns = show_columns = search_columns = list_columns
    label_columns = LABELS


class PriceListView(_CheckedView, ModelView):
    """Price lists (价目表): the default list of each currency, and lists of their own for some companies."""

    route_base = "/inventory/price_lists"
    datamodel = SQLAInterface(PriceList)
    class_permission_name = "InventoryPriceList"
    check = staticmethod(clean_price_list)
    list_title = show_title = _l("Price lists")
    add_title = _l("Add price list")
    edit_title = _l("Edit price list")
    list_columns = ["name", "currency", "is_default", "valid_from", "valid_to"]
    add_columns = edit_columns = list_columns
    show_columns = [*list_columns, "created_at"]
    search_columns = list_columns
    base_order = ("name", "asc")
    label_columns = LABELS
    related_views = [PriceListItemView, CustomerPriceListView]


# -- REST API -------------------------------------------------------------------------------------------------

class ProductApi(_CheckedApi, ModelRestApi):
    resource_name = "inventory/product"
    datamodel = SQLAInterface(Product)
    class_permission_name = "InventoryProduct"
    method_permission_name = _CRUD_API
    openapi_spec_tag = "Inventory"
    check = staticmethod(clean_product)
    list_columns = show_columns = ["id", "code", "name", "name_en", "unit", "stocked", "active"]
    add_columns = edit_columns = ["code", "name", "name_en", "unit", "stocked", "active"]
    search_columns = ["code", "name", "name_en", "stocked", "active"]


class StockApi(_CheckedApi, ModelRestApi):
    resource_name = "inventory/stock"
    datamodel = SQLAInterface(Stock)
    class_permission_name = "InventoryStock"
    method_permission_name = _CRUD_API
    openapi_spec_tag = "Inventory"
    check = staticmethod(clean_stock)
    list_columns = show_columns = ["id", "product_id", "product.code", "warehouse", "on_hand", "reserved",
                                   "updated_at"]
    add_columns = edit_columns = ["product_id", "warehouse", "on_hand", "reserved"]
    search_columns = ["product_id", "warehouse"]


class PriceListApi(_CheckedApi, ModelRestApi):
    resource_name = "inventory/price_list"
    datamodel = SQLAInterface(PriceList)
    class_permission_name = "InventoryPriceList"
    method_permission_name = _CRUD_API
    openapi_spec_tag = "Inventory"
    check = staticmethod(clean_price_list)
    list_columns = ["id", "name", "currency", "is_default", "valid_from", "valid_to"]
    show_columns = [*list_columns, "items.product_id", "items.min_quantity", "items.price"]
    add_columns = edit_columns = ["name", "currency", "is_default", "valid_from", "valid_to"]
    search_columns = ["name", "currency", "is_default"]


class PriceListItemApi(_CheckedApi, ModelRestApi):
    resource_name = "inventory/price_list_item"
    datamodel = SQLAInterface(PriceListItem)
    class_permission_name = "InventoryPriceList"
    method_permission_name = _CRUD_API
    openapi_spec_tag = "Inventory"
    check = staticmethod(clean_price_list_item)
    list_columns = show_columns = ["id", "price_list_id", "product_id", "product.code", "min_quantity", "price"]
    add_columns = edit_columns = ["price_list_id", "product_id", "min_quantity", "price"]
    search_columns = ["price_list_id", "product_id"]


class CustomerPriceListApi(_CheckedApi, ModelRestApi):
    resource_name = "inventory/customer_price_list"
    datamodel = SQLAInterface(CustomerPriceList)
    class_permission_name = "InventoryCustomerPriceList"
    method_permission_name = _CRUD_API
    openapi_spec_tag = "Inventory"
    check = staticmethod(clean_customer_price_list)
    list_columns = show_columns = ["id", "company_id", "price_list_id"]
    add_columns = edit_columns = ["company_id", "price_list_id"]
    search_columns = ["company_id", "price_list_id"]


def _plain(value):
    return str(value) if isinstance(value, Decimal) else value


def _company_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit() or int(value) <= 0:
        raise InventoryError(gettext("company_id: give the CRM id of the company, a whole number such as 42."))
    return int(value)


class AvailabilityApi(BaseApi):
    resource_name = "inventory"
    class_permission_name = "InventoryAvailability"
    method_permission_name = {"availability": "get"}
    openapi_spec_tag = "Inventory"

    @expose("/availability", methods=["GET"])
    @protect()
    @safe
    def availability(self):
        """Stock and price of products before promising them to a customer.
        ---
        get:
          parameters:
          - {in: query, name: codes, required: true, schema: {type: string}, description: "product codes, comma-separated"}
          - {in: query, name: quantity, schema: {type: string}, description: "wanted of each (default 1)"}
          - {in: query, name: warehouse, schema: {type: string}, description: "one warehouse (default: all)"}
          - {in: query, name: currency, schema: {type: string}, description: "price in this currency (ISO)"}
          - {in: query, name: company_id, schema: {type: integer}, description: "price for this CRM company"}
          responses:
            200: {description: "result: per code its status, message, stock and price"}
            400: {description: "message: which parameter is wrong and how to write it"}
        """
        args = request.args
        try:
            codes = parse_codes(args.get("codes"))
            quantity = parse_quantity(args.get("quantity") or "1")
            currency = parse_currency(args["currency"]) if args.get("currency") else None
            company_id = _company_id(args.get("company_id"))
        except InventoryError as exc:
            return self.response_400(message=str(exc))
        warehouse = (args.get("warehouse") or "").strip()[:50] or None
        rows = check_products(codes, quantity, warehouse=warehouse, company_id=company_id, currency=currency)
        return self.response(200, warehouse=warehouse, quantity=str(quantity), currency=currency,
                             result=[{key: _plain(value) for key, value in row.items()} for row in rows])


def register(appbuilder) -> None:
    """Add the Inventory menu (products, stock, price lists, customer price lists) and its REST API."""
    category = {"category": "Inventory", "category_label": _l("Inventory"), "category_icon": "fa-cubes"}
    appbuilder.add_view_no_menu(PriceListItemView)
    appbuilder.add_view(ProductView, "InventoryProduct", label=_l("Products"), icon="fa-cube", **category)
    appbuilder.add_view(StockView, "InventoryStock", label=_l("Stock"), icon="fa-archive", **category)
    appbuilder.add_view(PriceListView, "InventoryPriceList", label=_l("Price lists"), icon="fa-tags", **category)
    appbuilder.add_view(CustomerPriceListView, "InventoryCustomerPriceList", label=_l("Customer price lists"),
                        icon="fa-handshake-o", **category)
    for api in (ProductApi, StockApi, PriceListApi, PriceListItemApi, CustomerPriceListApi, AvailabilityApi):
        appbuilder.add_api(api)
