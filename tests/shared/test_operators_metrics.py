"""RPC metrics as go-grpc-prometheus names them (started, handled, handling time, each with grpc_type), and
requests too large for the server: refused, counted, logged, on both backends through a real Usage server."""

import json
import logging
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import support
from tests.usage_support import event, tenant_token
from tollgate.shared.logs import JsonFormatter
from tollgate.shared.server import MAX_MESSAGE_BYTES, TRANSPORT_MAX_MESSAGE_BYTES
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

USAGE = "tollgate.usage.v1.UsageService"


def samples(port: int) -> dict:
    """{(sample name, sorted labels): value} of one /metrics scrape."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def series(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def padded_batch(tenant: str, size: int) -> u.RecordEventsRequest:
    """A RecordEvents request of at least `size` bytes (one event with an oversized source)."""
    return u.RecordEventsRequest(tenant_id=tenant, events=[event("big", source_service="x" * size)])


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


def test_each_call_is_counted_started_handled_and_timed_with_its_grpc_type(usage, usage_stub, token, tenant):
    before = samples(usage.metrics_port)
    usage_stub.ListMetrics(u.ListMetricsRequest(), metadata=support.bearer(token), timeout=10)
    answers = list(
        usage_stub.StreamEvents(
            iter([u.StreamEventsRequest(tenant_id=tenant, batch_id="b1", events=[event("s-1")])]),
            metadata=support.bearer(token),
            timeout=10,
        )
    )
    after = samples(usage.metrics_port)
    assert len(answers) == 1
    for grpc_type, method in (("unary", "ListMetrics"), ("bidi_stream", "StreamEvents")):
        call = dict(grpc_type=grpc_type, grpc_service=USAGE, grpc_method=method)
        delta = {
            name: series(after, name, **labels) - series(before, name, **labels)
            for name, labels in (
                ("grpc_server_started_total", call),
                ("grpc_server_handled_total", {**call, "grpc_code": "OK"}),
                ("grpc_server_handling_seconds_count", call),
            )
        }
        assert delta == {
            "grpc_server_started_total": 1,
            "grpc_server_handled_total": 1,
            "grpc_server_handling_seconds_count": 1,
        }, method


def test_a_request_over_the_message_limit_is_answered_counted_and_logged(usage, usage_stub, token, tenant, caplog):
    caplog.set_level(logging.INFO, logger="tollgate.shared.interceptor")
    call = dict(grpc_type="unary", grpc_service=USAGE, grpc_method="RecordEvents")
    before = samples(usage.metrics_port)
    with pytest.raises(grpc.RpcError) as refused:
        usage_stub.RecordEvents(
            padded_batch(tenant, MAX_MESSAGE_BYTES),
            metadata=(*support.bearer(token), ("x-request-id", "too-big")),
            timeout=30,
        )
    after = samples(usage.metrics_port)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"larger than the {MAX_MESSAGE_BYTES} this server accepts" in refused.value.details()
    handled = dict(call, grpc_code="RESOURCE_EXHAUSTED")
    assert (
        series(after, "grpc_server_handled_total", **handled)
        == series(before, "grpc_server_handled_total", **handled) + 1
    )
    assert series(after, "grpc_server_started_total", **call) == series(before, "grpc_server_started_total", **call) + 1
    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if getattr(r, "fields", {}).get("request_id") == "too-big"
    ]
    assert [(line["service"], line["grpc_method"], line["code"]) for line in lines] == [
        ("usage", "RecordEvents", "RESOURCE_EXHAUSTED")
    ]


def test_a_request_the_transport_cuts_is_still_counted_as_started(usage, usage_stub, token, tenant):
    call = dict(grpc_type="unary", grpc_service=USAGE, grpc_method="RecordEvents")
    before = samples(usage.metrics_port)
    with pytest.raises(grpc.RpcError) as refused:
        usage_stub.RecordEvents(
            padded_batch(tenant, TRANSPORT_MAX_MESSAGE_BYTES), metadata=support.bearer(token), timeout=30
        )
    after = samples(usage.metrics_port)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert series(after, "grpc_server_started_total", **call) == series(before, "grpc_server_started_total", **call) + 1
    # No handler ran: nothing else about the call could be counted.
    changed = {key for key, value in after.items() if key[0].startswith("grpc_") and value != before.get(key, 0)}
    assert changed == {("grpc_server_started_total", tuple(sorted(call.items())))}


def test_a_stream_whose_message_the_transport_cuts_is_counted_once_never_as_internal(usage, token, tenant, caplog):
    caplog.set_level(logging.INFO, logger="tollgate.shared.interceptor")
    call = dict(grpc_type="bidi_stream", grpc_service=USAGE, grpc_method="StreamEvents")
    batches = [
        u.StreamEventsRequest(tenant_id=tenant, batch_id="ok", events=[event("c-1")]),
        u.StreamEventsRequest(
            tenant_id=tenant, batch_id="huge", events=[event("c-2", source_service="x" * TRANSPORT_MAX_MESSAGE_BYTES)]
        ),
    ]
    before = samples(usage.metrics_port)
    with support.channel(usage.port) as channel, pytest.raises(grpc.RpcError) as cut:
        list(
            usage_pb2_grpc.UsageServiceStub(channel).StreamEvents(
                iter(batches), metadata=(*support.bearer(token), ("x-request-id", "cut-stream")), timeout=30
            )
        )
    assert cut.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    def handled_codes(after) -> set[str]:
        return {
            dict(labels)["grpc_code"]
            for (name, labels), value in after.items()
            if name == "grpc_server_handled_total"
            and dict(labels).get("grpc_method") == "StreamEvents"
            and value > before.get((name, labels), 0)
        }

    # The server's handler ends a moment after the client saw the cut: wait for it to be counted.
    deadline = time.monotonic() + 10
    while not handled_codes(after := samples(usage.metrics_port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Whether the server's request iterator sees the cut as a cancellation or as the stream's end
    # depends on when the transport's reset lands; either way it is never INTERNAL or UNKNOWN.
    assert handled_codes(after) in ({"CANCELLED"}, {"OK"})
    assert series(after, "grpc_server_started_total", **call) == series(before, "grpc_server_started_total", **call) + 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a peer's broken stream is no bug of ours"
