"""Timestamps in every Usage RPC that takes one, through real servers on SQLite and PostgreSQL: presence, not
zero, says whether one was given (the epoch is an instant); nanos outside 0..999,999,999 are INVALID_ARGUMENT
naming the field; digits below the microsecond are dropped (docs/api.md, Conventions)."""

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2

from tests import support
from tests.usage.test_usage_input_tenants import refused, violations
from tests.usage.test_usage_stream_batches import field_violations
from tests.usage_support import MINUTE_US, event, list_all, now_us, record, totals, ts, verdicts
from tollgate.usage.v1 import usage_pb2 as u

EPOCH = Timestamp()  # 1970-01-01T00:00:00Z, set explicitly: a present field holding zero


@pytest.fixture
def token(dbs, tenant):
    return support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read", "usage:admin"])


@pytest.fixture
def recorded(usage_stub, usage_admin_stub, token, tenant):
    """Two events an hour ago, rolled up."""
    at = now_us() - 60 * MINUTE_US
    assert verdicts(record(usage_stub, token, tenant, [event("e1", at_us=at), event("e2", at_us=at + MINUTE_US)])) == [
        "ACCEPTED",
        "ACCEPTED",
    ]
    usage_admin_stub.RunRollup(u.RunRollupRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=60)
    return at


def test_get_usage_takes_the_epoch_as_a_start_instead_of_calling_it_missing(usage_stub, token, tenant, recorded):
    request = u.GetUsageRequest(tenant_id=tenant, start_time=EPOCH, end_time=ts(now_us() + 60 * MINUTE_US))
    response = usage_stub.GetUsage(request, metadata=support.bearer(token), timeout=30)
    assert [(t.metric, t.quantity) for t in response.totals] == [("api.requests", 2)]


def test_listing_events_up_to_the_epoch_lists_nothing_and_from_it_lists_everything(usage_stub, token, tenant, recorded):
    assert list_all(usage_stub, token, tenant, end_time=EPOCH) == []
    assert [s.event.event_id for s in list_all(usage_stub, token, tenant, start_time=EPOCH)] == ["e1", "e2"]


def test_listing_aggregates_up_to_the_epoch_lists_nothing_and_from_it_lists_everything(
    usage_stub, token, tenant, recorded
):
    def days(**range_):
        request = u.ListAggregatesRequest(tenant_id=tenant, metric="api.requests", period=u.PERIOD_HOUR, **range_)
        return list(usage_stub.ListAggregates(request, metadata=support.bearer(token), timeout=30).aggregates)

    assert days(end_time=EPOCH) == []
    assert sum(a.event_count for a in days(start_time=EPOCH)) == 2


def test_a_purge_before_the_epoch_is_a_cutoff_not_a_missing_one(usage_stub, usage_admin_stub, token, tenant, recorded):
    request = u.PurgeEventsRequest(tenant_id=tenant, before_time=EPOCH)
    report = usage_admin_stub.PurgeEvents(request, metadata=support.bearer(token), timeout=60)
    assert (report.events_deleted, report.events_kept) == (0, 0)
    assert len(list_all(usage_stub, token, tenant)) == 2


def timestamp_fields(tenant: str) -> list[tuple[str, object, str, str]]:
    """(rpc, request, Timestamp attribute path, field violation) for every Timestamp a Usage request carries."""
    recent = now_us() - 30 * MINUTE_US
    window = dict(start_time=ts(recent - 60 * MINUTE_US), end_time=ts(recent))
    get_usage = u.GetUsageRequest(tenant_id=tenant, **window)
    list_events = u.ListEventsRequest(tenant_id=tenant, **window)
    list_aggregates = u.ListAggregatesRequest(tenant_id=tenant, metric="api.requests", period=u.PERIOD_DAY, **window)
    purge = u.PurgeEventsRequest(tenant_id=tenant, before_time=ts(recent), dry_run=True)
    batch = u.RecordEventsRequest(tenant_id=tenant, events=[event("ok", at_us=recent), event("bad", at_us=recent)])
    return [
        ("GetUsage", get_usage, "start_time", "start_time"),
        ("GetUsage", get_usage, "end_time", "end_time"),
        ("ListEvents", list_events, "start_time", "start_time"),
        ("ListEvents", list_events, "end_time", "end_time"),
        ("ListAggregates", list_aggregates, "start_time", "start_time"),
        ("ListAggregates", list_aggregates, "end_time", "end_time"),
        ("PurgeEvents", purge, "before_time", "before_time"),
        ("RecordEvents", batch, "events.1.occurred_at", "events[1].occurred_at"),
    ]


CASES = [(rpc, path) for rpc, _, path, _ in timestamp_fields("t")]


@pytest.mark.parametrize("nanos", [-1, 1_000_000_000, 2**31 - 1, -(2**31)])
@pytest.mark.parametrize("rpc,path", CASES)
def test_nanos_outside_a_second_are_refused_naming_the_field_and_store_nothing(
    usage_stub, usage_admin_stub, token, tenant, rpc, path, nanos
):
    [(_, request, _, field)] = [c for c in timestamp_fields(tenant) if c[0] == rpc and c[2] == path]
    _resolve(request, path).nanos = nanos
    stub = usage_admin_stub if rpc == "PurgeEvents" else usage_stub
    error = refused(lambda: getattr(stub, rpc)(request, metadata=support.bearer(token), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(error)) == [field] and str(nanos) in violations(error)[field]
    assert list_all(usage_stub, token, tenant) == []


@pytest.mark.parametrize("rpc,path", CASES)
def test_the_largest_nanos_of_a_second_is_accepted(usage_stub, usage_admin_stub, token, tenant, rpc, path):
    [(_, request, _, _)] = [c for c in timestamp_fields(tenant) if c[0] == rpc and c[2] == path]
    _resolve(request, path).nanos = 999_999_999
    stub = usage_admin_stub if rpc == "PurgeEvents" else usage_stub
    getattr(stub, rpc)(request, metadata=support.bearer(token), timeout=30)


def _resolve(message, path: str):
    for part in path.split("."):
        message = message[int(part)] if part.isdigit() else getattr(message, part)
    return message


def test_digits_below_the_microsecond_are_dropped_so_such_events_are_the_same_content(usage_stub, token, tenant):
    at = now_us() - 60 * MINUTE_US + 123_456

    def at_nanos(event_id: str, nanos: int, **fields):
        sent = event(event_id, at_us=at, **fields)
        sent.occurred_at.nanos += nanos
        return sent

    first = record(usage_stub, token, tenant, [at_nanos("e1", 789, correlation_id="job-1")])
    again = record(usage_stub, token, tenant, [at_nanos("e1", 1, correlation_id="job-1")])
    other_id = record(usage_stub, token, tenant, [at_nanos("e2", 999, correlation_id="job-1")])
    assert verdicts(first + again + other_id) == ["ACCEPTED", "DUPLICATE", "DUPLICATE"]
    assert other_id[0].dedup_key == u.DEDUP_KEY_CORRELATION
    [stored] = list_all(usage_stub, token, tenant)
    assert stored.event.occurred_at == ts(at)


def test_a_range_bound_with_sub_microsecond_digits_counts_from_its_microsecond(usage_stub, token, tenant):
    at = now_us() - 60 * MINUTE_US
    record(usage_stub, token, tenant, [event("e1", at_us=at)])
    start = ts(at)
    start.nanos += 999  # 999 ns after the event, inside the same microsecond
    request = u.GetUsageRequest(tenant_id=tenant, start_time=start, end_time=ts(at + MINUTE_US))
    response = usage_stub.GetUsage(request, metadata=support.bearer(token), timeout=30)
    assert [(t.metric, t.event_count) for t in response.totals] == [("api.requests", 1)]
    assert totals(usage_stub, token, tenant, start_us=at + 1, end_us=at + MINUTE_US) == {}


def test_a_streamed_batch_with_nanos_out_of_range_is_answered_invalid_naming_the_field_and_the_stream_goes_on(
    usage_stub, token, tenant
):
    bad = event("bad")
    bad.occurred_at.nanos = -1
    answers = list(
        usage_stub.StreamEvents(
            iter(
                [
                    u.StreamEventsRequest(batch_id="bad", tenant_id=tenant, events=[event("ok-1"), bad]),
                    u.StreamEventsRequest(batch_id="good", tenant_id=tenant, events=[event("ok-2")]),
                ]
            ),
            metadata=support.bearer(token),
            timeout=30,
        )
    )
    assert [(a.batch_id, a.error.code) for a in answers] == [("bad", code_pb2.INVALID_ARGUMENT), ("good", 0)]
    assert field_violations(answers[0].error) == ["events[1].occurred_at"]
    assert [s.event.event_id for s in list_all(usage_stub, token, tenant)] == ["ok-2"]
