"""SQL of rollups: mark buckets dirty, recompute them from raw events, read aggregates.

source_hash, the digest of the events a bucket covers, is the same function of the events on both
dialects: 16 lower-case hex digits (zero-padded) of

    ( sum over the bucket's events e of H(utf8(e.event_id + ":" + e.content_hash)) ) mod 2**64

where H(b) is PostgreSQL's hashtextextended(b, 0) read as an unsigned 64-bit integer: Bob Jenkins'
lookup3 hash_bytes_extended of the bytes with seed 0, as PostgreSQL computes it on a little-endian
machine in a UTF-8 database. `pg_hash_text` ports it to Python for SQLite; the tests hold it to
PostgreSQL's. A bucket without events has "0000000000000000". The sum is a digest of the set (event
ids are unique per tenant), needs no sort, and composes: a day's is the sum of its hours', so one
read of the events serves the four periods. It detects change, not tampering (64 bits, not a
cryptographic hash). Aggregates stored under the previous definition (SHA-256 of sorted lines, 64
digits) get the new digest when next recomputed.

On PostgreSQL a rollup runs in passes (repository/rollup_pass.py): hours from raw events, days,
weeks and months folded from the level below. SQLite, whose writers are serialised, recomputes
bucket by bucket from raw events here; both give the same rows.
"""

from __future__ import annotations

from sqlalchemy import and_, func, select

from services.usage.buckets import Period, next_start
from services.usage.repository import dialect_insert, is_postgres
from services.usage.source_hash import pg_hash_text
from services.usage.tables import aggregates, dirty_buckets, events, rollup_runs

_KEY = ("tenant_id", "metric", "period", "period_start_us")


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
    statement = dialect_insert(session, dirty_buckets)
    statement = statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={"marked_at_us": func.max(statement.excluded.marked_at_us, dirty_buckets.c.marked_at_us)
              if not is_postgres(session) else func.greatest(statement.excluded.marked_at_us,
                                                             dirty_buckets.c.marked_at_us)})
    session.execute(statement, rows)


# --- SQLite: writers are serialised, so a claim is simply the first marks; one bucket at a time -------------------

def claim_dirty(session, tenant_id: str | None, limit: int) -> list[tuple]:
    """Up to `limit` dirty buckets: (tenant, metric, period, start, marked_at)."""
    statement = select(dirty_buckets).order_by(*[dirty_buckets.c[k] for k in _KEY]).limit(limit)
    if tenant_id:
        statement = statement.where(dirty_buckets.c.tenant_id == tenant_id)
    return [tuple(row) for row in session.execute(statement)]


def recompute(session, tenant_id: str, metric: str, period: int, start_us: int, now_us: int) -> None:
    """Recompute one bucket from raw events and store it (deterministic: same events, same row)."""
    end_us = next_start(Period(period), start_us)
    statement = select(events.c.event_id, events.c.content_hash, events.c.quantity) \
        .where(events.c.tenant_id == tenant_id, events.c.metric == metric,
               events.c.occurred_at_us >= start_us, events.c.occurred_at_us < end_us)
    digest, total, count = 0, 0, 0
    for event_id, content_hash, quantity in session.execute(statement):
        digest += pg_hash_text(f"{event_id}:{content_hash}".encode())
        total += quantity
        count += 1
    row = dict(tenant_id=tenant_id, metric=metric, period=period, period_start_us=start_us, total_quantity=total,
               event_count=count, source_hash=format(digest % 2**64, "016x"), computed_at_us=now_us)
    upsert = dialect_insert(session, aggregates)
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
    upsert = dialect_insert(session, rollup_runs)
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
