"""SQL over threshold notifications and their per-tenant sequence heads."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tollgate.services.policy import tables
from tollgate.services.policy.domain.dimensions import Filters, as_mapping, filters_of
from tollgate.services.policy.domain.notifications import Crossing, Notification
from tollgate.shared.audit import canonical_json

N, H = tables.entitlement_notifications, tables.notification_heads


def filters_text(filters: Filters) -> str:
    """A quota's filters as stored in its notifications' key: canonical JSON, '' for none."""
    return canonical_json(as_mapping(filters)) if filters else ""


def _crossing_key(crossing: Crossing):
    return and_(
        N.c.tenant_id == crossing.tenant_id,
        N.c.metric == crossing.metric,
        N.c.period == crossing.period,
        N.c.scope == crossing.scope,
        N.c.user_id == crossing.user_id,
        N.c.period_start_us == crossing.start_us,
        N.c.allowed == crossing.allowed,
        N.c.filters == filters_text(crossing.filters),
    )


def missing(session: Session, crossings: Sequence[Crossing]) -> list[Crossing]:
    """The crossings not stored yet (one statement per quota, all sharing a key but the percent)."""
    by_quota: dict[tuple, list[Crossing]] = {}
    for crossing in crossings:
        quota = (crossing.metric, crossing.period, crossing.scope, crossing.allowed, crossing.filters)
        by_quota.setdefault(quota, []).append(crossing)
    left = []
    for group in by_quota.values():
        stored = set(session.execute(select(N.c.percent).where(_crossing_key(group[0]))).scalars())
        left += [c for c in group if c.percent not in stored]
    return left


def lock_head(session: Session, tenant_id: str) -> int:
    """Lock the tenant's head row until the transaction ends (creating it at 0) and return its sequence."""
    query = select(H.c.sequence).where(H.c.tenant_id == tenant_id).with_for_update()
    found = session.execute(query).scalar()
    if found is not None:
        return found
    try:
        with session.begin_nested():
            session.execute(insert(H).values(tenant_id=tenant_id, sequence=0))
    except IntegrityError:  # another transaction created it first: wait for its lock like everyone else
        pass
    return session.execute(query).scalar_one()


def store(session: Session, crossings: Sequence[Crossing], first_sequence: int, now_us: int) -> None:
    """Insert the crossings numbered from `first_sequence` and move the head past them (the head is locked)."""
    session.execute(
        insert(N),
        [
            {
                "tenant_id": c.tenant_id,
                "sequence": first_sequence + index,
                "metric": c.metric,
                "period": c.period,
                "scope": c.scope,
                "kind": c.kind,
                "user_id": c.user_id,
                "percent": c.percent,
                "threshold": c.threshold,
                "allowed": c.allowed,
                "used": c.used,
                "reserved": c.reserved,
                "period_start_us": c.start_us,
                "period_end_us": c.end_us,
                "observed_by": c.observed_by,
                "detail": c.detail[:500],
                "create_us": now_us,
                "filters": filters_text(c.filters),
            }
            for index, c in enumerate(crossings)
        ],
    )
    tenant_id = crossings[0].tenant_id
    session.execute(update(H).where(H.c.tenant_id == tenant_id).values(sequence=first_sequence + len(crossings) - 1))


def latest(session: Session, tenant_id: str) -> int:
    """The tenant's latest sequence number (0: none yet)."""
    return session.execute(select(H.c.sequence).where(H.c.tenant_id == tenant_id)).scalar() or 0


def after(session: Session, tenant_id: str, sequence: int, limit: int) -> list[Notification]:
    query = select(N).where(N.c.tenant_id == tenant_id, N.c.sequence > sequence).order_by(N.c.sequence).limit(limit)
    return [
        Notification(
            row.sequence,
            Crossing(
                row.tenant_id,
                row.metric,
                row.period,
                row.scope,
                row.kind,
                row.user_id,
                row.percent,
                row.threshold,
                row.allowed,
                row.used,
                row.reserved,
                row.period_start_us,
                row.period_end_us,
                row.observed_by,
                row.detail,
                filters_of(json.loads(row.filters)) if row.filters else (),
            ),
            row.create_us,
        )
        for row in session.execute(query)
    ]
