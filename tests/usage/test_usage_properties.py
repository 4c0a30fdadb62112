"""Generated requests through a real channel: never INTERNAL/UNKNOWN. Batches get one verdict per
event in order, only ACCEPTED events count, and resending a batch changes nothing."""

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import support
from tests.usage_support import MINUTE_US, list_all, now_us, totals
from tollgate.services.usage.domain.queries import EventFilter
from tollgate.services.usage.service import catalog
from tollgate.shared import pagination, proto_time
from tollgate.usage.v1 import usage_pb2 as u

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6) | st.sampled_from(["", "x" * 129, "a\x00"])
IDS = st.sampled_from(["e1", "e2", "e3", "", "e\x00", "i" * 129]) | st.text(max_size=4)
METRICS = st.sampled_from(["api.requests", "leads.routed", "sla.timers.started", "no.such", "", "m" * 200])
SOURCES = st.sampled_from(["crm", "webhook:x", "adapter:y", "", "s\x00"])
OFFSETS_US = st.sampled_from([-60, -1, 0, 4, 6, -35 * 24 * 60, -36 * 24 * 60]).map(
    lambda m: m * MINUTE_US
) | st.integers(-(2**62), 2**62)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)


@st.composite
def events(draw):
    message = u.UsageEvent(
        event_id=draw(IDS),
        metric=draw(METRICS),
        quantity=draw(st.integers(-3, 10**12 + 2) | st.just(2**63 - 1)),
        actor_id=draw(TEXT),
        source_service=draw(SOURCES),
        correlation_id=draw(st.sampled_from(["", "c1", "c2"])),
        idempotency_key=draw(st.sampled_from(["", "k1", "k2"])),
    )
    if draw(st.booleans()):
        at_us = now_us() + draw(OFFSETS_US)
        message.occurred_at.CopyFrom(Timestamp(seconds=at_us // 1_000_000, nanos=draw(st.integers(0, 999_999_999))))
    if draw(st.booleans()):
        message.metadata.update(draw(st.dictionaries(TEXT, JSON, max_size=3)))
    if draw(st.integers(0, 20)) == 0:
        message.metadata.update({"big": "z" * 5000})
    return message


BATCHES = st.lists(events(), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=BATCHES)
def test_generated_batches_get_one_verdict_each_and_only_accepted_events_count(usage_stub, admin_token, batch):
    tenant = support.new_tenant()
    metadata = support.bearer(admin_token)
    try:
        response = usage_stub.RecordEvents(
            u.RecordEventsRequest(tenant_id=tenant, events=batch), metadata=metadata, timeout=30
        )
    except grpc.RpcError as error:
        raise AssertionError(f"{error.code()}: {error.details()}") from None
    results = list(response.results)
    assert [(r.index, r.event_id) for r in results] == [(i, e.event_id) for i, e in enumerate(batch)]
    assert all(r.verdict != u.VERDICT_UNSPECIFIED for r in results)
    accepted = [e for e, r in zip(batch, results) if r.verdict == u.VERDICT_ACCEPTED]
    assert all((r.reason != u.REJECT_REASON_UNSPECIFIED) == (r.verdict == u.VERDICT_REJECTED) for r in results)
    expected = {}
    for e in accepted:
        quantity, count = expected.get(e.metric, (0, 0))
        expected[e.metric] = (quantity + e.quantity, count + 1)
    assert totals(usage_stub, admin_token, tenant) == expected
    assert sorted(s.event.event_id for s in list_all(usage_stub, admin_token, tenant)) == sorted(
        e.event_id for e in accepted
    )
    again = usage_stub.RecordEvents(
        u.RecordEventsRequest(tenant_id=tenant, events=batch), metadata=metadata, timeout=30
    )
    assert u.VERDICT_ACCEPTED not in [r.verdict for r in again.results]
    assert totals(usage_stub, admin_token, tenant) == expected


# A page position forged by hand, signed with the right binding (tokens are opaque, not secret).
POSITIONS = st.none() | st.lists(st.integers(-(2**70), 2**70) | TEXT | st.none(), max_size=3)
INSTANTS = st.integers(-(2**40), 2**40).map(lambda s: Timestamp(seconds=s))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tenant=TEXT,
    metrics=st.lists(TEXT, max_size=3),
    actor=TEXT,
    start=INSTANTS,
    end=INSTANTS,
    position=POSITIONS,
    size=st.integers(-5, 5000),
)
def test_generated_reads_get_an_answer_or_a_precise_status(
    usage_stub, admin_token, tenant, metrics, actor, start, end, position, size
):
    metadata = support.bearer(admin_token)
    where = EventFilter(
        tenant_id=tenant,
        actor_id=actor,
        start_us=proto_time.to_micros(start) if start.seconds else None,
        end_us=proto_time.to_micros(end) if end.seconds else None,
    )
    events_token = "" if position is None else pagination.encode(position, where.scope())
    metrics_token = "" if position is None else pagination.encode(position, catalog.SCOPE)
    calls = [
        lambda: usage_stub.GetUsage(
            u.GetUsageRequest(tenant_id=tenant, metrics=metrics, actor_id=actor, start_time=start, end_time=end),
            metadata=metadata,
        ),
        lambda: usage_stub.ListEvents(
            u.ListEventsRequest(
                tenant_id=tenant,
                actor_id=actor,
                start_time=start,
                end_time=end,
                page_size=size,
                page_token=events_token,
            ),
            metadata=metadata,
        ),
        lambda: usage_stub.ListMetrics(
            u.ListMetricsRequest(page_size=size, page_token=metrics_token), metadata=metadata
        ),
    ]
    for call in calls:
        try:
            call()
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED), (
                f"{error.code()}: {error.details()}"
            )
