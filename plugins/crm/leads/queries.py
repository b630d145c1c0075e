"""Lead reads for the 360° view: the leads a customer came from (converted into it) and open leads that share
its e-mail addresses or phones."""
from __future__ import annotations

from functools import cache

from sqlalchemy import Integer, bindparam, or_, select
from sqlalchemy.orm import Session

from bigledger_core.db import ids_param
from bigledger_core.security import visibility_shape, visible_where

from .models import Lead


@cache
def _statement(dialect: str, kind: str, emails: bool, phones: bool, visibility: str):
    """Built once per shape: the newest `:limit` leads converted into the customer (`:companies`, or the
    contact `:contact_id`) or sharing one of its `:emails` or `:phones`, as far as the user may see them."""
    conditions = [ids_param(dialect, Lead.company_id, "companies") if kind == "company"
                  else Lead.contact_id == bindparam("contact_id", type_=Integer)]
    if emails:
        conditions.append(ids_param(dialect, Lead.email, "emails"))
    if phones:
        conditions.append(ids_param(dialect, Lead.phone_e164, "phones"))
    return select(Lead.id, Lead.name, Lead.company_name, Lead.status, Lead.score, Lead.source, Lead.channel,
                  Lead.created_at).where(or_(*conditions), *visible_where(Lead, visibility, dialect)) \
        .order_by(Lead.created_at.desc(), Lead.id.desc()).limit(bindparam("limit", type_=Integer))


def customer_leads(session: Session, customer, user, *, emails=(), phones=(), limit: int = 20) -> list[dict]:
    """Leads converted into this company (or its subsidiaries) or contact, and leads with the same e-mail
    or phone, newest first, as far as `user` may see them."""
    visibility, params = visibility_shape(user, session)
    params.update(companies=list(customer.company_ids), contact_id=customer.id, emails=list(emails),
                  phones=list(phones), limit=limit)
    rows = session.execute(_statement(session.get_bind().dialect.name, customer.kind, bool(emails), bool(phones),
                                      visibility), params).all()
    return [{"id": r.id, "name": r.name, "company_name": r.company_name, "status": r.status, "score": r.score,
             "source": r.source, "channel": r.channel, "created_at": r.created_at.isoformat()} for r in rows]
