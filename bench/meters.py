"""QueryUsage (meters, issue 19) beside an empty RPC and the raw SQL of the same questions, and ingest with dimensions
beside ingest without, all in one run on one fresh PostgreSQL database (dropped at the end, also after a failure).

1. Ingest: RecordEvents through gRPC (bench/ingest.py's batches and sender), the same events without dimensions
   and with three (model, token_type, region) on metrics declaring them, alternating over ROUNDS rounds on an
   emptied table; medians compared (goal: with >= 0.8x without).
2. Data: EVENTS events of 100 tenants over 35 days ending now, written with COPY as bench/reads.py loads its own
   (indexes dropped and rebuilt, the dirty marks ingest would have written): half of metric ai.tokens (SUM), half
   of ai.users (UNIQUE_COUNT of actor_id), each event with a model (10 values), a token_type (3) and a region (5),
   200 actors per tenant.
3. Cold backlog: roll_up over every dirty bucket, beside the bare GROUP BY of the events by hour and dimension
   combination (what a rollup carrying dimensions has to compute).
4. Reads, from Usage in its own process, over rotating tenants: (a) a 30-day DAY series of ai.tokens in
   America/New_York grouped by model, timed in alternation with an empty unary RPC (Health/Check), beside the raw
   GROUP BY answering the same question on PostgreSQL (goals: p99 <= 3x the empty RPC's, >= 10x faster than the
   raw GROUP BY); (b) the 30-day UNIQUE_COUNT of ai.users' actors beside its raw count(DISTINCT) (goal >= 3x
   faster). Answers are checked against the raw queries first. Each tenant's first UNIQUE_COUNT and its second,
   which reads its days into Usage's memory, are timed apart, as are its first series (its days read) and its
   second (its answer kept); the cases then ask each tenant the same questions again, round after round, as a
   dashboard refreshing a range does; (c) the same series with its range ending at each call's instant, a new
   question each time (nothing kept), is timed too.
5. The same reads after LATE_EVENTS late events recorded without a rollup (dirty buckets): still exact, timed.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import ingest, reads, timing, tokens
from bench.processes import UsageProcess
from scripts.pgcluster import create_postgres_database, drop_postgres_database
from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US
from tollgate.services.usage.repository.ingest import COLUMNS
from tollgate.services.usage.server import storage_for
from tollgate.services.usage.service import rollups
from tollgate.shared import migrate
from tollgate.shared.db import create_engine_for, session_factory
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

EVENTS = int(os.environ.get("BENCH_METERS_EVENTS", "2000000"))
ROUNDS = int(os.environ.get("BENCH_METERS_INGEST_ROUNDS", "3"))
TENANTS = [f"tenant-{n:03d}" for n in range(100)]
DAYS, ZONE = 35, "America/New_York"
MODELS = [f"model-{n}" for n in range(10)]
TOKEN_TYPES = ["prompt", "completion", "cached"]
REGIONS = ["us-east", "us-west", "eu-west", "eu-central", "ap-south"]
DIMENSIONS = ["model", "token_type", "region"]
TOKENS, USERS = "ai.tokens", "ai.users"
ACTORS = 200
CALLS, WARMUP, RAW_CALLS, CHECKED_TENANTS, LATE_EVENTS = 3000, 100, 300, 10, 400
_METRIC = """INSERT INTO "usage".metrics (name, classification, unit, description, updated_at_us, business_key,
    aggregation, unique_of, dimensions) VALUES (%s, 'BILLABLE', %s, %s, 0, true, %s, %s, %s)"""
# What a rollup carrying dimensions computes: every (tenant, metric, hour, combination) with its sum and count.
_GROUP_BY_HOUR_AND_COMBINATION = (
    "SELECT count(*), sum(q), sum(n) FROM (SELECT tenant_id, metric, "
    "occurred_at_us - occurred_at_us % 3600000000, dimensions, sum(quantity) AS q, count(*) AS n, "
    'min(quantity), max(quantity) FROM "usage".events GROUP BY 1, 2, 3, 4) AS hours'
)
# The DAY series by model as one would write it against the events table: local days, the first one clipped.
_RAW_SERIES = f"""SELECT greatest(%(start)s, (extract(epoch FROM date_trunc('day', to_timestamp(occurred_at_us / 1e6)
    AT TIME ZONE '{ZONE}') AT TIME ZONE '{ZONE}') * 1000000)::bigint) AS day,
    coalesce(dimensions::jsonb ->> 'model', '') AS model, sum(quantity), count(*)
FROM "usage".events WHERE tenant_id = %(tenant)s AND metric = '{TOKENS}' AND occurred_at_us >= %(start)s
  AND occurred_at_us < %(end)s GROUP BY 1, 2"""
_RAW_UNIQUE = f"""SELECT count(DISTINCT nullif(actor_id, '')), count(*) FROM "usage".events
WHERE tenant_id = %(tenant)s AND metric = '{USERS}' AND occurred_at_us >= %(start)s AND occurred_at_us < %(end)s"""


def run(admin_url: str) -> None:
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    try:
        migrate.upgrade("usage", url)
        _ingest(url)
        now_us = int(time.time() * 1_000_000)
        _generate(url, now_us)
        _cold_backlog(url)
        reads._settle(url)
        usage = UsageProcess(url)
        try:
            with (
                grpc.insecure_channel(f"127.0.0.1:{usage.port}") as channel,
                psycopg.connect(reads._pg(url), autocommit=True) as raw,
            ):
                token = tokens.token(url, {"usage:read", "usage:write"})
                _reads(channel, (("authorization", f"Bearer {token}"),), raw)
        finally:
            usage.stop()
    finally:
        drop_postgres_database(admin_url, url)


def _dimensions(n: int) -> dict[str, str]:
    mixed = (n * 2654435761) & 0xFFFFFFFF
    return {
        "model": MODELS[mixed % 10],
        "token_type": TOKEN_TYPES[mixed // 10 % 3],
        "region": REGIONS[mixed // 30 % 5],
    }


def _ingest(url: str) -> None:
    """bench/ingest.py's events sent without dimensions and with three, in alternating rounds on an emptied table."""
    with psycopg.connect(reads._pg(url), autocommit=True) as connection:
        connection.execute(
            'UPDATE "usage".metrics SET dimensions = %s WHERE name = ANY(%s)', (json.dumps(DIMENSIONS), ingest.METRICS)
        )
    rows = ingest._rows(ingest.EVENTS)
    plain = ingest._requests(rows)
    dimensioned = ingest._requests(rows)
    for b, request in enumerate(dimensioned):
        for k, event in enumerate(request.events):
            event.dimensions.update(_dimensions(b * len(request.events) + k))
    usage = UsageProcess(
        url,
        USAGE_DB_POOL_SIZE=str(ingest.IN_FLIGHT),
        USAGE_HEALTH_INTERVAL_SECONDS="5",
        USAGE_AUTH_CACHE_SECONDS="60",
    )
    without: list[float] = []
    with_dimensions: list[float] = []
    try:
        token = tokens.token(url, {"usage:write"})
        with grpc.insecure_channel(f"127.0.0.1:{usage.port}") as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)
            for _ in range(ROUNDS):
                for requests, rates in ((plain, without), (dimensioned, with_dimensions)):
                    _empty_tables(url)
                    rates.append(ingest._send(stub, token, requests, "ACCEPTED"))
    finally:
        usage.stop()
        _empty_tables(url)
    rate, rate_without = statistics.median(with_dimensions), statistics.median(without)
    print(f"ingest: {ingest.EVENTS:,} events, median of {ROUNDS} alternating rounds ({ingest.IN_FLIGHT} in flight)")
    print(f"  without dimensions               {rate_without:>10,.0f} events/s   rounds: {ingest._each(without)}")
    print(f"  with model, token_type, region   {rate:>10,.0f} events/s   rounds: {ingest._each(with_dimensions)}")
    print(f"  with / without                   {rate / rate_without:>10.2f}x          (goal >= 0.8x)")


def _empty_tables(url: str) -> None:
    with psycopg.connect(reads._pg(url), autocommit=True) as connection:
        connection.execute('TRUNCATE "usage".events, "usage".dirty_buckets')
        connection.execute('VACUUM ANALYZE "usage".events')


def _lines(now_us: int, first: int, count: int) -> str:
    """COPY text of events first..first+count-1: in time order, tenants, metrics and dimensions spread evenly."""
    start_us, step = now_us - DAYS * DAY_US, DAYS * DAY_US // EVENTS
    lines = []
    for n in range(first, first + count):
        mixed = (n * 2654435761) & 0xFFFFFFFF
        tenant, metric = TENANTS[mixed % 100], (TOKENS, USERS)[mixed // 100 % 2]
        actor = f"user-{mixed // 200 % ACTORS}"
        quantity, at_us = 1 + mixed // 4000 % 1000, start_us + n * step + mixed % step
        dimensions = json.dumps(_dimensions(n // 100), sort_keys=True, separators=(",", ":"))
        content = hashlib.sha256(f"{metric}\0{quantity}\0{at_us}\0{actor}\0{dimensions}".encode()).hexdigest()
        lines.append(
            f"{tenant}\te{n:09d}\t{metric}\t{quantity}\t{at_us}\t{actor}\tbench\t\\N\t\\N\t\\N\t"
            f"BILLABLE\t{content}\t{at_us}\tt\t{dimensions}\n"
        )
    return "".join(lines)


def _generate(url: str, now_us: int) -> None:
    """The two metrics in the catalog, events by COPY into the bare table, indexes rebuilt, dirty marks as ingest
    writes them (bench/reads.py's helpers)."""
    steps = {}
    with psycopg.connect(reads._pg(url), autocommit=True) as connection:
        connection.execute("SET work_mem = '256MB'")
        connection.execute("SET jit = off")
        dimensions = json.dumps(DIMENSIONS)
        connection.execute(_METRIC, (TOKENS, "tokens", "tokens by model", "SUM", "", dimensions))
        connection.execute(_METRIC, (USERS, "users", "distinct users", "UNIQUE_COUNT", "actor_id", dimensions))
        started = time.perf_counter()
        indexes = reads._drop_indexes(connection)
        with (
            connection.cursor() as cursor,
            cursor.copy(f'COPY "usage".events ({", ".join(COLUMNS)}) FROM STDIN') as copy,
        ):
            for first in range(0, EVENTS, 50_000):
                copy.write(_lines(now_us, first, min(50_000, EVENTS - first)))
        steps["COPY"] = time.perf_counter() - started
        reads._rebuild_indexes(url, connection, indexes)
        steps["indexes"] = time.perf_counter() - started - sum(steps.values())
        connection.execute(reads._MARK_EVERY_BUCKET, {"now": now_us})
        steps["dirty marks"] = time.perf_counter() - started - sum(steps.values())
        connection.execute('VACUUM ANALYZE "usage".events')
        connection.execute('VACUUM ANALYZE "usage".dirty_buckets')
        steps["VACUUM ANALYZE"] = time.perf_counter() - started - sum(steps.values())
        dirty = reads._dirty_marks(connection)
    elapsed = sum(steps.values())
    print(
        f"data: {EVENTS:,} events, {len(TENANTS)} tenants, metrics {TOKENS} (SUM) and {USERS} (UNIQUE_COUNT of "
        f"actor_id), dimensions model (10), token_type (3), region (5), {ACTORS} actors per tenant, {DAYS} days "
        f"ending now; {dirty:,} dirty buckets"
    )
    print(
        f"  generated in {elapsed:.1f} s ("
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps.items())
        + ")"
    )


def _cold_backlog(url: str) -> None:
    """roll_up over every dirty bucket beside the bare GROUP BY by hour and combination (before and after it)."""
    engine = create_engine_for(url, schema="usage", pool_size=2)
    try:
        with psycopg.connect(reads._pg(url), autocommit=True) as connection:
            dirty = reads._dirty_marks(connection)
            before = reads._timed_once(lambda: connection.execute(_GROUP_BY_HOUR_AND_COMBINATION).fetchall())
            report = reads._timed_once(
                lambda: rollups.roll_up(session_factory(engine), None, storage=storage_for(engine))
            )
            after = reads._timed_once(lambda: connection.execute(_GROUP_BY_HOUR_AND_COMBINATION).fetchall())
            left = reads._dirty_marks(connection)
    finally:
        engine.dispose()
    group_by, rollup = (before[0] + after[0]) / 2, report[0]
    assert left == 0, f"{left} dirty buckets left after the rollup"
    print(f"cold backlog: {dirty:,} dirty buckets over {EVENTS:,} events")
    print(f"  roll_up(sessions, None)                     {rollup:8.2f} s   {report[1].buckets_recomputed:,} buckets")
    print(
        f"  bare GROUP BY hour, combination            {group_by:8.2f} s   ({before[0]:.2f} / {after[0]:.2f}; "
        f"{before[1][0][0]:,} groups) -> rollup at {group_by / rollup:.2f}x its speed"
    )


def _reads(channel, metadata, raw) -> None:
    usage, health = usage_pb2_grpc.UsageServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    now_us = int(time.time() * 1_000_000)
    start_us = now_us - 30 * DAY_US
    span = {"start_time": reads._ts(start_us), "end_time": reads._ts(now_us), "page_size": 1000}
    series_requests = [
        u.QueryUsageRequest(tenant_id=t, metric=TOKENS, window=u.WINDOW_DAY, time_zone=ZONE, group_by=["model"], **span)
        for t in TENANTS
    ]
    unique_requests = [u.QueryUsageRequest(tenant_id=t, metric=USERS, **span) for t in TENANTS]
    probe = health_pb2.HealthCheckRequest(service="")

    def series(n: int):
        return usage.QueryUsage(series_requests[n % len(TENANTS)], metadata=metadata, timeout=10)

    def unique(n: int):
        return usage.QueryUsage(unique_requests[n % len(TENANTS)], metadata=metadata, timeout=10)

    def series_to_now(n: int):
        end_us = int(time.time() * 1_000_000)
        request = u.QueryUsageRequest()
        request.CopyFrom(series_requests[n % len(TENANTS)])
        request.start_time.CopyFrom(reads._ts(end_us - 30 * DAY_US))
        request.end_time.CopyFrom(reads._ts(end_us))
        return usage.QueryUsage(request, metadata=metadata, timeout=10)

    def empty(n: int) -> None:
        health.Check(probe, timeout=5)

    def raw_series(n: int) -> dict:
        found = raw.execute(_RAW_SERIES, _bounds(n, start_us, now_us), prepare=True).fetchall()
        return {(day, model): (int(q), c) for day, model, q, c in found}

    def raw_unique(n: int) -> tuple[int, int]:
        value, count = raw.execute(_RAW_UNIQUE, _bounds(n, start_us, now_us), prepare=True).fetchone()
        return value, count

    def check() -> None:
        for n in range(CHECKED_TENANTS):
            answer = series(n)
            assert not answer.next_page_token, "the series takes one page"
            got = {_row_key(r): (r.value, r.event_count) for r in answer.rows}
            assert got == raw_series(n), f"QueryUsage's series of {TENANTS[n]} differs from the raw GROUP BY"
            (row,) = unique(n).rows
            assert (row.value, row.event_count) == raw_unique(n), f"UNIQUE_COUNT of {TENANTS[n]} differs"

    check()
    # A tenant's first UNIQUE_COUNT is read from raw events, its second reads its days into Usage's memory; a
    # series' first reads its days, its second keeps its answer (docs/usage.md, "Days kept in memory"): each timed
    # apart, before the cases, which time the questions asked again.
    others = len(TENANTS) - CHECKED_TENANTS
    first_unique = reads._timed(lambda n: unique(CHECKED_TENANTS + n), others)
    second_unique = reads._timed(lambda n: unique(CHECKED_TENANTS + n), others)
    first_series = reads._timed(lambda n: series(CHECKED_TENANTS + n), others)
    second_series = reads._timed(lambda n: series(CHECKED_TENANTS + n), others)
    for n in range(CHECKED_TENANTS):
        unique(n)  # their second too (check() asked them once)
        series(n)
    reads._alternating(empty, series, WARMUP)
    reads._timed(raw_series, WARMUP // 4)
    reads._timed(raw_unique, WARMUP // 4)
    cases = _cases(empty, series, unique, raw_series, raw_unique, series_to_now)
    _report("clean (rolled up)", cases)
    for label, samples in (
        ("UNIQUE_COUNT, each tenant's first", first_unique),
        ("UNIQUE_COUNT, each tenant's second (its days read)", second_unique),
        ("series, each tenant's first (its days read)", first_series),
        ("series, each tenant's second (its answer kept)", second_series),
    ):
        print(f"  {label:52} {timing.pct(samples, 50):8.3f} {timing.pct(samples, 99):8.3f} {len(samples):6}")
    late = _record_late_events(usage, metadata, now_us)
    dirty = reads._dirty_marks(raw)
    check()
    dirty_cases = _cases(empty, series, unique, None, None, series_to_now)
    _report(f"dirty: {late} late events, {dirty:,} dirty buckets, no rollup", dirty_cases)


def _bounds(n: int, start_us: int, end_us: int) -> dict:
    return {"tenant": TENANTS[n % len(TENANTS)], "start": start_us, "end": end_us}


def _row_key(row) -> tuple[int, str]:
    start = row.window_start.seconds * 1_000_000 + row.window_start.nanos // 1000
    return start, row.group["model"]


def _cases(empty, series, unique, raw_series, raw_unique, series_to_now) -> dict[str, list[float]]:
    """The cases in _report's order. The series asks each tenant the same question every round, as a dashboard that
    refreshes a range does (its answer kept, docs/usage.md); the series to now asks a new question at each call,
    its range ending at the call's instant, which keeps nothing."""
    empty_samples, series_samples = reads._alternating(empty, series, CALLS)
    empty_beside_unique, unique_samples = reads._alternating(empty, unique, CALLS // 2)
    empty_beside_moving, moving_samples = reads._alternating(empty, series_to_now, CALLS // 2)
    cases = {
        "empty unary (Health/Check)": empty_samples,
        f"QueryUsage 30 d, DAY in {ZONE}, by model": series_samples,
        "empty unary, beside the next": empty_beside_unique,
        "QueryUsage 30 d, UNIQUE_COUNT of actors": unique_samples,
        "empty unary, beside the next ": empty_beside_moving,
        "the series, its range ending at each call": moving_samples,
    }
    if raw_series is not None:
        cases["raw GROUP BY local day, model (PostgreSQL)"] = reads._timed(raw_series, RAW_CALLS)
        cases["raw count(DISTINCT actor_id) (PostgreSQL)"] = reads._timed(raw_unique, RAW_CALLS)
    return cases


def _report(title: str, cases: dict[str, list[float]]) -> None:
    print(f"reads, {title}: one tenant per call, {len(TENANTS)} in rotation, answers checked against raw SQL")
    print(f"  {'case':52} {'p50 ms':>8} {'p99 ms':>8} {'calls':>6}")
    for label, samples in cases.items():
        print(f"  {label:52} {timing.pct(samples, 50):8.3f} {timing.pct(samples, 99):8.3f} {len(samples):6}")
    empty, series, empty_u, unique, empty_m, moving = list(cases.values())[:6]
    print(
        f"  series p99 / empty p99                               {timing.pct(series, 99) / timing.pct(empty, 99):8.2f}x"
        f"  (goal <= 3x; p50 / p50 {timing.pct(series, 50) / timing.pct(empty, 50):.2f}x)"
    )
    print(
        f"  UNIQUE_COUNT p99 / empty p99                         "
        f"{timing.pct(unique, 99) / timing.pct(empty_u, 99):8.2f}x"
    )
    print(
        f"  series to each call's instant, p99 / empty p99       "
        f"{timing.pct(moving, 99) / timing.pct(empty_m, 99):8.2f}x  (p50 / p50 "
        f"{timing.pct(moving, 50) / timing.pct(empty_m, 50):.2f}x)"
    )
    if len(cases) > 6:
        raw_series, raw_unique = list(cases.values())[6:]
        print(
            f"  raw GROUP BY / series, p50 and p99                   "
            f"{timing.pct(raw_series, 50) / timing.pct(series, 50):8.1f}x "
            f"{timing.pct(raw_series, 99) / timing.pct(series, 99):6.1f}x  (goal >= 10x)"
        )
        print(
            f"  raw count(DISTINCT) / UNIQUE_COUNT, p50 and p99      "
            f"{timing.pct(raw_unique, 50) / timing.pct(unique, 50):8.1f}x "
            f"{timing.pct(raw_unique, 99) / timing.pct(unique, 99):6.1f}x  (goal >= 3x)"
        )


def _record_late_events(usage, metadata, now_us: int) -> int:
    """LATE_EVENTS events of both metrics through RecordEvents, spread over the tenants and the last 30 days."""
    per_tenant = LATE_EVENTS // len(TENANTS)
    for n, tenant in enumerate(TENANTS):
        request = u.RecordEventsRequest(tenant_id=tenant)
        for k in range(per_tenant):
            at_us = now_us - (1 + (n * per_tenant + k) * 7919 % (29 * 24)) * HOUR_US - k * 60_000_000
            event = request.events.add(
                event_id=f"late-{n}-{k}",
                metric=(TOKENS, USERS)[k % 2],
                quantity=1 + k,
                actor_id=f"late-user-{k}",
                source_service="bench",
            )
            event.dimensions.update(_dimensions(n * per_tenant + k))
            event.occurred_at.CopyFrom(reads._ts(at_us))
        response = usage.RecordEvents(request, metadata=metadata, timeout=30)
        assert all(r.verdict == u.VERDICT_ACCEPTED for r in response.results), "a late event was not accepted"
    return per_tenant * len(TENANTS)
