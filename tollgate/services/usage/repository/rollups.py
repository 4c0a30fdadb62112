"""SQL of rollups: mark buckets dirty, recompute them from raw events, read aggregates.

source_hash, the digest of the events a bucket covers, is the same function of the events on both backends
(domain/digests.py defines it). H is PostgreSQL's hashtextextended(b, 0): Bob Jenkins' lookup3
hash_bytes_extended of the bytes with seed 0, as PostgreSQL computes it on a little-endian machine in a
UTF-8 database; `pg_hash_text` ports it to Python for SQLite, and the tests hold it to PostgreSQL's.
Aggregates stored under the previous definition (SHA-256 of sorted lines, 64 digits) get the new digest
when next recomputed.

On PostgreSQL a rollup runs in passes (repository/postgres/rollup_pass.py), on SQLite in short steps
(repository/sqlite/rollup_serial.py): both recompute days with their hours from raw events and fold weeks and
months from days, and give the same totals. A bucket whose total does not fit in a BIGINT (MAX_TOTAL, in
domain/buckets.py) is never stored: it keeps its mark and is reported as a RefusedBucket, and every other
bucket is rolled up as usual.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from sqlalchemy import Connection, Integer, and_, bindparam, cast, func, literal_column, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from tollgate.services.usage.domain import digests
from tollgate.services.usage.domain.buckets import HOUR_US, Period, holds_hour, start_of
from tollgate.services.usage.domain.queries import Aggregate
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import aggregates, dirty_buckets, rollup_runs
from tollgate.shared import driver

_KEY = ("tenant_id", "metric", "period", "period_start_us")
_MARK = (*_KEY, "marked_at_us", "dirty_hours", "fresh_hours")


class RefusedBucket(NamedTuple):
    """A bucket a rollup could not store: its total does not fit in a BIGINT."""

    tenant_id: str
    metric: str
    period: int
    period_start_us: int
    total_quantity: int


class RollupOutcome(NamedTuple):
    """What a rollup run did: buckets recomputed, and those it left dirty because their totals do not fit."""

    done: int
    refused: list[RefusedBucket]


def bit(bits, hour):
    """Bit `hour` of the integer `bits` (0 or 1): of a day mark's dirty_hours, whether it names that hour."""
    return bits.op(">>")(cast(hour, Integer)).op("&")(literal_column("1"))


def mark_dirty(
    session: Session, tenant_id: str, buckets: dict[tuple[str, Period, int], int], now_us: int, *, storage: Storage
) -> None:
    """Mark (metric, period, start) buckets dirty, with their dirty hours (bits), in key order, in one round trip.

    DO UPDATE (not DO NOTHING) on purpose: on PostgreSQL it waits for a rollup holding the row and,
    once that rollup deleted it, inserts it again, so an event committed after the rollup read the
    bucket always leaves it dirty; and it writes a new version of a mark that was there, which tells a
    pass's apply (postgres/rollup_pass.py) that the bucket changed. The hours add to those already marked, and
    to those marked since the mark was last narrowed (fresh_hours, in the same row: no other write);
    marked_at stays the time the bucket became dirty, so the backlog's age grows while it waits, however
    many events keep arriving.
    """
    if not buckets:
        return
    rows = [
        dict(
            tenant_id=tenant_id,
            metric=m,
            period=p,
            period_start_us=s,
            marked_at_us=now_us,
            dirty_hours=bits,
            fresh_hours=bits,
        )
        for (m, p, s), bits in sorted(buckets.items())
    ]
    driver.many(session.connection(), _mark_statement(storage.insert), rows)


@functools.cache
def _mark_statement(insert) -> Executable:
    """mark_dirty's upsert, built once per backend's `insert` (its parameters are bound at each execution)."""
    values = {name: bindparam(name, type_=dirty_buckets.c[name].type) for name in _MARK}
    statement = insert(dirty_buckets).values(values)
    return statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={
            "dirty_hours": dirty_buckets.c.dirty_hours.op("|")(statement.excluded.dirty_hours),
            "fresh_hours": dirty_buckets.c.fresh_hours.op("|")(statement.excluded.fresh_hours),
        },
    )


def record_run(session: Session, tenant_id: str | None, now_us: int, buckets: int, *, storage: Storage) -> None:
    upsert = storage.insert(rollup_runs)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={"last_run_us": upsert.excluded.last_run_us, "last_run_buckets": upsert.excluded.last_run_buckets},
        ),
        dict(tenant_id=tenant_id or "", last_run_us=now_us, last_run_buckets=buckets),
    )


def dirty_summary(session: Session, tenant_id: str | None) -> tuple[int, int | None]:
    """(dirty bucket count, oldest marked_at) of one tenant or of all."""
    statement = select(func.count(), func.min(dirty_buckets.c.marked_at_us))
    if tenant_id:
        statement = statement.where(dirty_buckets.c.tenant_id == tenant_id)
    count, oldest = session.execute(statement).one()
    return int(count), oldest


def last_run(session: Session, tenant_id: str | None) -> tuple[int, int] | None:
    """(last_run_us, buckets) of the latest run covering the scope (a tenant's own or an all-tenant run)."""
    scopes = ["", tenant_id] if tenant_id else [""]
    statement = (
        select(rollup_runs.c.last_run_us, rollup_runs.c.last_run_buckets)
        .where(rollup_runs.c.tenant_id.in_(scopes))
        .order_by(rollup_runs.c.last_run_us.desc())
        .limit(1)
    )
    row = session.execute(statement).first()
    return (row[0], row[1]) if row else None


def list_aggregates(
    connection: Connection,
    tenant_id: str,
    metric: str,
    period: Period,
    start_us: int | None,
    end_us: int | None,
    *,
    after: int | None,
    limit: int,
) -> list[Aggregate]:
    """Buckets of one period with a dirty flag, oldest first, resuming after the bucket starting at `after`."""
    if period is Period.HOUR:
        return _list_hours(connection, tenant_id, metric, start_us, end_us, after=after, limit=limit)
    return [
        Aggregate(
            r.tenant_id,
            r.metric,
            period,
            r.period_start_us,
            r.total_quantity,
            r.event_count,
            r.source_hash,
            r.computed_at_us,
            bool(r.dirty),
        )
        for r in _rows(connection, tenant_id, metric, period, start_us, end_us, after=after, limit=limit)
    ]


def _rows(
    connection: Connection,
    tenant_id: str,
    metric: str,
    period: Period,
    start_us: int | None,
    end_us: int | None,
    *,
    after: int | None,
    limit: int,
) -> list:
    """Stored rows of one period (day rows with their hours) and whether each is marked dirty."""
    joined = aggregates.outerjoin(dirty_buckets, and_(*[aggregates.c[k] == dirty_buckets.c[k] for k in _KEY]))
    statement = (
        select(aggregates, dirty_buckets.c.marked_at_us.is_not(None).label("dirty"), dirty_buckets.c.dirty_hours)
        .select_from(joined)
        .where(aggregates.c.tenant_id == tenant_id, aggregates.c.metric == metric, aggregates.c.period == int(period))
        .order_by(aggregates.c.period_start_us)
        .limit(limit)
    )
    if start_us is not None:
        statement = statement.where(aggregates.c.period_start_us >= start_us)
    if end_us is not None:
        statement = statement.where(aggregates.c.period_start_us < end_us)
    if after is not None:
        statement = statement.where(aggregates.c.period_start_us > after)
    return list(connection.execute(statement))


def _list_hours(
    connection: Connection,
    tenant_id: str,
    metric: str,
    start_us: int | None,
    end_us: int | None,
    *,
    after: int | None,
    limit: int,
) -> list[Aggregate]:
    """Hours with events, unpacked from their day rows; an hour is dirty when its bit of its day's mark is set
    (the day row still holds for the others: see tables.dirty_buckets)."""
    low = max((v for v in (start_us, None if after is None else after + 1) if v is not None), default=None)
    found: list[Aggregate] = []
    day_after = None
    while len(found) < limit:
        first_day = None if low is None else start_of(Period.DAY, low)
        days = _rows(connection, tenant_id, metric, Period.DAY, first_day, end_us, after=day_after, limit=limit)
        for day in days:
            for offset, quantity, count, digest in sorted(
                zip(day.hour_offsets or (), day.hour_quantities or (), day.hour_counts or (), day.hour_digests or ())
            ):
                start = day.period_start_us + offset * HOUR_US
                if (low is None or start >= low) and (end_us is None or start < end_us):
                    found.append(
                        Aggregate(
                            tenant_id,
                            metric,
                            Period.HOUR,
                            start,
                            quantity,
                            count,
                            digests.shown(int(digest)),
                            day.computed_at_us,
                            bool(day.dirty) and holds_hour(day.dirty_hours, offset),
                        )
                    )
        if len(days) < limit:
            break
        day_after = days[-1].period_start_us
    return found[:limit]
