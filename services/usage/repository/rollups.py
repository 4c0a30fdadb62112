"""SQL of rollups: mark buckets dirty, claim them, recompute them from raw events, read aggregates."""

from __future__ import annotations

import hashlib

from sqlalchemy import and_, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from services.usage.buckets import Period, next_start
from services.usage.repository import is_postgres
from services.usage.tables import aggregates, dirty_buckets, events, rollup_runs

_KEY = ("tenant_id", "metric", "period", "period_start_us")


def _insert(session, table):
    return (postgresql.insert if is_postgres(session) else sqlite.insert)(table)


def mark_dirty(session, tenant_id: str, buckets: set[tuple[str, int, int]], now_us: int) -> None:
    """Mark (metric, period, start) buckets dirty in one statement, in key order.

    DO UPDATE (not DO NOTHING) on purpose: on PostgreSQL it waits for a rollup holding the row and,
    once that rollup deleted it, inserts it again, so an event committed after the rollup read the
    bucket always leaves it dirty.
    """
    if not buckets:
        return
    rows = [dict(tenant_id=tenant_id, metric=m, period=p, period_start_us=s, marked_at_us=now_us)
            for m, p, s in sorted(buckets)]
    statement = _insert(session, dirty_buckets)
    statement = statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={"marked_at_us": func.max(statement.excluded.marked_at_us, dirty_buckets.c.marked_at_us)
              if not is_postgres(session) else func.greatest(statement.excluded.marked_at_us,
                                                             dirty_buckets.c.marked_at_us)})
    session.execute(statement, rows)


def claim_dirty(session, tenant_id: str | None, limit: int) -> list[tuple]:
    """Up to `limit` dirty buckets nobody else is recomputing: (tenant, metric, period, start, marked_at)."""
    statement = select(dirty_buckets).order_by(*[dirty_buckets.c[k] for k in _KEY]).limit(limit)
    if tenant_id:
        statement = statement.where(dirty_buckets.c.tenant_id == tenant_id)
    if is_postgres(session):
        statement = statement.with_for_update(skip_locked=True)
    return [tuple(row) for row in session.execute(statement)]


def recompute(session, tenant_id: str, metric: str, period: int, start_us: int, now_us: int) -> None:
    """Recompute one bucket from raw events and store it (deterministic: same events, same row)."""
    end_us = next_start(Period(period), start_us)
    # Byte order of event ids on both dialects (SQLite compares with memcmp; "C" on PostgreSQL).
    order = literal_column('events.event_id COLLATE "C"') if is_postgres(session) else events.c.event_id
    statement = select(events.c.event_id, events.c.content_hash, events.c.quantity) \
        .where(events.c.tenant_id == tenant_id, events.c.metric == metric,
               events.c.occurred_at_us >= start_us, events.c.occurred_at_us < end_us).order_by(order)
    digest, total, count = hashlib.sha256(), 0, 0
    for event_id, content_hash, quantity in session.execute(statement):
        digest.update(f"{event_id}:{content_hash}\n".encode())
        total += quantity
        count += 1
    row = dict(tenant_id=tenant_id, metric=metric, period=period, period_start_us=start_us, total_quantity=total,
               event_count=count, source_hash=digest.hexdigest(), computed_at_us=now_us)
    upsert = _insert(session, aggregates)
    session.execute(upsert.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={k: upsert.excluded[k] for k in ("total_quantity", "event_count", "source_hash", "computed_at_us")}),
        row)


def clear_dirty(session, claimed: tuple) -> None:
    """Delete the dirty mark only if no event re-marked it since it was claimed."""
    tenant_id, metric, period, start_us, marked_at_us = claimed
    session.execute(dirty_buckets.delete().where(
        dirty_buckets.c.tenant_id == tenant_id, dirty_buckets.c.metric == metric,
        dirty_buckets.c.period == period, dirty_buckets.c.period_start_us == start_us,
        dirty_buckets.c.marked_at_us == marked_at_us))


def record_run(session, tenant_id: str | None, now_us: int, buckets: int) -> None:
    upsert = _insert(session, rollup_runs)
    session.execute(upsert.on_conflict_do_update(
        index_elements=["tenant_id"], set_={"last_run_us": upsert.excluded.last_run_us,
                                            "last_run_buckets": upsert.excluded.last_run_buckets}),
        dict(tenant_id=tenant_id or "", last_run_us=now_us, last_run_buckets=buckets))


def dirty_summary(session, tenant_id: str | None) -> tuple[int, int | None]:
    """(dirty bucket count, oldest marked_at) of one tenant or of all."""
    statement = select(func.count(), func.min(dirty_buckets.c.marked_at_us))
    if tenant_id:
        statement = statement.where(dirty_buckets.c.tenant_id == tenant_id)
    count, oldest = session.execute(statement).one()
    return int(count), oldest


def last_run(session, tenant_id: str | None) -> tuple[int, int] | None:
    """(last_run_us, buckets) of the latest run covering the scope (a tenant's own or an all-tenant run)."""
    scopes = ["", tenant_id] if tenant_id else [""]
    statement = select(rollup_runs.c.last_run_us, rollup_runs.c.last_run_buckets) \
        .where(rollup_runs.c.tenant_id.in_(scopes)).order_by(rollup_runs.c.last_run_us.desc()).limit(1)
    row = session.execute(statement).first()
    return (row[0], row[1]) if row else None


def list_aggregates(session, tenant_id: str, metric: str, period: int, start_us: int | None, end_us: int | None,
                    *, after: int | None, limit: int) -> list[tuple]:
    """Aggregate rows with a dirty flag, oldest first, resuming after the bucket starting at `after`."""
    joined = aggregates.outerjoin(dirty_buckets, and_(*[aggregates.c[k] == dirty_buckets.c[k] for k in _KEY]))
    statement = select(aggregates, dirty_buckets.c.marked_at_us.is_not(None).label("dirty")).select_from(joined) \
        .where(aggregates.c.tenant_id == tenant_id, aggregates.c.metric == metric, aggregates.c.period == period) \
        .order_by(aggregates.c.period_start_us).limit(limit)
    if start_us is not None:
        statement = statement.where(aggregates.c.period_start_us >= start_us)
    if end_us is not None:
        statement = statement.where(aggregates.c.period_start_us < end_us)
    if after is not None:
        statement = statement.where(aggregates.c.period_start_us > after)
    return [row for row in session.execute(statement)]
