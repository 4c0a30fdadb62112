"""UsageRecorder against real Usage servers: batching, spool, retries, verdicts, bounds."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest

from scripts.pgcluster import free_port
from tests import support
from tollgate.clients.recorder import UsageRecorder
from tollgate.clients.recorder.sender import backoff_delay
from tollgate.clients.recorder.spool import SpoolMismatch
from tollgate.services.usage import server as usage_server
from tollgate.services.usage.config import Settings as UsageSettings
from tollgate.usage.v1 import usage_pb2

METRIC = "leads.processed"
RECORD_BOUND = 0.05  # seconds: record() must return within this, whatever the server or spool does


def totals(stub, token, tenant) -> dict[str, tuple[int, int]]:
    """GetUsage over a window around now: {metric: (quantity, event_count)}."""
    now = datetime.now(UTC)
    request = usage_pb2.GetUsageRequest(tenant_id=tenant)
    request.start_time.FromDatetime(now - timedelta(days=1))
    request.end_time.FromDatetime(now + timedelta(days=1))
    response = stub.GetUsage(request, metadata=support.bearer(token), timeout=10)
    return {t.metric: (t.quantity, t.event_count) for t in response.totals}


def spooled_on_disk(spool_path: str) -> int:
    with closing(sqlite3.connect(spool_path)) as spool:
        return spool.execute("SELECT count(*) FROM spooled_events").fetchone()[0]


def dead_target() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def spool_path(tmp_path) -> str:
    return str(tmp_path / "spool.db")


@pytest.fixture
def writer_token(dbs, tenant) -> str:
    return support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read"])


def test_backoff_delays_grow_with_each_attempt_and_never_pass_the_cap():
    lows = [backoff_delay(n, base=0.1, cap=5.0, rng=lambda: 0.0) for n in range(1, 12)]
    highs = [backoff_delay(n, base=0.1, cap=5.0, rng=lambda: 0.999999) for n in range(1, 12)]
    assert lows[:6] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    assert lows == sorted(lows) and highs == sorted(highs)
    assert max(highs) <= 5.0 and backoff_delay(10_000, base=0.1, cap=5.0) <= 5.0


def test_record_never_raises_nor_blocks_past_its_bound_with_the_server_gone_and_the_spool_full(spool_path, caplog):
    caplog.set_level(logging.WARNING, logger="tollgate.recorder")
    recorder = UsageRecorder(
        dead_target(), "tg_nobody", "t-gone", spool_path, max_spool_events=200, backoff_base=0.01, backoff_cap=0.05
    )
    try:
        slowest, verdicts = 0.0, []
        for i in range(2_000):
            started = time.perf_counter()
            verdicts.append(recorder.record(METRIC, 1, metadata={"i": i}))
            slowest = max(slowest, time.perf_counter() - started)
        started = time.perf_counter()
        odd = recorder.record(None, "not a number", metadata=object(), occurred_at="yesterday")  # type: ignore[arg-type]
        slowest = max(slowest, time.perf_counter() - started)
        assert slowest < RECORD_BOUND
        assert verdicts.count(True) == 200 and verdicts.count(False) == 1_800 and odd is False
        assert recorder.counters().dropped == 1_801 and recorder.counters().spooled == 200
        assert support.wait_until(
            lambda: any("dropped" in r.getMessage() and "spool full" in r.getMessage() for r in caplog.records),
            seconds=5,
        )
    finally:
        recorder.close(timeout=0.1)


def test_events_that_cannot_be_encoded_are_counted_as_rejected_and_logged(spool_path, caplog):
    caplog.set_level(logging.WARNING, logger="tollgate.recorder")
    recorder = UsageRecorder(dead_target(), "tg_nobody", "t-gone", spool_path)
    try:
        assert recorder.record(METRIC, "three") is True  # accepted on the hot path, refused off it
        assert recorder.record(METRIC, 1, metadata={"when": object()}) is True
        assert recorder.record(METRIC, 1, occurred_at="yesterday") is True
        # Values the server would refuse the whole batch for, which would then wait in the spool, and every event
        # after it, forever; an infinite instant once ended the sending thread.
        assert recorder.record(METRIC, 1, occurred_at=float("inf")) is True
        assert recorder.record(METRIC, 1, metadata={"ratio": float("nan")}) is True
        assert recorder.record(METRIC, 1, metadata={"steps": [{"cost": 1.5}, {"cost": float("-inf")}]}) is True
        assert recorder.record(METRIC, 1, metadata={"steps": [{"cost": 1.5}], "ok": True}) is True
        assert recorder.persist(timeout=5)
        assert recorder.counters().rejected == 6 and recorder.counters().spooled == 1
        refused = [r.getMessage() for r in caplog.records if "refused before sending" in r.getMessage()]
        assert len(refused) == 6
        assert any("metadata.steps[1].cost is -inf" in m for m in refused), refused
    finally:
        recorder.close(timeout=0.1)  # the one event kept waits for a target that never answers: no flush to wait for


def test_accepted_events_keep_their_ids_in_the_spool_across_a_restart(spool_path):
    first = UsageRecorder(dead_target(), "tg_nobody", "t-gone", spool_path, backoff_base=5, backoff_cap=5)
    for i in range(50):
        first.record(METRIC, 1, event_id=f"given-{i}" if i % 2 else None)
    assert first.persist(timeout=5)
    first.close(timeout=0.1)
    ids = [row[0] for row in sqlite3.connect(spool_path).execute("SELECT event_id FROM spooled_events ORDER BY seq")]
    second = UsageRecorder(dead_target(), "tg_nobody", "t-gone", spool_path, backoff_base=5, backoff_cap=5)
    try:
        assert second.counters().spooled == 50
        again = [row[0] for row in sqlite3.connect(spool_path).execute("SELECT event_id FROM spooled_events")]
        assert again == ids and len(set(ids)) == 50 and ids[1] == "given-1"
    finally:
        second.close(timeout=0.1)


def test_a_spool_file_of_another_tenant_is_refused_at_construction(spool_path):
    UsageRecorder(dead_target(), "tg_nobody", "t-one", spool_path).close(timeout=0.1)
    with pytest.raises(SpoolMismatch):
        UsageRecorder(dead_target(), "tg_nobody", "t-two", spool_path)


def test_retries_are_counted_and_their_delays_grow_up_to_the_cap(spool_path, caplog):
    caplog.set_level(logging.DEBUG, logger="tollgate.recorder")
    recorder = UsageRecorder(
        dead_target(), "tg_nobody", "t-gone", spool_path, max_batch_age=0.0, backoff_base=0.02, backoff_cap=0.16
    )
    try:
        recorder.record(METRIC, 1)
        assert support.wait_until(lambda: recorder.counters().retries >= 8, seconds=10)
        delays = [float(m.group(1)) for r in caplog.records if (m := re.search(r"in ([0-9.]+)s$", r.getMessage()))]
        assert delays[0] <= 0.02 and delays[3] >= 0.08 and max(delays) <= 0.16
        assert recorder.counters().spooled == 1 and recorder.counters().sent == 0
    finally:
        recorder.close(timeout=0.1)


class StoppableUsage:
    """A Usage server on a fixed port that the test stops (a real outage) and starts again."""

    def __init__(self, dbs):
        self.port = free_port()
        self.settings = support.test_settings(
            UsageSettings(), database_url=dbs.usage_url, rollup_interval_seconds=0, port=self.port
        )
        self.running = None

    def start(self) -> None:
        self.running = usage_server.build(self.settings)

    def stop(self) -> None:
        self.running.stop(grace=0)
        self.running = None


def test_events_recorded_while_usage_is_down_are_counted_exactly_once_after_it_returns(
    dbs, tenant, writer_token, spool_path, usage_stub
):
    outage = StoppableUsage(dbs)
    outage.start()
    recorder = UsageRecorder(
        f"127.0.0.1:{outage.port}", writer_token, tenant, spool_path, backoff_base=0.05, backoff_cap=0.5
    )
    try:
        for i in range(2_000):
            assert recorder.record(METRIC, 1 + i % 3, actor_id=f"u{i % 7}")
        outage.stop()
        for i in range(2_000, 10_000):
            assert recorder.record(METRIC, 1 + i % 3, actor_id=f"u{i % 7}")
        assert support.wait_until(lambda: recorder.counters().retries >= 2, seconds=10)
        outage.start()
        assert recorder.flush(timeout=60)
        counters = recorder.counters()
        assert counters.sent + counters.duplicate == 10_000 and counters.spooled == 0 and counters.dropped == 0
        assert totals(usage_stub, writer_token, tenant) == {METRIC: (sum(1 + i % 3 for i in range(10_000)), 10_000)}
    finally:
        recorder.close(timeout=1)
        if outage.running:
            outage.stop()


def test_a_batch_goes_out_when_it_is_full_or_old_enough(usage, tenant, writer_token, spool_path):
    with UsageRecorder(
        f"127.0.0.1:{usage.port}", writer_token, tenant, spool_path, batch_size=10, max_batch_age=0.6
    ) as recorder:
        for _ in range(13):
            recorder.record(METRIC, 1)
        assert support.wait_until(lambda: recorder.counters().sent == 10, seconds=5)
        time.sleep(0.1)
        assert recorder.counters().sent == 10  # the 3 left wait for their age bound
        assert support.wait_until(lambda: recorder.counters().sent == 13, seconds=5)


def test_an_event_with_a_number_json_cannot_hold_is_refused_alone_and_the_events_after_it_arrive(
    usage, usage_stub, tenant, writer_token, spool_path
):
    with UsageRecorder(f"127.0.0.1:{usage.port}", writer_token, tenant, spool_path, batch_size=10) as recorder:
        recorder.record(METRIC, 1, metadata={"ratio": 0.5})
        recorder.record(METRIC, 2, metadata={"ratio": float("nan")})
        recorder.record(METRIC, 4, metadata={"ratio": 0.25})
        assert recorder.flush(timeout=10)
        counters = recorder.counters()
    assert (counters.sent, counters.rejected, counters.errors, counters.spooled) == (2, 1, 0, 0)
    assert totals(usage_stub, writer_token, tenant) == {METRIC: (5, 2)}


def test_rejected_and_conflicting_events_are_counted_and_logged_and_not_retried(
    usage, usage_stub, tenant, writer_token, spool_path, caplog
):
    caplog.set_level(logging.WARNING, logger="tollgate.recorder")
    with UsageRecorder(f"127.0.0.1:{usage.port}", writer_token, tenant, spool_path) as recorder:
        when = datetime.now(UTC)
        recorder.record(METRIC, 2, event_id="same-id", occurred_at=when)
        recorder.record("no.such.metric", 1)
        assert recorder.flush(timeout=10)
        recorder.record(METRIC, 5, event_id="same-id", occurred_at=when)  # same key, other content
        recorder.record(METRIC, 2, event_id="same-id", occurred_at=when)  # same key, same content
        assert recorder.flush(timeout=10)
        counters = recorder.counters()
    assert (counters.sent, counters.rejected, counters.conflict, counters.duplicate) == (1, 1, 1, 1)
    assert counters.spooled == 0 and counters.retries == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("rejected" in m and "no.such.metric" in m and "UNKNOWN_METRIC" in m for m in messages)
    assert any("conflict" in m and "same-id" in m for m in messages)
    assert totals(usage_stub, writer_token, tenant) == {METRIC: (2, 1)}


@pytest.mark.parametrize("refusal", ["UNAUTHENTICATED", "PERMISSION_DENIED"])
def test_a_refused_credential_stops_the_sending_is_said_once_and_the_events_wait_in_the_spool(
    dbs, usage, usage_stub, tenant, writer_token, spool_path, caplog, refusal
):
    caplog.set_level(logging.DEBUG, logger="tollgate.recorder")
    token = (
        "tg_bad.token"
        if refusal == "UNAUTHENTICATED"
        else support.make_token(dbs, tenant=support.new_tenant(), scopes=["usage:write"])
    )
    # Backoff this short would retry hundreds of times while flush() and close() wait, were refusals retried.
    recorder = UsageRecorder(
        f"127.0.0.1:{usage.port}", token, tenant, spool_path, max_batch_age=0.0, backoff_base=0.01, backoff_cap=0.02
    )
    recorder.record(METRIC, 1)
    assert support.wait_until(lambda: recorder.counters().errors == 1, seconds=5)
    recorder.record(METRIC, 2)
    flushed, closed = recorder.flush(timeout=30), recorder.close(timeout=30)
    counters = recorder.counters()
    assert (flushed, closed) == (False, False)
    assert (counters.errors, counters.retries, counters.spooled, counters.sent) == (1, 0, 2, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and refusal in errors[0] and "stops sending" in errors[0]
    with UsageRecorder(f"127.0.0.1:{usage.port}", writer_token, tenant, spool_path) as successor:
        assert successor.flush(timeout=10)
    assert totals(usage_stub, writer_token, tenant) == {METRIC: (3, 2)}


def test_units_merged_through_a_shared_correlation_id_are_counted_apart_and_logged_once(
    usage, usage_stub, tenant, writer_token, spool_path, caplog
):
    caplog.set_level(logging.WARNING, logger="tollgate.recorder")
    when = datetime.now(UTC)
    with UsageRecorder(f"127.0.0.1:{usage.port}", writer_token, tenant, spool_path, max_batch_age=60) as recorder:
        for _ in range(3):  # three units of one request, its id given as correlation_id: the pitfall
            recorder.record(METRIC, 1, occurred_at=when, correlation_id="request-42")
        recorder.record(METRIC, 1, occurred_at=when, correlation_id="request-42", actor_id="other")
        recorder.record(METRIC, 1, occurred_at=when, event_id="redelivered")
        # All five on disk before the flush, so they go in one batch: merges of two batches are two reports.
        assert support.wait_until(lambda: spooled_on_disk(spool_path) == 5, seconds=10)
        assert recorder.flush(timeout=10)
        recorder.record(METRIC, 1, occurred_at=when, event_id="redelivered")  # a true redelivery
        assert recorder.flush(timeout=10)
        counters = recorder.counters()
    assert (counters.sent, counters.merged, counters.duplicate, counters.conflict) == (2, 3, 1, 0)
    merges = [r for r in caplog.records if "merged" in r.getMessage()]
    assert [r.levelno for r in merges] == [logging.WARNING]
    assert "3 events were merged" in merges[0].getMessage() and "correlation_id" in merges[0].getMessage()
    assert totals(usage_stub, writer_token, tenant) == {METRIC: (2, 2)}


def test_dimensions_are_spooled_with_their_events_and_arrive_grouped_by_a_dimension(
    usage, usage_stub, usage_admin_stub, admin_token, tenant, writer_token, spool_path
):
    metric = f"ai.tokens.{tenant}"
    usage_admin_stub.UpsertMetric(
        usage_pb2.UpsertMetricRequest(
            metric=usage_pb2.Metric(
                name=metric, classification=usage_pb2.CLASSIFICATION_BILLABLE, dimensions=["model", "token_type"]
            )
        ),
        metadata=support.bearer(admin_token),
        timeout=10,
    )
    # Recorded while Usage is out of reach, so they wait in the spool file, then sent by a recorder started later.
    offline = UsageRecorder(dead_target(), writer_token, tenant, spool_path, backoff_base=5, backoff_cap=5)
    given = {"model": "gpt-4o", "token_type": "prompt"}
    assert offline.record(metric, 100, dimensions=given)
    given["model"] = "changed after the call"  # record() copied the mapping
    assert offline.record(metric, 30, dimensions={"model": "gpt-4o", "token_type": "completion"})
    assert offline.record(metric, 7, dimensions={"model": "claude"})
    assert offline.record(metric, 1)
    assert offline.persist(timeout=5)
    offline.close(timeout=0.1)
    with UsageRecorder(f"127.0.0.1:{usage.port}", writer_token, tenant, spool_path) as recorder:
        assert recorder.flush(timeout=30)
        assert recorder.counters().sent == 4
    now = datetime.now(UTC)
    request = usage_pb2.QueryUsageRequest(tenant_id=tenant, metric=metric, group_by=["model"])
    request.start_time.FromDatetime(now - timedelta(days=1))
    request.end_time.FromDatetime(now + timedelta(hours=1))
    rows = usage_stub.QueryUsage(request, metadata=support.bearer(writer_token), timeout=10).rows
    assert {r.group["model"]: (r.value, r.event_count) for r in rows} == {
        "": (1, 1),
        "claude": (7, 1),
        "gpt-4o": (130, 2),
    }
