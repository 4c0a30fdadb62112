"""GetUsage latency on SQLite while a rollup runs, beside GetUsage without one, in the same run.

SQLite, the embedded default, has one writer at a time, and every transaction of the Usage service's
engine takes the write lock as it begins (BEGIN IMMEDIATE). A throwaway database file holds EVENTS
events of 8 tenants and two metrics over the last 21 days, written straight into usage.events, with
the dirty marks ingest would have written (every event's day, with all its hours, ISO week and month):
about 430 dirty buckets. Usage runs in its own process, as deployed.

1. Without a rollup: GetUsage (one tenant, every metric, [now - 30 d, now): edges not bucket-aligned,
   tenants in rotation) timed in alternation with an empty unary RPC (grpc.health.v1.Health/Check),
   call for call, with the backlog dirty; its answers must equal the raw sums of the events.
2. During a rollup: RunRollup of every tenant runs in the Usage process (as the scheduled job does),
   while the same GetUsage is called in a loop until it ends; then every mark is written again and
   the rollup repeated, ROUNDS times. No dirty bucket may be left, and the answers must stay exact.
3. Without a rollup again, the backlog clean, beside the empty RPC.
Latencies are of sequential calls from this process.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select

from bench import timing, tokens
from bench.processes import UsageProcess
from tollgate.services.usage.domain.buckets import ALL_HOURS, DAY_US, marked_buckets_of
from tollgate.services.usage.domain.catalog import DEFAULT_CATALOG
from tollgate.services.usage.tables import dirty_buckets, events
from tollgate.shared import migrate
from tollgate.shared.db import create_engine_for
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

EVENTS = int(os.environ.get("BENCH_ROLLUP_SQLITE_EVENTS", "40000"))
TENANTS = [f"tenant-{n}" for n in range(8)]
METRICS = ["api.requests", "leads.processed"]
DAYS, ROUNDS, CALLS = 21, 4, 600
_CLASSIFICATION = {m.name: m.classification.name for m in DEFAULT_CATALOG if m.classification}


def run(_admin_url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as directory:
        url = f"sqlite:///{Path(directory) / 'usage.db'}"
        migrate.upgrade("usage", url)
        now_us = int(time.time() * 1_000_000)
        engine = create_engine_for(url, schema="usage", pool_size=1)
        try:
            expected, marks = _generate(engine, now_us)
            usage = UsageProcess(url)
            try:
                with grpc.insecure_channel(f"127.0.0.1:{usage.port}") as channel:
                    _measure(channel, url, engine, now_us, expected, marks)
            finally:
                usage.stop()
        finally:
            engine.dispose()


def _generate(engine, now_us: int) -> tuple[dict, list[dict]]:
    """Events in time order, tenants and metrics spread evenly, and the marks ingest writes for them."""
    start_us, step = now_us - DAYS * DAY_US, DAYS * DAY_US // EVENTS
    rows: list[dict] = []
    expected: dict[str, dict[str, list[int]]] = {}
    buckets: set[tuple[str, str, int, int]] = set()
    for n in range(EVENTS):
        mixed = (n * 2654435761) & 0xFFFFFFFF
        tenant, metric = TENANTS[mixed % len(TENANTS)], METRICS[mixed // 8 % len(METRICS)]
        quantity, at_us = 1 + mixed // 64 % 10, start_us + n * step + mixed % step
        content = hashlib.sha256(f"{metric}\0{quantity}\0{at_us}\0bench".encode()).hexdigest()
        rows.append(
            dict(
                tenant_id=tenant,
                event_id=f"e{n:09d}",
                metric=metric,
                quantity=quantity,
                occurred_at_us=at_us,
                actor_id="user",
                source_service="bench",
                correlation_id=None,
                idempotency_key=None,
                metadata=None,
                classification=_CLASSIFICATION[metric],
                content_hash=content,
                received_at_us=at_us,
            )
        )
        totals = expected.setdefault(tenant, {}).setdefault(metric, [0, 0])
        if at_us >= now_us - 30 * DAY_US:
            totals[0], totals[1] = totals[0] + quantity, totals[1] + 1
        buckets.update((tenant, metric, int(period), start) for period, start in marked_buckets_of(at_us))
    marks = [
        dict(tenant_id=t, metric=m, period=p, period_start_us=s, marked_at_us=now_us, dirty_hours=ALL_HOURS)
        for t, m, p, s in sorted(buckets)
    ]
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(events.insert(), rows)
        connection.execute(dirty_buckets.insert(), marks)
    print(
        f"data: {EVENTS:,} events, {len(TENANTS)} tenants, {len(METRICS)} metrics, {DAYS} days ending now; "
        f"{len(marks)} dirty buckets (written in {time.perf_counter() - started:.1f} s)"
    )
    return {t: {m: tuple(v) for m, v in by.items()} for t, by in expected.items()}, marks


def _measure(channel, url: str, engine, now_us: int, expected: dict, marks: list[dict]) -> None:
    reader = (("authorization", f"Bearer {tokens.token(url, {'usage:read'})}"),)
    admin = (("authorization", f"Bearer {tokens.token(url, {'usage:admin'})}"),)
    usage, health = usage_pb2_grpc.UsageServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    admin_stub = usage_pb2_grpc.UsageAdminServiceStub(channel)
    requests = [
        u.GetUsageRequest(tenant_id=t, start_time=_ts(now_us - 30 * DAY_US), end_time=_ts(now_us)) for t in TENANTS
    ]
    probe = health_pb2.HealthCheckRequest(service="")

    def get_usage(n: int) -> None:
        answer = usage.GetUsage(requests[n % len(requests)], metadata=reader, timeout=60)
        got = {t.metric: (t.quantity, t.event_count) for t in answer.totals}
        assert got == expected[TENANTS[n % len(TENANTS)]], f"GetUsage of {TENANTS[n % len(TENANTS)]} is not exact"

    def empty(n: int) -> None:
        health.Check(probe, timeout=60)

    _alternating(empty, get_usage, 50)
    rows = list(
        zip(
            ("empty unary (Health/Check)", f"GetUsage, no rollup, {len(marks)} buckets dirty"),
            _alternating(empty, get_usage, CALLS),
        )
    )
    during: list[float] = []
    rollups: list[tuple[float, int]] = []
    for _ in range(ROUNDS):
        with engine.begin() as connection:
            connection.execute(dirty_buckets.delete())
            connection.execute(dirty_buckets.insert(), marks)
        rollups.append(_during_rollup(admin_stub, admin, get_usage, during))
    with engine.connect() as connection:
        left = connection.execute(select(func.count()).select_from(dirty_buckets)).scalar_one()
    assert left == 0, f"{left} dirty buckets left after the rollups"
    rows.append((f"GetUsage during a rollup of {len(marks)} buckets", during))
    rows += list(
        zip(
            ("empty unary, beside the next case", "GetUsage, no rollup, every bucket clean"),
            _alternating(empty, get_usage, CALLS),
        )
    )
    _report(rows, rollups)


def _during_rollup(admin_stub, admin, get_usage, samples: list[float]) -> tuple[float, int]:
    """GetUsage timed in a loop while RunRollup of every tenant runs: (the rollup's seconds, its buckets)."""
    report: dict[str, Any] = {}

    def roll_up() -> None:
        response = admin_stub.RunRollup(u.RunRollupRequest(), metadata=admin, timeout=600)
        report.update(seconds=response.duration.ToTimedelta().total_seconds(), buckets=response.buckets_recomputed)

    worker = threading.Thread(target=roll_up)
    worker.start()
    n = 0
    while worker.is_alive():
        started = time.perf_counter()
        get_usage(n)
        samples.append(time.perf_counter() - started)
        n += 1
    worker.join()
    return report["seconds"], report["buckets"]


def _alternating(first, second, count: int) -> tuple[list[float], list[float]]:
    samples: tuple[list[float], list[float]] = ([], [])
    for n in range(count):
        for call, kept in zip((first, second), samples):
            started = time.perf_counter()
            call(n)
            kept.append(time.perf_counter() - started)
    return samples


def _report(rows, rollups) -> None:
    seconds = [s for s, _ in rollups]
    print(
        f"rollups: {len(rollups)} rounds of {rollups[0][1]} buckets (RunRollup, every tenant), "
        f"{min(seconds):.2f}-{max(seconds):.2f} s each"
    )
    print(f"  {'case':52} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'calls':>6}")
    for label, samples in rows:
        print(
            f"  {label:52} {timing.pct(samples, 50):8.2f} {timing.pct(samples, 99):8.2f} "
            f"{timing.pct(samples, 100):8.2f} {len(samples):6}"
        )
    quiet, during = rows[1][1], rows[2][1]
    print(
        f"  GetUsage p99 during a rollup / without one (backlog dirty) "
        f"{timing.pct(during, 99) / timing.pct(quiet, 99):8.2f}x"
    )


def _ts(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)
