"""GetUsage and QueryUsage of a busy day: a tenant's day that keeps gaining events while rollups run, beside the same
questions on the same day while it is clean, in one run on one fresh PostgreSQL database (dropped at the end).

1. HISTORY events spread over yesterday's 24 hours (UTC), of a metric declaring a `model` dimension (MODELS values),
   rolled up: the day is clean.
2. Reference: GetUsage of yesterday, and QueryUsage of yesterday by model, alternating, while nothing is sent.
3. Busy: a sender records batches of LIVE_BATCH events every LIVE_PAUSE seconds into one hour of yesterday, a
   new hour every MOVE_EVERY seconds (the hours a live day goes through, faster), while Usage rolls up every
   ROLLUP_SECONDS; both questions every ASK_EVERY seconds, reported per SLOT seconds with the most hours the day's
   dirty mark held and the age of the tenant's oldest mark (what the rollup-lag gauge reports).

A bucket whose mark changes during every pass used to keep its mark for good, the day's with every hour it was
ever marked for (read raw), all of them as old as their first mark; it is now stored all the same, dated from the
pass, the day's mark narrowed to the hours still gaining events (docs/usage.md, "Busy buckets"). QueryUsage read a
marked day's events raw whole; it now reads the day's meter rows but for the hours its mark names (docs/usage.md,
"Meters").
"""

from __future__ import annotations

import itertools
import threading
import time

import grpc
import psycopg

from bench import reads, timing, tokens
from bench.processes import UsageProcess
from scripts.pgcluster import create_postgres_database, drop_postgres_database
from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US
from tollgate.shared import migrate
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

TENANT, METRIC, MODELS = "busy", "busy.tokens", 10
HISTORY, HISTORY_BATCH = 30_000, 500
LIVE_BATCH, LIVE_PAUSE, MOVE_EVERY = 20, 0.02, 5.0
ROLLUP_SECONDS, ASK_EVERY, BUSY_SECONDS, SLOT = "2", 0.1, 40.0, 10.0
REFERENCE_CALLS = 200


def run(admin_url: str) -> None:
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    try:
        migrate.upgrade("usage", url)
        usage = UsageProcess(url, USAGE_ROLLUP_INTERVAL_SECONDS=ROLLUP_SECONDS)
        try:
            token = tokens.token(url, {"usage:write", "usage:read", "usage:admin"})
            metadata = (("authorization", f"Bearer {token}"),)
            with (
                grpc.insecure_channel(f"127.0.0.1:{usage.port}") as channel,
                psycopg.connect(reads._pg(url), autocommit=True) as raw,
            ):
                _measure(channel, metadata, raw)
        finally:
            usage.stop()
    finally:
        drop_postgres_database(admin_url, url)


def _measure(channel, metadata, raw) -> None:
    stub, admin = usage_pb2_grpc.UsageServiceStub(channel), usage_pb2_grpc.UsageAdminServiceStub(channel)
    day = (int(time.time() * 1_000_000) // DAY_US - 1) * DAY_US
    ids = itertools.count()
    metric = u.Metric(name=METRIC, classification=u.CLASSIFICATION_BILLABLE, unit="token", dimensions=["model"])
    admin.UpsertMetric(u.UpsertMetricRequest(metric=metric), metadata=metadata, timeout=30)

    def record(at_of, size: int) -> None:
        request = u.RecordEventsRequest(tenant_id=TENANT)
        for _ in range(size):
            n = next(ids)
            request.events.add(
                event_id=f"e{n}",
                metric=METRIC,
                quantity=1,
                source_service="bench",
                occurred_at=reads._ts(at_of(n)),
                dimensions={"model": f"model-{n % MODELS}"},
            )
        response = stub.RecordEvents(request, metadata=metadata, timeout=30)
        assert all(r.verdict == u.VERDICT_ACCEPTED for r in response.results), "an event was not accepted"

    for _ in range(HISTORY // HISTORY_BATCH):
        record(lambda n: day + n * 7919 % DAY_US, HISTORY_BATCH)
    for _ in range(10):  # a scheduled pass that read the day before the last batches may leave it marked a moment
        admin.RunRollup(u.RunRollupRequest(tenant_id=TENANT), metadata=metadata, timeout=120)
        if not _dirty_hours(raw):
            break
    span = {"start_time": reads._ts(day), "end_time": reads._ts(day + DAY_US)}
    question = u.GetUsageRequest(tenant_id=TENANT, **span)
    by_model = u.QueryUsageRequest(tenant_id=TENANT, metric=METRIC, group_by=["model"], **span)

    def ask(_n: int = 0) -> int:
        (total,) = stub.GetUsage(question, metadata=metadata, timeout=30).totals
        return total.event_count

    def ask_meter(_n: int = 0) -> int:
        found = stub.QueryUsage(by_model, metadata=metadata, timeout=30).rows
        assert len(found) == MODELS, "a model is missing"
        return sum(row.event_count for row in found)

    assert ask() == ask_meter() == HISTORY and _dirty_hours(raw) == []
    reference, meter_reference = reads._alternating(ask, ask_meter, REFERENCE_CALLS)

    started, stop = time.monotonic(), threading.Event()

    def live() -> None:
        while not stop.is_set():
            hour_us = day + (23 - int((time.monotonic() - started) // MOVE_EVERY) % 24) * HOUR_US
            record(lambda n, hour_us=hour_us: hour_us + n % 3_600 * 1_000_000, LIVE_BATCH)
            time.sleep(LIVE_PAUSE)

    sender = threading.Thread(target=live, name="busy sender")
    sender.start()
    slots: dict[int, list[float]] = {}
    meter_slots: dict[int, list[float]] = {}
    marks: dict[int, list[int]] = {}
    ages: dict[int, list[float]] = {}
    try:
        while (elapsed := time.monotonic() - started) < BUSY_SECONDS:
            slot = int(elapsed // SLOT)
            slots.setdefault(slot, []).extend(timing.timed(ask, 1))
            meter_slots.setdefault(slot, []).extend(timing.timed(ask_meter, 1))
            marks.setdefault(slot, []).extend(_dirty_hours(raw))
            ages.setdefault(slot, []).append(_oldest_mark_seconds(raw))
            time.sleep(ASK_EVERY)
    finally:
        stop.set()
        sender.join()
    print(f"GetUsage and QueryUsage by model of one day: {HISTORY:,} events over its 24 hours, rolled up; then")
    print(
        f"  {LIVE_BATCH} events every {LIVE_PAUSE * 1000:.0f} ms into one of its hours, the next hour every "
        f"{MOVE_EVERY:.0f} s, with rollups every {ROLLUP_SECONDS} s ({next(ids):,} events at the end)"
    )
    print(
        f"  {'case':36} {'GetUsage p50 / p90 ms':>22} {'QueryUsage p50 / p90 ms':>24} {'calls':>6}  "
        "most hours of the day's mark, oldest mark"
    )
    rows = [("clean day, nothing sent (reference)", reference, meter_reference, "")]
    for slot, samples in sorted(slots.items()):
        state = f"{max(marks[slot], default=0):>3} hours, {max(ages[slot]):5.1f} s old"
        rows.append((f"busy day, {slot * SLOT:.0f}-{(slot + 1) * SLOT:.0f} s", samples, meter_slots[slot], state))
    for label, totals, meters, state in rows:
        print(
            f"  {label:36} {timing.pct(totals, 50):10.2f} / {timing.pct(totals, 90):8.2f} "
            f"{timing.pct(meters, 50):12.2f} / {timing.pct(meters, 90):8.2f} {len(totals):6}  {state}"
        )


def _dirty_hours(raw) -> list[int]:
    """How many hours the tenant's day marks hold, each."""
    found = raw.execute(
        'SELECT dirty_hours FROM "usage".dirty_buckets WHERE tenant_id = %s AND period = 2', (TENANT,)
    ).fetchall()
    return [bin(hours).count("1") for (hours,) in found]


def _oldest_mark_seconds(raw) -> float:
    """The age of the tenant's oldest mark, as GetRollupStatus and the rollup-lag gauge report it (0: none)."""
    (oldest,) = raw.execute(
        'SELECT min(marked_at_us) FROM "usage".dirty_buckets WHERE tenant_id = %s', (TENANT,)
    ).fetchone()
    return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1_000_000)
