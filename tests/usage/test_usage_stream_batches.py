"""StreamEvents over a real channel, on SQLite and PostgreSQL: a batch refused whole is answered on the stream,
naming its batch_id, and the stream goes on; only a failure of the stream itself ends it."""

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from tests import support
from tests.usage_support import event, tenant_token, totals, verdicts
from tollgate.usage.v1 import usage_pb2 as u


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


def stream(stub, token: str, requests) -> list[u.StreamEventsResponse]:
    return list(stub.StreamEvents(iter(requests), metadata=support.bearer(token), timeout=30))


def field_violations(error: u.BatchError) -> list[str]:
    """The BadRequest fields of a batch's error, read as the google.rpc.Status it is on the wire."""
    status = status_pb2.Status.FromString(error.SerializeToString())
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend(v.field for v in bad_request.field_violations)
    return found


def refused_batches(code: str) -> float:
    """This process's count of StreamEvents batches refused whole with `code` (the servers run in-process)."""
    return REGISTRY.get_sample_value("tollgate_usage_stream_batches_refused_total", {"grpc_code": code}) or 0.0


def test_a_stream_of_good_bad_good_batches_gets_three_answers_and_stores_the_good_ones(usage_stub, token, tenant):
    invalid_before = refused_batches("INVALID_ARGUMENT")
    answers = stream(
        usage_stub,
        token,
        [
            u.StreamEventsRequest(batch_id="good-1", tenant_id=tenant, events=[event("e1")]),
            u.StreamEventsRequest(batch_id="empty", tenant_id=tenant),
            u.StreamEventsRequest(batch_id="good-2", tenant_id=tenant, events=[event("e2"), event("e1")]),
        ],
    )
    assert [a.batch_id for a in answers] == ["good-1", "empty", "good-2"]
    assert [a.HasField("error") for a in answers] == [False, True, False]
    assert verdicts(answers[0].results) == ["ACCEPTED"] and verdicts(answers[2].results) == ["ACCEPTED", "DUPLICATE"]
    refused = answers[1]
    assert (refused.error.code, list(refused.results)) == (code_pb2.INVALID_ARGUMENT, [])
    assert field_violations(refused.error) == ["events"] and "events" in refused.error.message
    assert totals(usage_stub, token, tenant) == {"api.requests": (2, 2)}
    assert refused_batches("INVALID_ARGUMENT") == invalid_before + 1


def test_a_batch_for_a_tenant_the_credential_may_not_write_is_refused_alone(usage_stub, token, tenant):
    other = support.new_tenant()
    denied_before = refused_batches("PERMISSION_DENIED")
    answers = stream(
        usage_stub,
        token,
        [
            u.StreamEventsRequest(batch_id="theirs", tenant_id=other, events=[event("x1")]),
            u.StreamEventsRequest(batch_id="mine", tenant_id=tenant, events=[event("m1")]),
        ],
    )
    assert [(a.batch_id, a.error.code) for a in answers] == [("theirs", code_pb2.PERMISSION_DENIED), ("mine", 0)]
    assert verdicts(answers[1].results) == ["ACCEPTED"]
    assert totals(usage_stub, token, tenant) == {"api.requests": (1, 1)}
    assert refused_batches("PERMISSION_DENIED") == denied_before + 1


def test_a_stream_whose_credential_is_refused_ends_at_once_unauthenticated(usage_stub, tenant):
    unknown = "tg_0123456789abcdef_" + "A" * 43
    answered = []
    with pytest.raises(grpc.RpcError) as raised:
        for answer in usage_stub.StreamEvents(
            iter([u.StreamEventsRequest(batch_id="b", tenant_id=tenant, events=[event("e1")])]),
            metadata=support.bearer(unknown),
            timeout=30,
        ):
            answered.append(answer)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert answered == []
