"""The recorder: its cost per record() on the caller's thread, and its end-to-end delivery rate.

Figures from one run on one fresh PostgreSQL database, each beside its reference:
1. record() p50/p99 on the caller's thread, beside a bare deque.append + time.time() (the floor of
   any queue hand-off) measured in the same loop shape;
2. events/s delivered end to end (record() until flush() returns: spooled, sent, answered), beside
   direct RecordEvents calls with batches of the recorder's size, one call at a time, on the same server.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections import deque

import grpc

from bench import tokens
from scripts.pgcluster import create_postgres_database, drop_postgres_database
from tollgate.clients.recorder import UsageRecorder
from tollgate.clients.recorder.events import Pending, to_payload, to_request
from tollgate.services.usage import server as usage_server
from tollgate.services.usage.config import Settings
from tollgate.shared import migrate
from tollgate.usage.v1 import usage_pb2_grpc

EVENTS = int(os.environ.get("BENCH_RECORDER_EVENTS", "50000"))
BATCH = 500
METRIC = "api.requests"


def run(admin_url: str) -> None:
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    server = None
    try:
        migrate.upgrade("usage", url)
        server = usage_server.build(
            Settings(
                database_url=url, host="127.0.0.1", port=0, metrics_port=None, http_port=None, rollup_interval_seconds=0
            )
        )
        token = tokens.token(url, {"usage:write"})
        target = f"127.0.0.1:{server.port}"
        reference = _percentiles(_deque_append_costs(EVENTS))
        overhead, delivered = _recorder(target, token)
        direct = _direct(target, token)
        print(
            f"record() on the caller's thread: p50 {overhead[0]:.2f} us, p99 {overhead[1]:.2f} us "
            f"(deque.append + time.time(): p50 {reference[0]:.2f} us, p99 {reference[1]:.2f} us; "
            f"ratio p50 {overhead[0] / reference[0]:.1f}x)"
        )
        print(
            f"delivered end to end: {delivered:,.0f} events/s "
            f"(direct RecordEvents, batches of {BATCH}, one in flight: {direct:,.0f} events/s; "
            f"ratio {delivered / direct:.2f})"
        )
    finally:
        if server is not None:
            server.stop(grace=1)
        drop_postgres_database(admin_url, url)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1e6, cuts[98] * 1e6


def _deque_append_costs(count: int) -> list[float]:
    queue: deque[tuple[str, int, float]] = deque()
    clock, costs = time.perf_counter, []
    for _ in range(count):
        started = clock()
        queue.append((METRIC, 1, time.time()))
        costs.append(clock() - started)
    return costs


def _recorder(target: str, token: str) -> tuple[tuple[float, float], float]:
    with tempfile.TemporaryDirectory() as folder:
        recorder = UsageRecorder(
            target,
            token,
            f"bench-{uuid.uuid4().hex[:8]}",
            f"{folder}/spool.db",
            batch_size=BATCH,
            max_spool_events=EVENTS * 2,
        )
        clock, costs = time.perf_counter, []
        began = clock()
        for _ in range(EVENTS):
            started = clock()
            recorder.record(METRIC, 1)
            costs.append(clock() - started)
        flushed = recorder.flush(timeout=300)
        elapsed = clock() - began
        counters = recorder.counters()
        recorder.close(timeout=5)
    if not flushed or counters.sent != EVENTS:
        raise RuntimeError(f"recorder did not deliver every event: {counters}")
    return _percentiles(costs), EVENTS / elapsed


def _direct(target: str, token: str) -> float:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    now = time.time()
    batches = [
        to_request(
            tenant,
            [
                to_payload(Pending(METRIC, 1, now, "", "", "", None, None), source_service="bench")[1]
                for _ in range(BATCH)
            ],
        )
        for _ in range(EVENTS // BATCH)
    ]
    with grpc.insecure_channel(target) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        began = time.perf_counter()
        for request in batches:
            stub.RecordEvents(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        return len(batches) * BATCH / (time.perf_counter() - began)
