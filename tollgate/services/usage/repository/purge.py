"""SQL of purging: the per-tenant horizon, its lock against ingest, and deleting rolled-up raw events."""

from __future__ import annotations

from sqlalchemy import String, and_, bindparam, func, not_, or_, select
from sqlalchemy.orm import Session

from tollgate.services.usage.domain.horizon import kept_spans
from tollgate.services.usage.repository import rowcount
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import dirty_buckets, events, purge_horizons


def move_horizon(
    session: Session, tenant_id: str, before_us: int, now_us: int, *, storage: Storage
) -> tuple[int | None, int]:
    """Raise the tenant's horizon to `before_us` (never lower it): (the horizon before, the one now in force)."""
    storage.lock_for_purge(session, tenant_id)
    previous = horizon(session, tenant_id)
    upsert = storage.insert(purge_horizons)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={
                "purged_before_us": storage.greatest(
                    purge_horizons.c.purged_before_us, upsert.excluded.purged_before_us
                ),
                "purged_at_us": upsert.excluded.purged_at_us,
            },
        ),
        dict(tenant_id=tenant_id, purged_before_us=before_us, purged_at_us=now_us),
    )
    in_force = horizon(session, tenant_id)
    assert in_force is not None  # the upsert above wrote it
    return previous, in_force


HORIZON = select(purge_horizons.c.purged_before_us).where(
    purge_horizons.c.tenant_id == bindparam("tenant_id", type_=String)
)


def horizon(session: Session, tenant_id: str) -> int | None:
    return session.execute(HORIZON, {"tenant_id": tenant_id}).scalar_one_or_none()


def tenants_with_events_before(session: Session, before_us: int) -> list[str]:
    statement = (
        select(events.c.tenant_id).distinct().where(events.c.occurred_at_us < before_us).order_by(events.c.tenant_id)
    )
    return list(session.execute(statement).scalars())


def oldest_event_from(session: Session, tenant_id: str, low_us: int | None, before_us: int) -> int | None:
    """The instant of the tenant's oldest event in [low_us, before_us), or None."""
    statement = select(func.min(events.c.occurred_at_us)).where(
        events.c.tenant_id == tenant_id, events.c.occurred_at_us < before_us
    )
    if low_us is not None:
        statement = statement.where(events.c.occurred_at_us >= low_us)
    return session.execute(statement).scalar_one()


def _in_dirty_buckets(session: Session, tenant_id: str, low_us: int, high_us: int):
    """A condition true for events inside any dirty bucket (of any period) overlapping [low, high)."""
    marks = (
        session.execute(
            select(dirty_buckets.c.metric, dirty_buckets.c.period, dirty_buckets.c.period_start_us).where(
                dirty_buckets.c.tenant_id == tenant_id, dirty_buckets.c.period_start_us < high_us
            )
        )
        .tuples()
        .all()
    )
    clauses = [
        and_(events.c.metric == metric, events.c.occurred_at_us >= start, events.c.occurred_at_us < end)
        for metric, spans in kept_spans(marks, low_us, high_us).items()
        for start, end in spans
    ]
    return or_(*clauses) if clauses else None


def purgeable(session: Session, tenant_id: str, low_us: int, high_us: int, *, delete: bool) -> int:
    """Delete (or, with delete=False, count) the tenant's events in [low, high) outside dirty buckets."""
    where = [events.c.tenant_id == tenant_id, events.c.occurred_at_us >= low_us, events.c.occurred_at_us < high_us]
    dirty = _in_dirty_buckets(session, tenant_id, low_us, high_us)
    if dirty is not None:
        where.append(not_(dirty))
    if delete:
        return rowcount(session.execute(events.delete().where(*where)))
    return session.execute(select(func.count()).select_from(events).where(*where)).scalar_one()


def count_before(session: Session, tenant_id: str, before_us: int) -> int:
    return session.execute(
        select(func.count())
        .select_from(events)
        .where(events.c.tenant_id == tenant_id, events.c.occurred_at_us < before_us)
    ).scalar_one()
