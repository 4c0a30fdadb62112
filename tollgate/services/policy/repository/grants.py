"""SQL over a tenant's grants."""

from __future__ import annotations

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from tollgate.services.policy import tables
from tollgate.services.policy.domain.model import Grant
from tollgate.services.policy.repository import rows

G = tables.grants


def insert_grant(session: Session, grant: Grant) -> None:
    session.execute(insert(G).values(rows.grant_row(grant)))


def get_grant(session: Session, tenant_id: str, grant_id: str) -> Grant | None:
    row = session.execute(select(G).where(G.c.tenant_id == tenant_id, G.c.grant_id == grant_id)).first()
    return rows.grant_of(row) if row else None


def void_grant(session: Session, tenant_id: str, grant_id: str, void_us: int) -> None:
    session.execute(update(G).where(G.c.tenant_id == tenant_id, G.c.grant_id == grant_id).values(void_us=void_us))


def list_grants(
    session: Session, tenant_id: str, *, metric: str, user_id: str, after: str | None, limit: int
) -> list[Grant]:
    query = select(G).where(G.c.tenant_id == tenant_id).order_by(G.c.grant_id).limit(limit)
    if metric:
        query = query.where(G.c.metric == metric)
    if user_id:
        query = query.where(G.c.user_id == user_id)
    if after is not None:
        query = query.where(G.c.grant_id > after)
    return [rows.grant_of(row) for row in session.execute(query)]


def live_grants(session: Session, tenant_id: str, now_us: int) -> tuple[Grant, ...]:
    """The grants that count now or later: not voided, not expired."""
    query = select(G).where(
        G.c.tenant_id == tenant_id, G.c.void_us.is_(None), or_(G.c.expires_us.is_(None), G.c.expires_us > now_us)
    )
    return tuple(rows.grant_of(row) for row in session.execute(query.order_by(G.c.grant_id)))
