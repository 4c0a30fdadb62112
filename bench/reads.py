"""Rollup of a cold backlog and GetUsage latency, each beside its reference measured in the same run.

One fresh PostgreSQL database holds EVENTS events of 100 tenants over 35 days ending now (five
metrics of the default catalog, eight actors), written straight into usage.events with COPY in
time order (as live ingest leaves the heap), plus the dirty marks ingest would have written (every
event's day, with all its hours, ISO week and month). It is dropped at the end, also after a failure.

1. Data generation, in events/s (COPY into the table without its indexes, then the indexes rebuilt,
   two at a time).
2. Cold backlog: tollgate.services.usage.service.rollups.roll_up(sessions, None) over every dirty bucket,
   beside the bare hourly GROUP BY over the same rows (its result consumed on the server, so that
   neither side pays for shipping rows to Python; run before and after the rollup, averaged); then no
   dirty bucket may be left and each period's aggregates must add up to the events. For scale, the
   write part alone: the same aggregates upserted again in one statement.
3. A 30-day GetUsage through gRPC from Usage in its own process, as deployed (every metric,
   [now - 30 d, now): edges not bucket-aligned) over rotating tenants, beside (a) the raw GROUP BY of
   the same question run directly on PostgreSQL and (b) an empty unary RPC on the same server
   (grpc.health.v1.Health/Check), timed in alternation with GetUsage, call for call, so that both see
   the same machine. GetUsage's answers must equal the raw GROUP BY's.
4. The same GetUsage after LATE_EVENTS late events recorded through RecordEvents without a rollup:
   reads stay exact with dirty buckets.
5. The rollup of those late events' buckets, beside reading the raw events of the months they touch
   (what recomputing each dirty month from raw events would read).
Latencies are of sequential calls; a case stops after CASE_SECONDS if it is slow (at least 200 calls).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import timing, tokens
from bench.processes import UsageProcess
from scripts.pgcluster import create_postgres_database, drop_postgres_database
from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US
from tollgate.services.usage.domain.catalog import DEFAULT_CATALOG
from tollgate.services.usage.repository.ingest import COLUMNS
from tollgate.services.usage.server import storage_for
from tollgate.services.usage.service import rollups
from tollgate.services.usage.tables import aggregates
from tollgate.shared import migrate
from tollgate.shared.db import create_engine_for, normalize_url, session_factory
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

T = TypeVar("T")

EVENTS = int(os.environ.get("BENCH_READS_EVENTS", "2000000"))
TENANTS = [f"tenant-{n:03d}" for n in range(100)]
METRICS = ["api.requests", "leads.processed", "scoring.requests", "voice.minutes.authorized", "sla.timers.started"]
ACTORS = [f"user-{n}" for n in range(8)]
DAYS = 35
CALLS, WARMUP, RAW_CALLS, CHECKED_TENANTS, LATE_EVENTS = 5000, 200, 600, 10, 400
CASE_SECONDS = float(os.environ.get("BENCH_READS_CASE_SECONDS", "20"))  # a slow case stops early (>= 200 calls)
_CLASSIFICATION = {m.name: m.classification.name for m in DEFAULT_CATALOG if m.classification}
_GROUP_BY_HOUR = (
    "SELECT count(*), sum(q), sum(n) FROM (SELECT tenant_id, metric, "
    "occurred_at_us - occurred_at_us % 3600000000, sum(quantity) AS q, count(*) AS n "
    'FROM "usage".events GROUP BY 1, 2, 3) AS hours'
)
_RAW_30_DAYS = (
    'SELECT metric, sum(quantity), count(*) FROM "usage".events '
    "WHERE tenant_id = %s AND occurred_at_us >= %s AND occurred_at_us < %s GROUP BY metric"
)
# Hourly sums and digests of the raw events of every (tenant, metric, month) with a dirty mark: what a
# rollup recomputing its months from raw events (this service's first design) computed.
_MONTHS_OF_MARKS = """
SELECT count(*), sum(events) FROM (
    SELECT e.tenant_id, e.metric, e.occurred_at_us - e.occurred_at_us % 3600000000, count(*) AS events,
           sum(quantity), sum(hashtextextended(e.event_id || ':' || e.content_hash, 0))
    FROM (SELECT DISTINCT tenant_id, metric, period_start_us AS low,
              (extract(epoch FROM (to_timestamp(period_start_us / 1e6) AT TIME ZONE 'UTC') + interval '1 month')
               * 1000000)::bigint AS high FROM "usage".dirty_buckets WHERE period = 4) AS m
    JOIN "usage".events AS e ON e.tenant_id = m.tenant_id AND e.metric = m.metric AND e.occurred_at_us >= m.low
     AND e.occurred_at_us < m.high
    GROUP BY 1, 2, 3) AS hours"""
# The marks RecordEvents writes for each accepted event (services/usage/service/ingest.py), set-based:
# its day (whose row holds its hours), ISO week and month.
_MARK_EVERY_BUCKET = """
INSERT INTO "usage".dirty_buckets (tenant_id, metric, period, period_start_us, marked_at_us)
SELECT DISTINCT tenant_id, metric, b.period, b.start, %(now)s::bigint
FROM (SELECT DISTINCT tenant_id, metric, occurred_at_us - occurred_at_us %% 86400000000 AS day
      FROM "usage".events) AS d
CROSS JOIN LATERAL (VALUES
    (2, d.day),
    (3, d.day - (d.day + 259200000000) %% 604800000000),
    (4, (extract(epoch FROM date_trunc('month', to_timestamp(d.day / 1e6) AT TIME ZONE 'UTC'))
         * 1000000)::bigint)) AS b (period, start)
"""


def run(admin_url: str) -> None:
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    try:
        migrate.upgrade("usage", url)
        now_us = int(time.time() * 1_000_000)
        _generate(url, now_us)
        _cold_backlog(url)
        _settle(url)
        usage = UsageProcess(url)
        try:
            with (
                grpc.insecure_channel(f"127.0.0.1:{usage.port}") as channel,
                psycopg.connect(_pg(url), autocommit=True) as raw,
            ):
                token = tokens.token(url, {"usage:read", "usage:write"})
                _reads(channel, (("authorization", f"Bearer {token}"),), raw)
                _late_rollup(url, raw)
        finally:
            usage.stop()
    finally:
        drop_postgres_database(admin_url, url)


def _settle(url: str) -> None:
    """VACUUM ANALYZE, as autovacuum does within a minute (sooner for dirty_buckets, see migration
    usage_0004): the cold rollup left 22,000 dead dirty marks that every read's "is this bucket
    dirty?" probe would otherwise step over, and the planner has no statistics of the aggregates."""
    with psycopg.connect(_pg(url), autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute("VACUUM ANALYZE")
        print(f"  VACUUM ANALYZE after the rollup: {time.perf_counter() - started:.1f} s")


def _pg(url: str) -> str:
    return normalize_url(url).replace("postgresql+psycopg://", "postgresql://")


def _lines(now_us: int, first: int, count: int) -> str:
    """COPY text of events first..first+count-1: in time order, tenants and metrics spread evenly."""
    start_us, step = now_us - DAYS * DAY_US, DAYS * DAY_US // EVENTS
    lines = []
    for n in range(first, first + count):
        mixed = (n * 2654435761) & 0xFFFFFFFF
        tenant, metric, actor = TENANTS[mixed % 100], METRICS[mixed // 100 % 5], ACTORS[mixed // 500 % 8]
        quantity, at_us = 1 + mixed // 4000 % 10, start_us + n * step + mixed % step
        content = hashlib.sha256(f"{metric}\0{quantity}\0{at_us}\0{actor}\0bench\0\0".encode()).hexdigest()
        lines.append(
            f"{tenant}\te{n:09d}\t{metric}\t{quantity}\t{at_us}\t{actor}\tbench\t\\N\t\\N\t\\N\t"
            f"{_CLASSIFICATION[metric]}\t{content}\t{at_us}\tt\t\\N\n"
        )
    return "".join(lines)


def _generate(url: str, now_us: int) -> None:
    """Events by COPY into the bare table, indexes rebuilt, dirty marks as ingest writes them."""
    steps = {}
    with psycopg.connect(_pg(url), autocommit=True) as connection:
        connection.execute("SET work_mem = '256MB'")
        connection.execute("SET jit = off")
        started = time.perf_counter()
        indexes = _drop_indexes(connection)
        with (
            connection.cursor() as cursor,
            cursor.copy(f'COPY "usage".events ({", ".join(COLUMNS)}) FROM STDIN') as copy,
        ):
            for first in range(0, EVENTS, 50_000):
                copy.write(_lines(now_us, first, min(50_000, EVENTS - first)))
        steps["COPY"] = time.perf_counter() - started
        _rebuild_indexes(url, connection, indexes)
        steps["indexes"] = time.perf_counter() - started - sum(steps.values())
        connection.execute(_MARK_EVERY_BUCKET, {"now": now_us})
        steps["dirty marks"] = time.perf_counter() - started - sum(steps.values())
        connection.execute('VACUUM ANALYZE "usage".events')
        connection.execute('VACUUM ANALYZE "usage".dirty_buckets')
        steps["VACUUM ANALYZE"] = time.perf_counter() - started - sum(steps.values())
        dirty = _dirty_marks(connection)
    elapsed = sum(steps.values())
    print(
        f"data: {EVENTS:,} events, {len(TENANTS)} tenants, {len(METRICS)} metrics, {len(ACTORS)} actors, "
        f"{DAYS} days ending now; {dirty:,} dirty buckets"
    )
    print(
        f"  generated in {elapsed:.1f} s: {EVENTS / elapsed:,.0f} events/s ("
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps.items())
        + ")"
    )


def _drop_indexes(connection) -> list[tuple]:
    """Drop the indexes (and the unique constraints they back) of usage.events; return how to rebuild them."""
    indexes = connection.execute(
        "SELECT index.relname, pg_get_indexdef(index.oid), con.conname, con.contype FROM pg_index AS x "
        "JOIN pg_class AS index ON index.oid = x.indexrelid "
        "LEFT JOIN pg_constraint AS con ON con.conindid = x.indexrelid AND con.conrelid = x.indrelid "
        "WHERE x.indrelid = '\"usage\".events'::regclass"
    ).fetchall()
    for name, _, constraint, _ in indexes:
        connection.execute(
            f'ALTER TABLE "usage".events DROP CONSTRAINT "{constraint}"'
            if constraint
            else f'DROP INDEX "usage"."{name}"'
        )
    return indexes


def _rebuild_indexes(url: str, connection, indexes: list[tuple]) -> None:
    """Build the indexes two at a time (one connection each), then attach the constraints to theirs."""

    def build(definition: str) -> None:
        with psycopg.connect(_pg(url), autocommit=True) as builder:
            builder.execute("SET maintenance_work_mem = '256MB'")
            builder.execute(definition)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(build, [definition for _, definition, _, _ in indexes]))
    for name, _, constraint, kind in indexes:
        if constraint:
            connection.execute(
                f'ALTER TABLE "usage".events ADD CONSTRAINT "{constraint}" '
                f'{"PRIMARY KEY" if kind == "p" else "UNIQUE"} USING INDEX "{name}"'
            )


def _cold_backlog(url: str) -> None:
    """roll_up over every dirty bucket beside the bare hourly GROUP BY (measured before and after it)."""
    engine = create_engine_for(url, schema="usage", pool_size=2)
    try:
        with psycopg.connect(_pg(url), autocommit=True) as connection:
            dirty = _dirty_marks(connection)
            before = _timed_once(lambda: connection.execute(_GROUP_BY_HOUR).fetchall())
            report = _timed_once(lambda: rollups.roll_up(session_factory(engine), None, storage=storage_for(engine)))
            after = _timed_once(lambda: connection.execute(_GROUP_BY_HOUR).fetchall())
            left = _dirty_marks(connection)
            _check_periods(connection)
            floor = _timed_once(lambda: _upsert_again(connection))
    finally:
        engine.dispose()
    group_by, rollup = (before[0] + after[0]) / 2, report[0]
    assert left == 0 and report[1].buckets_remaining == 0, f"{left} dirty buckets left after the rollup"
    print(f"cold backlog: {dirty:,} dirty buckets over {EVENTS:,} events")
    print(
        f"  roll_up(sessions, None)                {rollup:8.2f} s   {report[1].buckets_recomputed:,} buckets, "
        f"{report[1].buckets_recomputed / rollup:,.0f} buckets/s; 0 dirty left"
    )
    print(f"  bare GROUP BY hour (before / after)    {group_by:8.2f} s   ({before[0]:.2f} / {after[0]:.2f})")
    print(f"  speed relative to the GROUP BY         {group_by / rollup:8.2f}x  (goal >= 0.5x)")
    print(
        f"  for scale: upserting the same {dirty:,} aggregates again, one statement, nothing computed "
        f"{floor[0]:6.2f} s ({floor[0] / group_by:.2f}x the GROUP BY)"
    )


def _check_periods(connection) -> None:
    """Each period's aggregates add up to the events table: every event counted once per period (the
    hours inside the day rows too, and the last of their running sums, as period 0)."""
    expected = connection.execute('SELECT sum(quantity), count(*) FROM "usage".events').fetchone()
    for period, quantity, count in connection.execute(
        'SELECT period, sum(total_quantity), sum(event_count) FROM "usage".aggregates GROUP BY period '
        'UNION ALL SELECT 1, sum(q), sum(n) FROM "usage".aggregates, unnest(hour_quantities, hour_counts) AS h(q, n)'
        " WHERE period = 2 UNION ALL SELECT 0, sum(hour_running_quantities[25]), sum(hour_running_counts[25]) "
        'FROM "usage".aggregates WHERE period = 2'
    ):
        assert (quantity, count) == expected, f"period {period} sums to {(quantity, count)}, events to {expected}"


def _upsert_again(connection) -> None:
    """The write part of a rollup alone: every aggregate upserted again from a copy, in one statement."""
    with connection.transaction():
        # Named columns: the running sums are generated (migration usage_0012), as a rollup's upsert leaves them.
        columns = ", ".join(column.name for column in aggregates.columns)
        connection.execute(
            f'CREATE TEMP TABLE aggregates_copy ON COMMIT DROP AS SELECT {columns} FROM "usage".aggregates'
        )
        connection.execute('TRUNCATE "usage".aggregates')
        connection.execute(
            f'INSERT INTO "usage".aggregates ({columns}) SELECT * FROM aggregates_copy ORDER BY 1, 2, 3, 4 '
            "ON CONFLICT (tenant_id, metric, period, period_start_us) DO UPDATE SET "
            "total_quantity = excluded.total_quantity, event_count = excluded.event_count, "
            "source_hash = excluded.source_hash, computed_at_us = excluded.computed_at_us"
        )


def _late_rollup(url: str, raw) -> None:
    """The rollup of the late events' dirty buckets, beside reading the raw events of the months they
    touch: what recomputing those months from raw events (the first design) had to read."""
    raw.execute(_MONTHS_OF_MARKS).fetchone()  # warm, as the rollup finds the heap after the reads above
    months_read = _timed_once(lambda: raw.execute(_MONTHS_OF_MARKS).fetchone())
    months = months_read[1][1] or 0
    engine = create_engine_for(url, schema="usage", pool_size=2)
    try:
        report = _timed_once(lambda: rollups.roll_up(session_factory(engine), None, storage=storage_for(engine)))
    finally:
        engine.dispose()
    assert report[1].buckets_remaining == 0, "dirty buckets left after the late-event rollup"
    seconds, done = report[0], report[1].buckets_recomputed
    print(f"late-event rollup: {done:,} dirty buckets of the late events above, folded from stored hours and days")
    print(f"  roll_up(sessions, None)                {seconds * 1000:8.1f} ms")
    print(
        f"  hourly sums of the months they touch   {months_read[0] * 1000:8.1f} ms   ({months:,} raw events: what "
        f"recomputing months from raw events computes) -> rollup {months_read[0] / seconds:.1f}x faster"
    )


def _dirty_marks(connection) -> int:
    return connection.execute('SELECT count(*) FROM "usage".dirty_buckets').fetchone()[0]


def _timed_once(call: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _reads(channel, metadata, raw) -> None:
    """GetUsage over 30 days beside the raw scan and an empty RPC; again after late events.

    The requests are built beforehand, so a timed call is the RPC alone, and GetUsage and the empty RPC
    are timed in alternation, so that whatever else the machine does in the meantime falls on both alike.
    """
    usage, health = usage_pb2_grpc.UsageServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    now_us = int(time.time() * 1_000_000)
    start_us = now_us - 30 * DAY_US
    requests = [
        u.GetUsageRequest(tenant_id=tenant, start_time=_ts(start_us), end_time=_ts(now_us)) for tenant in TENANTS
    ]
    probe = health_pb2.HealthCheckRequest(service="")

    def get_usage(n: int):
        return usage.GetUsage(requests[n % len(requests)], metadata=metadata, timeout=10)

    def totals(n: int) -> dict:
        return {t.metric: (t.quantity, t.event_count) for t in get_usage(n).totals}

    def raw_scan(n: int) -> dict:
        rows = raw.execute(_RAW_30_DAYS, (TENANTS[n % len(TENANTS)], start_us, now_us), prepare=True).fetchall()
        return {metric: (int(quantity), count) for metric, quantity, count in rows}

    def empty(n: int) -> None:
        health.Check(probe, timeout=5)

    _check_exact(totals, raw_scan, range(CHECKED_TENANTS))
    _alternating(empty, get_usage, WARMUP)
    _timed(raw_scan, WARMUP)
    empty_samples, usage_samples = _alternating(empty, get_usage, CALLS)
    rows = [
        ("empty unary (Health/Check)", empty_samples),
        ("GetUsage 30 days, all metrics", usage_samples),
        ("raw GROUP BY metric on PostgreSQL", _timed(raw_scan, RAW_CALLS)),
    ]
    late = _record_late_events(usage, metadata, now_us)
    dirty = _dirty_marks(raw)
    _check_exact(totals, raw_scan, range(CHECKED_TENANTS))
    empty_samples, usage_samples = _alternating(empty, get_usage, CALLS)
    rows += [
        ("empty unary, beside the next case", empty_samples),
        (f"GetUsage with a dirty backlog ({dirty:,} buckets)", usage_samples),
    ]
    _report_reads(rows, late)


def _check_exact(get_usage, raw_scan, tenants) -> None:
    for n in tenants:
        answer, expected = get_usage(n), raw_scan(n)
        assert answer == expected, f"GetUsage of {TENANTS[n]} differs from the raw GROUP BY: {answer} != {expected}"


def _record_late_events(usage, metadata, now_us: int) -> int:
    """LATE_EVENTS events through RecordEvents, spread over the tenants and the last 30 days; no rollup."""
    per_tenant = LATE_EVENTS // len(TENANTS)
    for n, tenant in enumerate(TENANTS):
        request = u.RecordEventsRequest(tenant_id=tenant)
        for k in range(per_tenant):
            at_us = now_us - (1 + (n * per_tenant + k) * 7919 % (29 * 24)) * HOUR_US - k * 60_000_000
            event = request.events.add(
                event_id=f"late-{n}-{k}",
                metric=METRICS[k % len(METRICS)],
                quantity=1 + k,
                actor_id=ACTORS[k % len(ACTORS)],
                source_service="bench",
            )
            event.occurred_at.CopyFrom(_ts(at_us))
        response = usage.RecordEvents(request, metadata=metadata, timeout=30)
        assert all(r.verdict == u.VERDICT_ACCEPTED for r in response.results), "a late event was not accepted"
    return per_tenant * len(TENANTS)


def _timed(call, count: int) -> list[float]:
    """Latencies of `count` sequential calls, or of as many as fit in CASE_SECONDS (at least 200)."""
    return _alternating(call, None, count)[0]


def _alternating(first, second, count: int) -> tuple[list[float], list[float]]:
    """Latencies of first(n) and second(n) called in turn (second may be None), `count` each, or as many as
    fit in CASE_SECONDS (at least 200)."""
    samples: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + CASE_SECONDS
    for n in range(count):
        for call, kept in zip((first, second), samples):
            if call is not None:
                started = time.perf_counter()
                call(n)
                kept.append(time.perf_counter() - started)
        if n >= 200 and time.perf_counter() > deadline:
            break
    return samples


def _report_reads(rows, late: int) -> None:
    (_, empty), (_, get_usage), (_, raw), (_, empty_beside_dirty), (_, dirty) = rows
    print(
        f"reads: one tenant, every metric, [now - 30 d, now); {len(TENANTS)} tenants in rotation, answers checked "
        f"against the raw GROUP BY; GetUsage and the empty RPC timed in alternation"
    )
    print(f"  {'case':52} {'p50 ms':>8} {'p99 ms':>8} {'calls':>6}")
    for label, samples in rows:
        print(f"  {label:52} {timing.pct(samples, 50):8.3f} {timing.pct(samples, 99):8.3f} {len(samples):6}")
    print(
        f"  GetUsage p99 / empty RPC p99                     "
        f"{timing.pct(get_usage, 99) / timing.pct(empty, 99):8.2f}x  "
        f"(goal <= 2x; p50 / p50 {timing.pct(get_usage, 50) / timing.pct(empty, 50):.2f}x)"
    )
    print(
        f"  raw scan / GetUsage, p50 and p99                 {timing.pct(raw, 50) / timing.pct(get_usage, 50):8.1f}x "
        f"{timing.pct(raw, 99) / timing.pct(get_usage, 99):6.1f}x  (goal >= 10x)"
    )
    print(
        f"  with a dirty backlog ({late} late events recorded, no rollup): p99 / empty p99 "
        f"{timing.pct(dirty, 99) / timing.pct(empty_beside_dirty, 99):.2f}x, "
        f"raw / GetUsage p50 {timing.pct(raw, 50) / timing.pct(dirty, 50):.1f}x"
    )


def _ts(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)
