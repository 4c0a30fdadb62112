"""Events carry dimensions over gRPC (RecordEvents, ListEvents): per-event verdicts for bad dimensions, values that
decide DUPLICATE against CONFLICT, and a dimension events carry that the catalog keeps; on SQLite and PostgreSQL."""

import uuid

import grpc
import pytest

from tests import support
from tests.usage_support import event, list_all, record, tenant_token, verdicts
from tollgate.usage.v1 import usage_pb2 as u


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


@pytest.fixture
def meter(usage_admin_stub, admin_token) -> str:
    """A fresh metric declaring model and token_type (the catalog is global: each test makes its own)."""
    name = f"ai.tokens.{uuid.uuid4().hex[:10]}"
    usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(
            metric=u.Metric(
                name=name, classification=u.CLASSIFICATION_BILLABLE, unit="token", dimensions=["model", "token_type"]
            )
        ),
        metadata=support.bearer(admin_token),
        timeout=30,
    )
    return name


def test_events_with_dimensions_are_stored_and_listed_with_them(usage_stub, token, tenant, meter):
    sent = [
        event("e1", metric=meter, dimensions={"model": "gpt-4o", "token_type": "prompt"}),
        event("e2", metric=meter, dimensions={"model": "claude"}),
        event("e3", metric=meter),
    ]
    assert verdicts(record(usage_stub, token, tenant, sent)) == ["ACCEPTED"] * 3
    listed = {s.event.event_id: dict(s.event.dimensions) for s in list_all(usage_stub, token, tenant)}
    assert listed == {"e1": {"model": "gpt-4o", "token_type": "prompt"}, "e2": {"model": "claude"}, "e3": {}}


def test_bad_dimensions_reject_only_their_event_each_with_its_reason(usage_stub, token, tenant, meter):
    results = record(
        usage_stub,
        token,
        tenant,
        [
            event("undeclared", metric=meter, dimensions={"region": "eu"}),
            event("good", metric=meter, dimensions={"model": "gpt-4o"}),
            event("too-many", metric=meter, dimensions={f"k{n}": "v" for n in range(9)}),
            event("empty", metric=meter, dimensions={"model": ""}),
            event("long", metric=meter, dimensions={"model": "x" * 129}),
            event("elsewhere", metric="api.requests", dimensions={"model": "gpt-4o"}),
        ],
    )
    assert [(r.event_id, r.verdict, r.reason) for r in results] == [
        ("undeclared", u.VERDICT_REJECTED, u.REJECT_REASON_UNDECLARED_DIMENSION),
        ("good", u.VERDICT_ACCEPTED, u.REJECT_REASON_UNSPECIFIED),
        ("too-many", u.VERDICT_REJECTED, u.REJECT_REASON_TOO_MANY_DIMENSIONS),
        ("empty", u.VERDICT_REJECTED, u.REJECT_REASON_EMPTY_DIMENSION_VALUE),
        ("long", u.VERDICT_REJECTED, u.REJECT_REASON_FIELD_TOO_LONG),
        ("elsewhere", u.VERDICT_REJECTED, u.REJECT_REASON_UNDECLARED_DIMENSION),
    ]
    assert "'region'" in results[0].message
    assert [s.event.event_id for s in list_all(usage_stub, token, tenant)] == ["good"]


def test_dimension_values_decide_duplicate_against_conflict(usage_stub, token, tenant, meter):
    at = event("x", metric=meter).occurred_at.ToMicroseconds()
    first = {"model": "gpt-4o", "token_type": "prompt"}
    record(usage_stub, token, tenant, [event("e1", metric=meter, at_us=at, dimensions=first)])
    again = record(
        usage_stub,
        token,
        tenant,
        [
            event("e1", metric=meter, at_us=at, dimensions=dict(reversed(first.items()))),
            event("e1", metric=meter, at_us=at, dimensions={"model": "gpt-4o", "token_type": "completion"}),
            event("e1", metric=meter, at_us=at, dimensions={"model": "gpt-4o"}),
            event("e1", metric=meter, at_us=at),
        ],
    )
    assert verdicts(again) == ["DUPLICATE", "CONFLICT", "CONFLICT", "CONFLICT"]
    assert [dict(s.event.dimensions) for s in list_all(usage_stub, token, tenant)] == [first]


def test_a_dimension_some_event_carries_cannot_be_removed_from_its_metric(
    usage_stub, usage_admin_stub, admin_token, token, tenant, meter
):
    record(usage_stub, token, tenant, [event("e1", metric=meter, dimensions={"token_type": "cached"})])

    def declare(*dimensions):
        metric = u.Metric(name=meter, classification=u.CLASSIFICATION_BILLABLE, unit="token", dimensions=dimensions)
        return usage_admin_stub.UpsertMetric(
            u.UpsertMetricRequest(metric=metric), metadata=support.bearer(admin_token), timeout=30
        )

    with pytest.raises(grpc.RpcError) as caught:
        declare("model")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "token_type" in caught.value.details()
    assert list(declare("token_type", "region").metric.dimensions) == ["token_type", "region"]  # model: carried by none
