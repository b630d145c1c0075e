"""Lead reads for the 360° view: the leads a customer came from (converted into it) and open leads that share
its e-mail addresses or phones."""
from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bigledger_core.db import in_ids
from bigledger_core.security import visibility_clause

from .models import Lead


def customer_leads(session: Session, customer, user, *, emails=(), phones=(), limit: int = 20) -> list[dict]:
    """Leads converted into this company (or its subsidiaries) or contact, and leads with the same e-mail
    or phone, newest first, as far as `user` may see them."""
    if customer.kind == "company":
        linked = in_ids(session, Lead.company_id, customer.company_ids)
    else:
        linked = Lead.contact_id == customer.id
    conditions = [linked]
    if emails:
        conditions.append(in_ids(session, Lead.email, emails))
    if phones:
        conditions.append(in_ids(session, Lead.phone_e164, phones))
    query = select(Lead.id, Lead.name, Lead.company_name, Lead.status, Lead.score, Lead.source, Lead.channel,
                   Lead.created_at).where(or_(*conditions))
    clause = visibility_clause(Lead, user, session)
    if clause is not None:
        query = query.where(clause)
    rows = session.execute(query.order_by(Lead.created_at.desc(), Lead.id.desc()).limit(limit)).all()
    return [{"id": r.id, "name": r.name, "company_name": r.company_name, "status": r.status, "score": r.score,
             "source": r.source, "channel": r.channel, "created_at": r.created_at.isoformat()} for r in rows]
