"""RecordEvents and StreamEvents through a real channel, on SQLite and PostgreSQL: every verdict,
every rejection reason, batch faults, tenant isolation and exactly-once under concurrent retries."""

import grpc
import pytest
from prometheus_client import REGISTRY

from tests import support
from tests.conftest import status_of
from tests.usage_support import DAY_US, MINUTE_US, event, list_all, now_us, record, tenant_token, totals, verdicts
from tollgate.services.usage.repository.postgres.bulk_ingest import FEW
from tollgate.usage.v1 import usage_pb2 as u


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


def test_a_new_event_is_accepted_and_counted_once(usage_stub, token, tenant):
    results = record(usage_stub, token, tenant, [event("e1", quantity=5)])
    assert verdicts(results) == ["ACCEPTED"]
    assert (results[0].index, results[0].event_id) == (0, "e1")
    assert totals(usage_stub, token, tenant) == {"api.requests": (5, 1)}


def test_the_same_event_sent_twice_is_a_duplicate_and_counts_once(usage_stub, token, tenant):
    record(usage_stub, token, tenant, [event("e1", quantity=5)])
    again = record(usage_stub, token, tenant, [event("e1", quantity=5)])
    assert verdicts(again) == ["DUPLICATE"]
    assert again[0].dedup_key == u.DEDUP_KEY_EVENT_ID and again[0].existing_event_id == "e1"
    assert totals(usage_stub, token, tenant) == {"api.requests": (5, 1)}


@pytest.mark.parametrize(
    "key,fields",
    [
        (u.DEDUP_KEY_IDEMPOTENCY_KEY, {"idempotency_key": "pay-1"}),
        (u.DEDUP_KEY_CORRELATION, {"correlation_id": "job-7"}),
    ],
)
def test_each_dedup_key_catches_a_resend_under_a_new_event_id(usage_stub, token, tenant, key, fields):
    record(usage_stub, token, tenant, [event("first", quantity=3, **fields)])
    again = record(usage_stub, token, tenant, [event("second", quantity=3, **fields)])
    assert verdicts(again) == ["DUPLICATE"]
    assert (again[0].dedup_key, again[0].existing_event_id) == (key, "first")
    assert totals(usage_stub, token, tenant) == {"api.requests": (3, 1)}


@pytest.mark.parametrize("fields", [{}, {"idempotency_key": "k"}, {"correlation_id": "c"}])
def test_a_conflict_changes_nothing_and_leaves_the_stored_event_untouched(usage_stub, token, tenant, fields):
    original = event("e1", quantity=3, actor_id="alice", metadata={"plan": "pro"}, **fields)
    record(usage_stub, token, tenant, [original])
    other_id = "e1" if not fields else "e2"
    changed = event(other_id, quantity=4, actor_id="bob", metadata={"plan": "free"}, **fields)
    results = record(usage_stub, token, tenant, [changed])
    assert verdicts(results) == ["CONFLICT"]
    assert results[0].existing_event_id == "e1"
    stored = list_all(usage_stub, token, tenant)
    assert [s.event for s in stored] == [original]
    assert totals(usage_stub, token, tenant) == {"api.requests": (3, 1)}


def test_collisions_inside_one_batch_are_judged_in_order_and_the_first_wins(usage_stub, token, tenant):
    batch = [
        event("a", quantity=1),
        event("a", quantity=1),
        event("a", quantity=9),
        event("b", quantity=2, idempotency_key="k"),
        event("c", quantity=7, idempotency_key="k"),
        event("d", quantity=1),
    ]
    results = record(usage_stub, token, tenant, batch)
    assert verdicts(results) == ["ACCEPTED", "DUPLICATE", "CONFLICT", "ACCEPTED", "CONFLICT", "ACCEPTED"]
    assert [r.index for r in results] == list(range(6))
    assert results[4].existing_event_id == "b"
    assert totals(usage_stub, token, tenant) == {"api.requests": (4, 3)}


@pytest.mark.parametrize("size", [1, 2, FEW, FEW + 1, 40])
def test_a_batch_of_any_size_is_judged_against_stored_events_alike(usage_stub, token, tenant, size):
    """On PostgreSQL a batch of up to FEW events is inserted straight and a larger one staged with COPY
    (postgres/bulk_ingest.py); either way a resend of a stored event is a DUPLICATE, a new event taking a stored
    idempotency key a CONFLICT naming it, and only new events count."""
    record(usage_stub, token, tenant, [event("a", quantity=1), event("b", quantity=2, idempotency_key="k")])
    kinds = [event("a", quantity=1), event("c", quantity=5, idempotency_key="k")]
    batch = (kinds + [event(f"n{n}", quantity=n + 1) for n in range(size)])[:size]
    results = record(usage_stub, token, tenant, batch)
    assert verdicts(results) == (["DUPLICATE", "CONFLICT"] + ["ACCEPTED"] * size)[:size]
    if size > 1:
        assert results[1].existing_event_id == "b"
    new = [e.quantity for e in batch[2:]]
    assert totals(usage_stub, token, tenant) == {"api.requests": (3 + sum(new), 2 + len(new))}


def _bad(reason):
    """An event that fails with `reason`, and nothing else."""
    cases = {
        u.REJECT_REASON_MISSING_FIELD: lambda: event("x", source_service=""),
        u.REJECT_REASON_UNKNOWN_METRIC: lambda: event("x", metric="no.such.metric"),
        u.REJECT_REASON_NON_POSITIVE_QUANTITY: lambda: event("x", quantity=0),
        u.REJECT_REASON_IN_FUTURE: lambda: event("x", at_us=now_us() + 10 * MINUTE_US),
        u.REJECT_REASON_TOO_OLD: lambda: event("x", at_us=now_us() - 36 * DAY_US),
        u.REJECT_REASON_FIELD_TOO_LONG: lambda: event("x", actor_id="a" * 129),
        u.REJECT_REASON_NUL_CHARACTER: lambda: event("x", correlation_id="c\x00d"),
        u.REJECT_REASON_METADATA_TOO_LARGE: lambda: event("x", metadata={"blob": "z" * 4100}),
        u.REJECT_REASON_EXTERNAL_BILLABLE: lambda: event("x", source_service="webhook:stripe"),
        u.REJECT_REASON_QUANTITY_TOO_LARGE: lambda: event("x", quantity=10**12 + 1),
        u.REJECT_REASON_UNDECLARED_DIMENSION: lambda: event("x", dimensions={"model": "gpt-4o"}),
        u.REJECT_REASON_TOO_MANY_DIMENSIONS: lambda: event("x", dimensions={f"d{n}": "v" for n in range(9)}),
        u.REJECT_REASON_EMPTY_DIMENSION_VALUE: lambda: event("x", dimensions={"model": ""}),
    }
    return cases[reason]()


# TOO_MANY_DIMENSION_COMBINATIONS takes a server with a small limit: tests/usage/test_usage_meters_combinations.py.
REASONS = [
    r
    for r in u.RejectReason.values()
    if r not in (u.REJECT_REASON_UNSPECIFIED, u.REJECT_REASON_TOO_MANY_DIMENSION_COMBINATIONS)
]


@pytest.mark.parametrize("reason", REASONS, ids=[u.RejectReason.Name(r) for r in REASONS])
def test_each_rejection_reason_rejects_only_its_event_and_the_batch_goes_on(usage_stub, token, tenant, reason):
    results = record(usage_stub, token, tenant, [event("ok-1"), _bad(reason), event("ok-2")])
    assert verdicts(results) == ["ACCEPTED", "REJECTED", "ACCEPTED"]
    assert results[1].reason == reason and results[1].message
    assert results[0].reason == results[2].reason == u.REJECT_REASON_UNSPECIFIED
    assert totals(usage_stub, token, tenant) == {"api.requests": (2, 2)}


def test_a_missing_occurred_at_and_a_nul_in_metadata_are_rejected(usage_stub, token, tenant):
    no_time = u.UsageEvent(event_id="t", metric="api.requests", quantity=1, source_service="crm")
    nul_key = event("m", metadata={"a\x00b": 1})
    results = record(usage_stub, token, tenant, [no_time, nul_key])
    assert [r.reason for r in results] == [u.REJECT_REASON_MISSING_FIELD, u.REJECT_REASON_NUL_CHARACTER]
    assert totals(usage_stub, token, tenant) == {}


def test_an_external_source_may_emit_a_non_billable_metric(usage_stub, token, tenant):
    results = record(
        usage_stub,
        token,
        tenant,
        [event("w", metric="integrations.webhooks.received", source_service="webhook:stripe")],
    )
    assert verdicts(results) == ["ACCEPTED"]


violations = support.field_violations


@pytest.mark.parametrize("tenant_id,count,field", [("own", 0, "events"), ("own", 1001, "events"), ("", 1, "tenant_id")])
def test_a_batch_fault_fails_the_whole_call_and_stores_nothing(
    usage_stub, admin_token, tenant, tenant_id, count, field
):
    request = u.RecordEventsRequest(
        tenant_id=tenant if tenant_id == "own" else tenant_id, events=[event(f"e{n}") for n in range(count)]
    )
    with pytest.raises(grpc.RpcError) as raised:
        usage_stub.RecordEvents(request, metadata=support.bearer(admin_token), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == [field]
    assert totals(usage_stub, admin_token, tenant) == {}


def test_a_token_of_tenant_a_can_neither_write_nor_read_tenant_b(dbs, usage_stub, admin_token, token, tenant):
    other = support.new_tenant()
    record(usage_stub, admin_token, other, [event("b-1")])
    write = status_of(lambda: record(usage_stub, token, other, [event("a-1")]))
    read = status_of(lambda: totals(usage_stub, token, other))
    listing = status_of(lambda: list_all(usage_stub, token, other))
    assert write == read == listing == grpc.StatusCode.PERMISSION_DENIED
    assert totals(usage_stub, admin_token, other) == {"api.requests": (1, 1)}
    assert totals(usage_stub, token, tenant) == {}


def test_a_stream_answers_each_batch_in_order_with_its_batch_id(usage_stub, token, tenant):
    requests = [
        u.StreamEventsRequest(batch_id=f"b{n}", tenant_id=tenant, events=[event(f"e{n}"), event("same")])
        for n in range(5)
    ]
    responses = list(usage_stub.StreamEvents(iter(requests), metadata=support.bearer(token), timeout=30))
    assert [r.batch_id for r in responses] == [f"b{n}" for n in range(5)]
    assert verdicts(responses[0].results) == ["ACCEPTED", "ACCEPTED"]
    assert all(verdicts(r.results) == ["ACCEPTED", "DUPLICATE"] for r in responses[1:])
    assert totals(usage_stub, token, tenant) == {"api.requests": (6, 6)}


def test_eight_concurrent_senders_with_overlapping_batches_and_retries_give_exact_totals(usage_stub, token, tenant):
    # 400 distinct events; each sender sends overlapping slices of them, twice (a retry), in its own order.
    events = [
        event(
            f"e{n}",
            quantity=1 + n % 5,
            idempotency_key=f"k{n}",
            correlation_id=f"c{n // 2}",
            metric="api.requests" if n % 2 else "leads.routed",
        )
        for n in range(400)
    ]
    errors = []

    def sender(k: int) -> None:
        mine = events[k * 40 : k * 40 + 120] if k % 2 else list(reversed(events[k * 40 : k * 40 + 120]))
        try:
            for _attempt in range(2):
                for start in range(0, len(mine), 30):
                    record(usage_stub, token, tenant, mine[start : start + 30])
        except grpc.RpcError as error:  # noqa: PERF203 - collected and asserted below
            errors.append(error)

    support.in_threads(sender, 8)
    assert not errors
    covered = events[: 7 * 40 + 120]
    expected = {}
    for e in covered:
        quantity, count = expected.get(e.metric, (0, 0))
        expected[e.metric] = (quantity + e.quantity, count + 1)
    assert totals(usage_stub, token, tenant) == expected


def test_verdicts_are_counted_by_verdict_classification_and_reason_never_by_tenant(usage_stub, token, tenant):
    def sample(name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    keys = [
        ("tollgate_usage_events_total", {"verdict": "ACCEPTED", "classification": "NON_BILLABLE"}),
        ("tollgate_usage_events_total", {"verdict": "REJECTED", "classification": "BILLABLE"}),
        ("tollgate_usage_rejections_total", {"reason": "NON_POSITIVE_QUANTITY"}),
    ]
    before = [sample(name, **labels) for name, labels in keys]
    record(usage_stub, token, tenant, [event("s", metric="sla.timers.started"), event("q", quantity=0)])
    assert [sample(name, **labels) - b for (name, labels), b in zip(keys, before)] == [1, 1, 1]
    label_names = {
        label
        for family in REGISTRY.collect()
        if family.name.startswith("tollgate_usage")
        for s in family.samples
        for label in s.labels
    }
    assert label_names == {"verdict", "classification", "reason", "grpc_code"}
