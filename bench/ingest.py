"""Ingest throughput through gRPC, beside the raw SQL idempotent ceiling and the naive approach.

All figures come from one run on one fresh PostgreSQL database, each on an emptied events table;
the ceiling and the gRPC figure alternate over ROUNDS rounds and the medians are compared, since
other load on a 2-core machine moves single figures by a factor of two:
1. the SQL ceiling: COPY 1,000 rows into a temp staging table + INSERT ... SELECT ... ON CONFLICT
   DO NOTHING, 2 connections, rows prepared in advance (the database's share of the work only);
2. naive: one INSERT per event in its own transaction, catching the unique violation (a sample,
   extrapolated as a rate);
3. Tollgate end to end: RecordEvents through a real gRPC channel to Usage in its own process, as
   deployed (in this process its threads would share the senders' GIL), batches of 1,000 with all
   three dedup keys set, several batches in flight;
4. the same batches sent again: 100 % duplicates.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg

from bench import tokens
from bench.processes import UsageProcess
from scripts.pgcluster import create_postgres_database, drop_postgres_database
from tollgate.services.usage.domain.admission import MAX_BATCH
from tollgate.services.usage.repository.ingest import COLUMNS
from tollgate.shared import migrate
from tollgate.shared.db import normalize_url
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

EVENTS = int(os.environ.get("BENCH_INGEST_EVENTS", "200000"))
IN_FLIGHT = int(os.environ.get("BENCH_INGEST_IN_FLIGHT", "4"))
ROUNDS = int(os.environ.get("BENCH_INGEST_ROUNDS", "3"))
NAIVE_SAMPLE = 3000
DUPLICATE_EVENTS = 50_000
TENANTS = [f"bench-{n}" for n in range(10)]
METRICS = ["api.requests", "scoring.requests", "leads.processed", "sla.timers.started"]


def run(admin_url: str) -> None:
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    try:
        migrate.upgrade("usage", url)
        rows = _rows(EVENTS)
        naive = _naive(url, rows[:NAIVE_SAMPLE])
        ceilings, rates, duplicate_rate = _rounds(url, rows)
        _report(ceilings, naive, rates, duplicate_rate)
    finally:
        drop_postgres_database(admin_url, url)


def _rows(count: int) -> list[tuple]:
    """Events as (tenant, event_id, metric, quantity, occurred_at_us, actor, source, correlation, idempotency)."""
    now_us = int(time.time() * 1_000_000)
    rows = []
    for n in range(count):
        rows.append(
            (
                TENANTS[n // MAX_BATCH % len(TENANTS)],
                uuid.uuid4().hex,
                METRICS[n % len(METRICS)],
                1 + n % 7,
                now_us - 86_400_000_000 + (n * 397_000) % 86_400_000_000,
                f"user-{n % 500}",
                "crm",
                f"job-{n // 4}",
                f"idem-{uuid.uuid4().hex}",
            )
        )
    return rows


def _truncate(url: str) -> None:
    with psycopg.connect(_pg(url), autocommit=True) as connection:
        connection.execute('TRUNCATE "usage".events')
        connection.execute('VACUUM ANALYZE "usage".events')


def _pg(url: str) -> str:
    return normalize_url(url).replace("postgresql+psycopg://", "postgresql://")


def _stored_row(row: tuple) -> tuple:
    return (*row, None, "BILLABLE", "0" * 64, row[4], True, None)  # the business key on, the default; no dimensions


def _sql_ceiling(url: str, rows: list[tuple]) -> float:
    _truncate(url)
    batches = [[_stored_row(r) for r in rows[i : i + MAX_BATCH]] for i in range(0, len(rows), MAX_BATCH)]
    stage = 'CREATE TEMP TABLE IF NOT EXISTS stage (LIKE "usage".events) ON COMMIT DELETE ROWS'
    insert = (
        'INSERT INTO "usage".events SELECT * FROM stage ORDER BY event_id ON CONFLICT DO NOTHING RETURNING event_id'
    )

    def worker(mine: list[list[tuple]]) -> None:
        with psycopg.connect(_pg(url)) as connection:
            for batch in mine:
                with connection.transaction(), connection.cursor() as cursor:
                    cursor.execute(stage)
                    with cursor.copy(f"COPY stage ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                        for row in batch:
                            copy.write_row(row)
                    cursor.execute(insert)
                    cursor.fetchall()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(batches[k::2],)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(rows) / (time.perf_counter() - started)


def _naive(url: str, rows: list[tuple]) -> float:
    _truncate(url)
    insert = f'INSERT INTO "usage".events ({", ".join(COLUMNS)}) VALUES ({", ".join(["%s"] * len(COLUMNS))})'
    started = time.perf_counter()
    with psycopg.connect(_pg(url), autocommit=True) as connection:
        for row in rows:
            try:
                connection.execute(insert, _stored_row(row))
            except psycopg.errors.UniqueViolation:
                pass
    return len(rows) / (time.perf_counter() - started)


def _requests(rows: list[tuple]) -> list[u.RecordEventsRequest]:
    requests = []
    for i in range(0, len(rows), MAX_BATCH):
        request = u.RecordEventsRequest(tenant_id=rows[i][0])
        for _t, event_id, metric, quantity, at_us, actor, source, correlation, key in rows[i : i + MAX_BATCH]:
            event = request.events.add(
                event_id=event_id,
                metric=metric,
                quantity=quantity,
                actor_id=actor,
                source_service=source,
                correlation_id=correlation,
                idempotency_key=key,
            )
            event.occurred_at.seconds, event.occurred_at.nanos = divmod(at_us, 1_000_000)
            event.occurred_at.nanos *= 1000
        requests.append(request)
    return requests


def _rounds(url: str, rows: list[tuple]) -> tuple[list[float], list[float], float]:
    """Alternate the SQL ceiling and RecordEvents through gRPC, each on an emptied table."""
    requests = _requests(rows)
    usage = UsageProcess(
        url, USAGE_DB_POOL_SIZE=str(IN_FLIGHT), USAGE_HEALTH_INTERVAL_SECONDS="5", USAGE_AUTH_CACHE_SECONDS="60"
    )
    ceilings, rates = [], []
    try:
        token = tokens.token(url, {"usage:write"})
        with grpc.insecure_channel(f"127.0.0.1:{usage.port}") as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)
            for _ in range(ROUNDS):
                ceilings.append(_sql_ceiling(url, rows))
                _truncate(url)
                rates.append(_send(stub, token, requests, "ACCEPTED"))
            duplicate_rate = _send(stub, token, requests[: DUPLICATE_EVENTS // MAX_BATCH], "DUPLICATE")
    finally:
        usage.stop()
    return ceilings, rates, duplicate_rate


def _send(stub, token: str, requests: list, expected: str) -> float:
    metadata = (("authorization", f"Bearer {token}"),)
    verdict = u.Verdict.Value(f"VERDICT_{expected}")

    def one(request) -> int:
        response = stub.RecordEvents(request, metadata=metadata, timeout=120)
        assert all(r.verdict == verdict for r in response.results), f"expected every event {expected}"
        return len(response.results)

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        sent = sum(pool.map(one, requests))
    elapsed = time.perf_counter() - started
    print(
        f"  ({expected}: {sent / elapsed:,.0f} events/s; CPU of the sending process "
        f"{(time.process_time() - cpu) / sent * 1e6:.1f} us/event, wall {elapsed / sent * 1e6:.1f} us/event)"
    )
    return sent / elapsed


def _report(ceilings: list[float], naive: float, rates: list[float], duplicate_rate: float) -> None:
    ceiling, rate = statistics.median(ceilings), statistics.median(rates)
    print(
        f"ingest: {EVENTS:,} events, batches of {MAX_BATCH:,}, three dedup keys, {IN_FLIGHT} batches in flight, "
        f"median of {ROUNDS} alternating rounds"
    )
    print(f"  Tollgate RecordEvents via gRPC    {rate:>10,.0f} events/s   rounds: {_each(rates)}")
    print(f"  SQL ceiling (COPY + ON CONFLICT)  {ceiling:>10,.0f} events/s   rounds: {_each(ceilings)}")
    print(f"  naive INSERT per event            {naive:>10,.0f} events/s   ({NAIVE_SAMPLE:,}-event sample)")
    print(f"  ratio to the SQL ceiling          {rate / ceiling:>10.2f}x          (goal >= 0.5x)")
    print(f"  ratio to naive                    {rate / naive:>10.1f}x          (goal >= 10x)")
    print(f"  100% duplicate batches via gRPC   {duplicate_rate:>10,.0f} events/s")
    # A resend storm (a client retrying after a lost answer) must not cost more than new events: the lookup of
    # stored twins reads each key's index, never the tenant's history.
    print(f"  duplicates / new events           {duplicate_rate / rate:>10.2f}x          (goal >= 0.5x)")
    print(f"  goal >= 20,000 events/s: {'met' if rate >= 20_000 else 'NOT met'}")


def _each(figures: list[float]) -> str:
    return ", ".join(f"{f:,.0f}" for f in figures)
