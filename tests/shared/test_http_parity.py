"""Every public RPC of both services answers the same over HTTP (Connect JSON and binary, gRPC-Web) as over
gRPC: the list of RPCs comes from the service descriptors, so a new RPC cannot be left out. Real servers on
SQLite and PostgreSQL, real sockets on loopback."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_status import rpc_status

from tests import http_support, support
from tests.usage_support import event, now_us, ts
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.usage.v1 import usage_pb2 as u

SERVICES = {
    "tollgate.usage.v1.UsageService": "usage",
    "tollgate.usage.v1.UsageAdminService": "usage",
    "tollgate.policy.v1.PolicyService": "policy",
    "tollgate.policy.v1.PolicyAdminService": "policy",
}
# The streaming RPCs: their HTTP forms (Connect streams over HTTP/1.1) have their own tests, StreamEvents' below,
# WatchEntitlements' in tests/policy/test_entitlement_watch.py.
STREAMING = {"tollgate.usage.v1.UsageService/StreamEvents", "tollgate.policy.v1.PolicyService/WatchEntitlements"}
# Answers that report the work the call did: a first call does it, so both compared calls find nothing left.
SETTLED_FIRST = {"tollgate.usage.v1.UsageAdminService/RunRollup"}


def _every_method():
    for service, server in SERVICES.items():
        for method in descriptor_pool.Default().FindServiceByName(service).methods:
            yield server, service, method


def _is_streaming(method) -> bool:
    return method.client_streaming or method.server_streaming


ALL = [
    pytest.param(server, service, method, id=f"{method.containing_service.name}.{method.name}")
    for server, service, method in _every_method()
    if not _is_streaming(method)
]


def _classes(method) -> tuple[type[Message], type[Message]]:
    return message_factory.GetMessageClass(method.input_type), message_factory.GetMessageClass(method.output_type)


def _grpc(channel: grpc.Channel, service: str, method, request: Message, token: str):
    request_class, response_class = _classes(method)
    call = channel.unary_unary(
        f"/{service}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    try:
        return call(request, metadata=support.bearer(token), timeout=30), None
    except grpc.RpcError as error:
        return None, error


def test_the_parity_list_is_every_method_of_every_service_both_servers_register(usage, policy):
    names = {f"{p.values[1]}/{p.values[2].name}" for p in ALL}
    assert len(names) == len(ALL) > 30
    streaming = {f"{service}/{method.name}" for _, service, method in _every_method() if _is_streaming(method)}
    assert streaming == STREAMING, "a streaming RPC needs its own HTTP test, as StreamEvents has"
    for server in (usage, policy):
        for service in server._service_names:
            assert service in SERVICES, f"{service} is served but missing from the parity list"


@pytest.mark.parametrize("server, service, method", ALL)
def test_every_rpc_answers_the_same_empty_request_alike_over_http_json_and_grpc(
    usage, policy, usage_channel, policy_channel, admin_token, server, service, method
):
    """An empty request of each RPC, with the platform token: the same status, message and rich details, or
    the same answer (the empty request probes validation and authorization on every RPC alike)."""
    running, channel = (usage, usage_channel) if server == "usage" else (policy, policy_channel)
    request_class, response_class = _classes(method)
    if f"{service}/{method.name}" in SETTLED_FIRST:
        _grpc(channel, service, method, request_class(), admin_token)
    answer, error = _grpc(channel, service, method, request_class(), admin_token)
    reply = http_support.post(running.http_port, f"/{service}/{method.name}", {}, token=admin_token)
    if error is None:
        assert reply.status == 200, reply.body
        _same_answer(reply.message(response_class), answer)
    else:
        _same_error(reply, error)


def _same_answer(over_http: Message, over_grpc: Message) -> None:
    # When a call ran and how long it took differ between the two calls, nothing else.
    for message in (over_http, over_grpc):
        for name in ("checked_at", "as_of", "now", "duration"):
            if name in message.DESCRIPTOR.fields_by_name:
                message.ClearField(name)
    assert over_http == over_grpc


def _same_error(reply: http_support.Reply, error: grpc.RpcError) -> None:
    assert 400 <= reply.status < 500, reply.body
    body = reply.json()
    assert body["code"] == error.code().name.lower()
    assert body["message"] == error.details()
    assert reply.details() == http_support.status_details(rpc_status.from_call(error))


def test_recording_and_reading_over_http_json_counts_once_and_reads_what_grpc_reads(
    usage, usage_stub, admin_token, tenant
):
    path = "/tollgate.usage.v1.UsageService/"
    request = u.RecordEventsRequest(tenant_id=tenant, events=[event("h1"), event("h2", quantity=5)])
    first = http_support.post(usage.http_port, path + "RecordEvents", request, token=admin_token)
    assert first.status == 200, first.body
    again = usage_stub.RecordEvents(request, metadata=support.bearer(admin_token), timeout=30)
    assert [r["verdict"] for r in first.json()["results"]] == ["VERDICT_ACCEPTED"] * 2
    assert [u.Verdict.Name(r.verdict) for r in again.results] == ["VERDICT_DUPLICATE"] * 2
    window = u.GetUsageRequest(tenant_id=tenant, start_time=ts(now_us() - 86_400_000_000), end_time=ts(now_us() + 1))
    over_http = http_support.post(usage.http_port, path + "GetUsage", window, token=admin_token)
    over_grpc = usage_stub.GetUsage(window, metadata=support.bearer(admin_token), timeout=30)
    assert over_http.message(u.GetUsageResponse) == over_grpc
    assert sum(t.quantity for t in over_grpc.totals) == 6
    # Connect answers proto3 JSON with lowerCamelCase names.
    assert {"metric", "quantity", "eventCount"} <= set(over_http.json()["totals"][0])


def test_binary_protobuf_and_grpc_web_answer_like_json(usage, admin_token, tenant):
    path = "/tollgate.usage.v1.UsageService/GetUsage"
    window = u.GetUsageRequest(tenant_id=tenant, start_time=ts(now_us() - 3_600_000_000), end_time=ts(now_us()))
    as_json = http_support.post(usage.http_port, path, window, token=admin_token).message(u.GetUsageResponse)
    binary = http_support.post(
        usage.http_port, path, window.SerializeToString(), token=admin_token, content_type="application/proto"
    )
    assert binary.status == 200 and binary.headers["content-type"] == "application/proto"
    assert u.GetUsageResponse.FromString(binary.body) == as_json
    web = http_support.post(
        usage.http_port,
        path,
        http_support.envelope(window.SerializeToString()),
        token=admin_token,
        content_type="application/grpc-web+proto",
    )
    frames = http_support.envelopes(web.body)
    assert web.status == 200 and frames[0][0] == 0 and u.GetUsageResponse.FromString(frames[0][1]) == as_json
    assert frames[-1][0] & 0x80 and b"grpc-status:0" in frames[-1][1].replace(b" ", b"")


def test_a_policy_rpc_reads_the_callers_deadline_and_answers_like_grpc(policy, policy_stub, admin_token, tenant):
    request = pb.ResolveModeRequest(tenant_id=tenant, user_id="u", feature_id="nothing-here")
    over_http = http_support.post(
        policy.http_port,
        "/tollgate.policy.v1.PolicyService/ResolveMode",
        request,
        token=admin_token,
        headers={"connect-timeout-ms": "5000"},
    )
    try:
        over_grpc, error = policy_stub.ResolveMode(request, metadata=support.bearer(admin_token), timeout=5), None
    except grpc.RpcError as refused:
        over_grpc, error = None, refused
    if error is None:
        assert over_http.message(pb.ResolveModeResponse) == over_grpc
    else:
        _same_error(over_http, error)


def test_stream_events_over_a_connect_stream_answers_each_batch_like_grpc(usage, admin_token, tenant):
    """Connect streaming on HTTP/1.1 is half duplex: every batch is sent, then every answer is read."""
    batches = [u.StreamEventsRequest(batch_id=f"b{n}", tenant_id=tenant, events=[event(f"s{n}")]) for n in range(3)]
    body = b"".join(http_support.envelope(b.SerializeToString()) for b in batches)
    reply = http_support.post(
        usage.http_port,
        "/tollgate.usage.v1.UsageService/StreamEvents",
        body,
        token=admin_token,
        content_type="application/connect+proto",
    )
    assert reply.status == 200, reply.body
    frames = http_support.envelopes(reply.body)
    answers = [u.StreamEventsResponse.FromString(payload) for flags, payload in frames if flags == 0]
    assert [a.batch_id for a in answers] == ["b0", "b1", "b2"]
    assert frames[-1][0] == 0x02 and b"error" not in frames[-1][1], frames[-1]
