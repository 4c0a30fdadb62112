"""SQL of a rollup on SQLite: dirty marks recomputed in key order, a bounded amount of work per transaction.

Every transaction of Usage's SQLite engine holds the database's one write lock from its BEGIN, so
nothing changes under it: a step reads the marks, the events and the stored rows it needs, writes the
buckets it finished and their marks, and commits, in one transaction. What bounds a step is the rows it
reads (`budget`), not the buckets it finishes, so that a reader or an ingest waits at most one short
step. Each step resumes after the last mark the previous one finished (`after`), in key order
(tenant, metric, period, start), so a series' days come before its weeks and months.

- A day is recomputed hour by hour: its dirty hours (bits of its mark; all 24 when it has no stored
  row yet) from raw events, the others kept from its row, which still holds for them (see
  tables.dirty_buckets). When the budget runs out inside a day, the hours done so far are written into
  its row and their bits cleared; the mark keeps the rest, and the next step continues the same day.
- A week or a month is folded from its days, as on PostgreSQL: the stored row of each day without a
  mark, and for a marked day its row's clean hours and its dirty hours' raw events. A fold reads at
  most 31 rows and the few events of days marked again since their own recompute.

A bucket whose total does not fit in a BIGINT is not stored: its mark stays, and it is returned as
refused, for the caller to report; the step goes on past it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import select, tuple_
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from tollgate.services.usage.domain import digests, meter_rollups
from tollgate.services.usage.domain.aggregations import Sample
from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US, MAX_TOTAL, Period, hours_in, next_start
from tollgate.services.usage.domain.marks import recomputed_hours
from tollgate.services.usage.repository import meter_memory
from tollgate.services.usage.repository.meters import rolled_up_metrics
from tollgate.services.usage.repository.rollups import RefusedBucket
from tollgate.services.usage.repository.sqlite.source_hash import pg_hash_text
from tollgate.services.usage.tables import HOUR_COLUMNS, aggregates, dirty_buckets, events, meter_days, meter_versions

_KEY = ("tenant_id", "metric", "period", "period_start_us")
_MARKS_PER_READ = 100
_Hours = dict[int, tuple[int, int, int]]  # offset -> (quantity, event count, digest)


@dataclass
class Step:
    """What one transaction did: marks cleared, buckets refused, where the next resumes, and whether any mark is left
    after it."""

    done: int = 0
    refused: list[RefusedBucket] = field(default_factory=list)
    after: tuple | None = None
    finished: bool = False


def roll_up_step(
    session: Session, tenant_id: str | None, after: tuple | None, *, budget: int, max_buckets: int, now_us: int
) -> Step:
    """Recompute marks after the key `after` until `budget` rows were read or `max_buckets` (0: any) cleared."""
    step, spent = Step(after=after), 0
    rolled_up = rolled_up_metrics(session)
    while spent < budget and (not max_buckets or step.done < max_buckets):
        marks = _marks_after(session, tenant_id, step.after)
        if not marks:
            step.finished = True
            return step
        for tenant, metric, period, start_us, dirty_hours in marks:
            if spent >= budget or (max_buckets and step.done >= max_buckets):
                return step
            if period == Period.DAY:
                read, left, total = _day(session, tenant, metric, start_us, dirty_hours, budget - spent, now_us)
                if not left and total is None:
                    read += _meter_day(session, tenant, metric, start_us, rolled_up.get(metric), now_us)
                elif total is None:  # the mark now names only the hours left; the meter rows lack events of others
                    _drop_meter_day(session, tenant, metric, start_us)
                if total is None:
                    _new_version(session, tenant, metric, start_us)
            else:
                read, left, total = _fold(session, tenant, metric, Period(period), start_us, now_us)
            spent += read
            if total is not None:
                step.refused.append(RefusedBucket(tenant, metric, period, start_us, total))
            elif left:
                return step  # the same day again, in the next step
            else:
                _clear(session, tenant, metric, period, start_us)
                step.done += 1
            step.after = (tenant, metric, period, start_us)
    return step


def _marks_after(session: Session, tenant_id: str | None, after: tuple | None) -> list[tuple]:
    keys = [dirty_buckets.c[k] for k in _KEY]
    statement = select(*keys, dirty_buckets.c.dirty_hours).order_by(*keys).limit(_MARKS_PER_READ)
    if tenant_id:
        statement = statement.where(dirty_buckets.c.tenant_id == tenant_id)
    if after is not None:
        statement = statement.where(tuple_(*keys) > tuple_(*after))
    return [tuple(row) for row in session.execute(statement)]


def _day(
    session: Session, tenant: str, metric: str, start_us: int, dirty_hours: int, budget: int, now_us: int
) -> tuple[int, int, int | None]:
    """Recompute the day's dirty hours, in order, until `budget` events were read (at least one hour); store
    them in its row. (rows read, hours still dirty, the total when it does not fit, else None)."""
    stored = _stored_hours(session, tenant, metric, start_us)
    todo = recomputed_hours(dirty_hours, has_row=stored is not None)
    hours, read, done = dict(stored or {}), 1, 0
    for offset in hours_in(todo):
        if read >= budget and done:
            break
        cell = _raw_hour(session, tenant, metric, start_us + offset * HOUR_US)
        read += cell[1]
        done |= 1 << offset
        if cell[1]:
            hours[offset] = cell
        else:
            hours.pop(offset, None)
    total = sum(q for q, _, _ in hours.values())
    if total > MAX_TOTAL:
        return read, todo, total
    _store(session, tenant, metric, Period.DAY, start_us, hours, now_us)
    left = todo & ~done
    if left:
        session.execute(
            dirty_buckets.update()
            .where(*_is(dirty_buckets, tenant, metric, Period.DAY, start_us))
            .values(dirty_hours=left)
        )
    return read, left, None


def _drop_meter_day(session: Session, tenant: str, metric: str, day_us: int) -> None:
    """Delete the day's meter rows: questions read the day from raw events until its next whole rollup."""
    session.execute(
        meter_days.delete().where(
            meter_days.c.tenant_id == tenant, meter_days.c.metric == metric, meter_days.c.day_us == day_us
        )
    )


def _new_version(session: Session, tenant: str, metric: str, day_us: int) -> None:
    """The day's rollup is stored: a new version of the day (tables.meter_versions)."""
    version = meter_memory.new_version()
    session.execute(
        sqlite.insert(meter_versions)
        .values(tenant_id=tenant, metric=metric, day_us=day_us, version=version)
        .on_conflict_do_update(index_elements=["tenant_id", "metric", "day_us"], set_={"version": version})
    )


def _meter_day(session: Session, tenant: str, metric: str, day_us: int, declared: list[str] | None, now_us: int) -> int:
    """Replace the day's meter rows (domain/meter_rollups.py) with those of its events, read whole, when the metric is
    rolled up with dimensions (`declared`: its dimensions; None when it is not); the events read. Called when the
    day's mark is about to go: the rows then hold every event of the day, and a question reads them for the hours a
    later mark does not name."""
    _drop_meter_day(session, tenant, metric, day_us)
    if declared is None:
        return 0
    e = events.c
    found = session.execute(
        select(e.occurred_at_us, e.event_id, e.quantity, e.dimensions).where(
            e.tenant_id == tenant, e.metric == metric, e.occurred_at_us >= day_us, e.occurred_at_us < day_us + DAY_US
        )
    ).all()
    rows = meter_rollups.day_rows(
        day_us, ((Sample(at, event_id, q), json.loads(d) if d else {}) for at, event_id, q, d in found), declared
    )
    if any(hour.quantity > MAX_TOTAL for hours in rows.values() for hour in hours):
        return len(found)  # no rows: questions read the day from raw events, which sum beyond int64 exactly
    if rows:
        session.execute(
            meter_days.insert(),
            [
                dict(
                    tenant_id=tenant,
                    metric=metric,
                    cuboid=cuboid,
                    day_us=day_us,
                    dimensions=values,
                    hour_offsets=[h.offset for h in hours],
                    hour_quantities=[h.quantity for h in hours],
                    hour_counts=[h.events for h in hours],
                    hour_mins=[h.low for h in hours],
                    hour_maxes=[h.high for h in hours],
                    hour_latest_at=[h.latest[0] for h in hours],
                    hour_latest_ids=[h.latest[1] for h in hours],
                    hour_latest_quantities=[h.latest[2] for h in hours],
                    running_quantities=None,
                    running_counts=None,
                    computed_at_us=now_us,
                )
                for (cuboid, values), hours in rows.items()
            ],
        )
    return len(found)


def _fold(
    session: Session, tenant: str, metric: str, period: Period, start_us: int, now_us: int
) -> tuple[int, int, int | None]:
    """Store the week or month summed from its days: (rows read, 0, the total when it does not fit, else None)."""
    end_us = next_start(period, start_us)
    day = aggregates.c
    marks: dict[int, int] = dict(
        session.execute(
            select(dirty_buckets.c.period_start_us, dirty_buckets.c.dirty_hours).where(
                dirty_buckets.c.tenant_id == tenant,
                dirty_buckets.c.metric == metric,
                dirty_buckets.c.period == int(Period.DAY),
                dirty_buckets.c.period_start_us >= start_us,
                dirty_buckets.c.period_start_us < end_us,
            )
        )
        .tuples()
        .all()
    )
    rows = session.execute(
        select(
            day.period_start_us, day.total_quantity, day.event_count, day.source_hash, *[day[c] for c in HOUR_COLUMNS]
        ).where(
            day.tenant_id == tenant,
            day.metric == metric,
            day.period == int(Period.DAY),
            day.period_start_us >= start_us,
            day.period_start_us < end_us,
        )
    ).all()
    quantity, count, digest, read = 0, 0, 0, len(rows) + 1
    for row in rows:
        if row.period_start_us not in marks:
            quantity, count, digest = (
                quantity + row.total_quantity,
                count + row.event_count,
                digest + digests.value(row.source_hash),
            )
    for day_us, dirty_hours in marks.items():
        stored = next((r for r in rows if r.period_start_us == day_us), None)
        hours = _hours_of(stored) if stored is not None else {}
        for offset in hours_in(recomputed_hours(dirty_hours, has_row=stored is not None)):
            hours[offset] = _raw_hour(session, tenant, metric, day_us + offset * HOUR_US)
            read += hours[offset][1]
        for q, n, d in hours.values():
            quantity, count, digest = quantity + q, count + n, digest + d
    if quantity > MAX_TOTAL:
        return read, 0, quantity
    _write(
        session,
        dict(
            tenant_id=tenant,
            metric=metric,
            period=int(period),
            period_start_us=start_us,
            total_quantity=quantity,
            event_count=count,
            source_hash=digests.shown(digest),
            computed_at_us=now_us,
            **dict.fromkeys(HOUR_COLUMNS),
        ),
    )
    return read, 0, None


def _raw_hour(session: Session, tenant: str, metric: str, start_us: int) -> tuple[int, int, int]:
    """(quantity, event count, digest) of the hour's events."""
    quantity = count = digest = 0
    for event_id, content_hash, amount in session.execute(
        select(events.c.event_id, events.c.content_hash, events.c.quantity).where(
            events.c.tenant_id == tenant,
            events.c.metric == metric,
            events.c.occurred_at_us >= start_us,
            events.c.occurred_at_us < start_us + HOUR_US,
        )
    ):
        quantity, count = quantity + amount, count + 1
        digest += pg_hash_text(f"{event_id}:{content_hash}".encode())
    return quantity, count, digest


def _stored_hours(session: Session, tenant: str, metric: str, start_us: int) -> _Hours | None:
    row = session.execute(
        select(*[aggregates.c[c] for c in HOUR_COLUMNS]).where(*_is(aggregates, tenant, metric, Period.DAY, start_us))
    ).first()
    return None if row is None else _hours_of(row)


def _hours_of(row) -> _Hours:
    return {o: (q, n, d) for o, q, n, d in zip(*[getattr(row, c) or () for c in HOUR_COLUMNS])}


def _store(
    session: Session, tenant: str, metric: str, period: Period, start_us: int, hours: _Hours, now_us: int
) -> None:
    offsets = sorted(hours)
    digest = sum(d for _, _, d in hours.values())
    _write(
        session,
        dict(
            tenant_id=tenant,
            metric=metric,
            period=int(period),
            period_start_us=start_us,
            total_quantity=sum(q for q, _, _ in hours.values()),
            event_count=sum(n for _, n, _ in hours.values()),
            source_hash=digests.shown(digest),
            computed_at_us=now_us,
            hour_offsets=offsets,
            hour_quantities=[hours[o][0] for o in offsets],
            hour_counts=[hours[o][1] for o in offsets],
            hour_digests=[hours[o][2] for o in offsets],
        ),
    )


def _write(session: Session, row: dict) -> None:
    upsert = sqlite.insert(aggregates)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=list(_KEY),
            set_={
                k: upsert.excluded[k]
                for k in ("total_quantity", "event_count", "source_hash", "computed_at_us", *HOUR_COLUMNS)
            },
        ),
        row,
    )


def _clear(session: Session, tenant: str, metric: str, period: int, start_us: int) -> None:
    session.execute(dirty_buckets.delete().where(*_is(dirty_buckets, tenant, metric, Period(period), start_us)))


def _is(table, tenant: str, metric: str, period: Period, start_us: int) -> list:
    return [
        table.c.tenant_id == tenant,
        table.c.metric == metric,
        table.c.period == int(period),
        table.c.period_start_us == start_us,
    ]
