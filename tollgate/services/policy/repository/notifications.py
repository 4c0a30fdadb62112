"""SQL over threshold notifications and their per-tenant sequence heads."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tollgate.services.policy import tables
from tollgate.services.policy.domain.dimensions import Filters, as_mapping, filters_of
from tollgate.services.policy.domain.notifications import Crossing, Notification
from tollgate.services.policy.repository import rowcount
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


def missing(connection: Connection, crossings: Sequence[Crossing]) -> list[Crossing]:
    """The crossings not stored yet (one statement per quota, all sharing a key but the percent)."""
    by_quota: dict[tuple, list[Crossing]] = {}
    for crossing in crossings:
        quota = (crossing.metric, crossing.period, crossing.scope, crossing.allowed, crossing.filters)
        by_quota.setdefault(quota, []).append(crossing)
    left = []
    for group in by_quota.values():
        stored = set(connection.execute(select(N.c.percent).where(_crossing_key(group[0]))).scalars())
        left += [c for c in group if c.percent not in stored]
    return left


def lock_head(connection: Connection, tenant_id: str) -> int:
    """Lock the tenant's head row until the transaction ends (creating it at 0) and return its sequence."""
    query = select(H.c.sequence).where(H.c.tenant_id == tenant_id).with_for_update()
    found = connection.execute(query).scalar()
    if found is not None:
        return found
    try:
        with connection.begin_nested():
            connection.execute(insert(H).values(tenant_id=tenant_id, sequence=0))
    except IntegrityError:  # another transaction created it first: wait for its lock like everyone else
        pass
    return connection.execute(query).scalar_one()


def store(connection: Connection, crossings: Sequence[Crossing], first_sequence: int, now_us: int) -> None:
    """Insert the crossings numbered from `first_sequence` and move the head past them (the head is locked)."""
    connection.execute(
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
    connection.execute(update(H).where(H.c.tenant_id == tenant_id).values(sequence=first_sequence + len(crossings) - 1))


def head(session: Session, tenant_id: str) -> tuple[int, int]:
    """The tenant's latest sequence number and the number through which its notifications were deleted (0, 0:
    none yet)."""
    found = session.execute(select(H.c.sequence, H.c.purged_through).where(H.c.tenant_id == tenant_id)).first()
    return (found[0], found[1]) if found else (0, 0)


def with_ended(session: Session, ended_before_us: int) -> list[str]:
    """The tenants with a notification about a period that ended before `ended_before_us`."""
    query = select(N.c.tenant_id).where(N.c.period_end_us < ended_before_us).distinct()
    return list(session.execute(query).scalars())


def purge_ended(session: Session, tenant_id: str, ended_before_us: int) -> int:
    """Delete the tenant's first notifications up to the first one about a period ending at or after
    `ended_before_us`, and note in its head through which number they are gone; how many were deleted. A prefix, so
    that a watcher behind it can be told; and a crossing is stored for the current period only, so one whose period
    ended is never stored again."""
    mine = N.c.tenant_id == tenant_id
    first_kept = select(func.min(N.c.sequence)).where(mine, N.c.period_end_us >= ended_before_us).scalar_subquery()
    last = select(func.max(N.c.sequence)).where(mine).scalar_subquery()
    through = session.execute(select(func.coalesce(first_kept - 1, last))).scalar() or 0
    if through <= 0:
        return 0
    deleted = rowcount(session.execute(delete(N).where(mine, N.c.sequence <= through)))
    session.execute(
        update(H).where(H.c.tenant_id == tenant_id, H.c.purged_through < through).values(purged_through=through)
    )
    return deleted


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
