"""The store sales screen: read-only, newest first, searchable by store, receipt, customer and match."""
from __future__ import annotations

from flask_appbuilder import ModelView
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l

from .models import PosSale

MATCH_LABELS = {"card": _l("Loyalty card"), "phone": _l("Phone"), "email": _l("E-mail"),
                "created": _l("New contact")}


class PosSaleView(ModelView):
    datamodel = SQLAInterface(PosSale)
    class_permission_name = "PosSales"
    base_permissions = ["can_list", "can_show"]
    list_title = _l("Store sales")
    show_title = _l("Store sale")
    list_columns = ["sold_at", "store", "receipt", "total", "currency", "contact", "matched_by"]
    show_columns = ["sold_at", "store", "receipt", "total", "currency", "card", "phone", "email", "contact",
                    "matched_by", "created_at"]
    search_columns = ["store", "receipt", "currency", "card", "phone", "email", "contact", "matched_by", "sold_at"]
    order_columns = ["sold_at", "store", "receipt", "total"]
    base_order = ("sold_at", "desc")
    label_columns = {"sold_at": _l("Time"), "store": _l("Store"), "receipt": _l("Receipt"), "total": _l("Total"),
                     "currency": _l("Currency"), "card": _l("Loyalty card"), "phone": _l("Phone"),
                     "email": _l("E-mail"), "contact": _l("Contact"), "matched_by": _l("Matched by"),
                     "created_at": _l("Recorded at")}
    formatters_columns = {"matched_by": lambda value: MATCH_LABELS.get(value, "—")}
