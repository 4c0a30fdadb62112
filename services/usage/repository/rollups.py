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

On PostgreSQL a rollup runs in passes (repository/rollup_pass.py): days with their hours from raw
events, weeks and months folded from days. SQLite, whose writers are serialised, recomputes bucket
by bucket (a day with all its hours) from raw events here; both give the same totals.
"""

from __future__ import annotations

from sqlalchemy import and_, func, select

from services.usage.buckets import DAY_US, HOUR_US, Period, next_start
from services.usage.queries import Aggregate
from services.usage.repository import dialect_insert, is_postgres
from services.usage.source_hash import pg_hash_text
from services.usage.tables import HOUR_COLUMNS, aggregates, dirty_buckets, events, rollup_runs

_KEY = ("tenant_id", "metric", "period", "period_start_us")


def mark_dirty(session, tenant_id: str, buckets: dict[tuple[str, int, int], int], now_us: int) -> None:
    """Mark (metric, period, start) buckets dirty, with their dirty hours (bits), in one statement, in key order.

    DO UPDATE (not DO NOTHING) on purpose: on PostgreSQL it waits for a rollup holding the row and,
    once that rollup deleted it, inserts it again, so an event committed after the rollup read the
    bucket always leaves it dirty. The hours add to those already marked.
    """
    if not buckets:
        return
    rows = [dict(tenant_id=tenant_id, metric=m, period=p, period_start_us=s, marked_at_us=now_us, dirty_hours=bits)
            for (m, p, s), bits in sorted(buckets.items())]
    statement = dialect_insert(session, dirty_buckets)
    greatest = func.greatest if is_postgres(session) else func.max
    statement = statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={"marked_at_us": greatest(statement.excluded.marked_at_us, dirty_buckets.c.marked_at_us),
              "dirty_hours": dirty_buckets.c.dirty_hours.op("|")(statement.excluded.dirty_hours)})
    session.execute(statement, rows)


# --- SQLite: writers are serialised, so a claim is simply the first marks; one bucket at a time -------------------

def claim_dirty(session, tenant_id: str | None, limit: int) -> list[tuple]:
    """Up to `limit` dirty buckets: (tenant, metric, period, start, marked_at, dirty_hours)."""
    statement = select(dirty_buckets).order_by(*[dirty_buckets.c[k] for k in _KEY]).limit(limit)
    if tenant_id:
        statement = statement.where(dirty_buckets.c.tenant_id == tenant_id)
    return [tuple(row) for row in session.execute(statement)]


def recompute(session, tenant_id: str, metric: str, period: int, start_us: int, now_us: int) -> None:
    """Recompute one bucket (a day with its hours) from raw events and store it (deterministic: same events,
    same row)."""
    end_us = next_start(Period(period), start_us)
    statement = select(events.c.event_id, events.c.content_hash, events.c.quantity, events.c.occurred_at_us) \
        .where(events.c.tenant_id == tenant_id, events.c.metric == metric,
               events.c.occurred_at_us >= start_us, events.c.occurred_at_us < end_us)
    hours: dict[int, list[int]] = {}  # offset -> [quantity, count, digest]
    for event_id, content_hash, quantity, occurred_at_us in session.execute(statement):
        cell = hours.setdefault((occurred_at_us - start_us) // HOUR_US, [0, 0, 0])
        cell[0] += quantity
        cell[1] += 1
        cell[2] += pg_hash_text(f"{event_id}:{content_hash}".encode())
    digest = sum(cell[2] for cell in hours.values())
    row = dict(tenant_id=tenant_id, metric=metric, period=period, period_start_us=start_us,
               total_quantity=sum(cell[0] for cell in hours.values()),
               event_count=sum(cell[1] for cell in hours.values()), source_hash=format(digest % 2**64, "016x"),
               computed_at_us=now_us, **dict.fromkeys(HOUR_COLUMNS))
    if period == Period.DAY:
        offsets = sorted(hours)
        row.update(hour_offsets=offsets, hour_quantities=[hours[o][0] for o in offsets],
                   hour_counts=[hours[o][1] for o in offsets], hour_digests=[hours[o][2] for o in offsets])
    upsert = dialect_insert(session, aggregates)
    session.execute(upsert.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={k: upsert.excluded[k] for k in ("total_quantity", "event_count", "source_hash", "computed_at_us",
                                              *HOUR_COLUMNS)}),
        row)


def clear_dirty(session, claimed: tuple) -> None:
    """Delete the dirty mark only if no event re-marked it since it was claimed."""
    tenant_id, metric, period, start_us, marked_at_us = claimed[:5]
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


def list_aggregates(session, tenant_id: str, metric: str, period: Period, start_us: int | None,
                    end_us: int | None, *, after: int | None, limit: int) -> list[Aggregate]:
    """Buckets of one period with a dirty flag, oldest first, resuming after the bucket starting at `after`."""
    if period is Period.HOUR:
        return _list_hours(session, tenant_id, metric, start_us, end_us, after=after, limit=limit)
    return [Aggregate(r.tenant_id, r.metric, period, r.period_start_us, r.total_quantity, r.event_count,
                      r.source_hash, r.computed_at_us, bool(r.dirty))
            for r in _rows(session, tenant_id, metric, period, start_us, end_us, after=after, limit=limit)]


def _rows(session, tenant_id: str, metric: str, period: Period, start_us: int | None, end_us: int | None, *,
          after: int | None, limit: int) -> list:
    """Stored rows of one period (day rows with their hours) and whether each is marked dirty."""
    joined = aggregates.outerjoin(dirty_buckets, and_(*[aggregates.c[k] == dirty_buckets.c[k] for k in _KEY]))
    statement = select(aggregates, dirty_buckets.c.marked_at_us.is_not(None).label("dirty"),
                       dirty_buckets.c.dirty_hours).select_from(joined) \
        .where(aggregates.c.tenant_id == tenant_id, aggregates.c.metric == metric, aggregates.c.period == int(period)) \
        .order_by(aggregates.c.period_start_us).limit(limit)
    if start_us is not None:
        statement = statement.where(aggregates.c.period_start_us >= start_us)
    if end_us is not None:
        statement = statement.where(aggregates.c.period_start_us < end_us)
    if after is not None:
        statement = statement.where(aggregates.c.period_start_us > after)
    return list(session.execute(statement))


def _list_hours(session, tenant_id: str, metric: str, start_us: int | None, end_us: int | None, *,
                after: int | None, limit: int) -> list[Aggregate]:
    """Hours with events, unpacked from their day rows; an hour is dirty when its bit of its day's mark is set
    (the day row still holds for the others: see tables.dirty_buckets)."""
    low = max((v for v in (start_us, None if after is None else after + 1) if v is not None), default=None)
    found, day_after = [], None
    while len(found) < limit:
        days = _rows(session, tenant_id, metric, Period.DAY, None if low is None else low - low % DAY_US, end_us,
                     after=day_after, limit=limit)
        for day in days:
            for offset, quantity, count, digest in sorted(zip(day.hour_offsets or (), day.hour_quantities or (),
                                                              day.hour_counts or (), day.hour_digests or ())):
                start = day.period_start_us + offset * HOUR_US
                if (low is None or start >= low) and (end_us is None or start < end_us):
                    found.append(Aggregate(tenant_id, metric, Period.HOUR, start, quantity, count,
                                           format(int(digest) % 2**64, "016x"), day.computed_at_us,
                                           bool(day.dirty) and bool(day.dirty_hours >> offset & 1)))
        if len(days) < limit:
            break
        day_after = days[-1].period_start_us
    return found[:limit]
