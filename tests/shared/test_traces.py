"""Traces: a caller's traceparent followed through Policy into Usage, over gRPC and over HTTP, with spans
recorded by an in-memory exporter in this process, and the trace named in the call's log line; with traces off,
the traceparent still passes through."""

from __future__ import annotations

import json
import logging
import secrets
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests import http_support, support
from tests.policy.test_active_features import setup_tenant
from tests.policy_support import Client
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy import server as policy_server
from tollgate.services.policy.config import Settings as PolicySettings
from tollgate.services.usage import server as usage_server
from tollgate.services.usage.config import Settings as UsageSettings
from tollgate.shared.logs import JsonFormatter

LIST = "/tollgate.policy.v1.PolicyService/ListActiveFeatures"
GET_USAGE = "/tollgate.usage.v1.UsageService/GetUsage"


@pytest.fixture
def traced(dbs):
    """(exporter, policy server) with Usage and Policy recording their spans into one in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    usage = usage_server.build(
        support.test_settings(UsageSettings(), database_url=dbs.usage_url, rollup_interval_seconds=0),
        tracer_provider=provider,
    )
    token = support.make_token(dbs, tenant=None, scopes=["usage:read"], service="usage")
    settings = support.test_settings(
        PolicySettings(),
        database_url=dbs.policy_url,
        usage_addr=f"127.0.0.1:{usage.port}",
        usage_token=token,
        ranking_cache_seconds=0,
    )
    policy = policy_server.build(settings, tracer_provider=provider)
    try:
        yield exporter, policy
    finally:
        policy.stop(grace=1)
        usage.stop(grace=1)
        provider.shutdown()


def a_traceparent() -> tuple[str, str, str]:
    """(traceparent, trace id, parent span id) of a sampled caller."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def call_lines(caplog, method: str) -> list[dict]:
    """The JSON log lines the interceptor wrote for calls of `method` (e.g. "GetUsage")."""
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "tollgate.shared.interceptor"]
    return [line for line in lines if line.get("grpc_method") == method]


def spans_named(exporter: InMemorySpanExporter, name: str, kind: SpanKind, count: int = 1) -> list:
    """The finished spans of that name and kind, waiting briefly: a server span ends as its answer leaves."""
    deadline = time.monotonic() + 5
    while True:
        found = [s for s in exporter.get_finished_spans() if s.name == name and s.kind == kind]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_one_list_active_features_is_one_trace_across_policy_and_usage_under_the_callers_span(
    traced, admin_token, tenant, caplog
):
    exporter, policy = traced
    caplog.set_level(logging.INFO, logger="tollgate.shared.interceptor")
    with support.channel(policy.port) as channel:
        setup_tenant(Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token), tenant)
        exporter.clear()
        caplog.clear()
        traceparent, trace_id, caller_span = a_traceparent()
        answer = policy_pb2_grpc.PolicyServiceStub(channel).ListActiveFeatures(
            pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"),
            metadata=(*support.bearer(admin_token), ("traceparent", traceparent)),
            timeout=10,
        )
    assert answer.usage_available and answer.features

    (policy_span,) = spans_named(exporter, LIST, SpanKind.SERVER)
    client_spans = spans_named(exporter, GET_USAGE, SpanKind.CLIENT)
    usage_spans = spans_named(exporter, GET_USAGE, SpanKind.SERVER, count=len(client_spans))
    assert client_spans and len(usage_spans) == len(client_spans)
    every = [policy_span, *client_spans, *usage_spans]
    assert {format(s.context.trace_id, "032x") for s in every} == {trace_id}
    assert format(policy_span.parent.span_id, "016x") == caller_span and policy_span.parent.is_remote
    assert all(s.parent.span_id == policy_span.context.span_id for s in client_spans)
    # Each Usage span is the child of the Policy call that asked it: the traceparent crossed the boundary.
    assert {s.parent.span_id for s in usage_spans} == {s.context.span_id for s in client_spans}
    assert all(s.parent.is_remote for s in usage_spans)

    (policy_line,) = call_lines(caplog, "ListActiveFeatures")
    assert policy_line["trace_id"] == trace_id
    assert policy_line["span_id"] == format(policy_span.context.span_id, "016x")
    assert policy_span.attributes["tollgate.request_id"] == policy_line["request_id"]
    usage_lines = call_lines(caplog, "GetUsage")
    assert usage_lines and {line["trace_id"] for line in usage_lines} == {trace_id}
    assert {line["span_id"] for line in usage_lines} == {format(s.context.span_id, "016x") for s in usage_spans}


def test_a_refused_call_is_recorded_with_its_status_and_no_error_of_the_server(traced, tenant):
    exporter, policy = traced
    with support.channel(policy.port) as channel:
        with pytest.raises(Exception) as refused:
            policy_pb2_grpc.PolicyServiceStub(channel).ListActiveFeatures(
                pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"), timeout=10
            )
    assert refused.value.code().name == "UNAUTHENTICATED"
    (span,) = spans_named(exporter, LIST, SpanKind.SERVER)
    assert span.attributes["rpc.grpc.status_code"] == 16  # UNAUTHENTICATED: the caller's fault, not ours
    assert span.status.is_unset


def test_with_traces_off_a_callers_traceparent_still_reaches_usage_and_both_log_lines(
    policy, policy_admin_stub, admin_token, tenant, caplog
):
    # The session's servers use the process's tracer provider, which nothing in the tests installs: no spans
    # are recorded, yet the caller's trace is carried through and named in the logs.
    setup_tenant(Client(policy_admin_stub, admin_token), tenant)
    caplog.set_level(logging.INFO, logger="tollgate.shared.interceptor")
    traceparent, trace_id, caller_span = a_traceparent()
    with support.channel(policy.port) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        ask = pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1")
        stub.ListActiveFeatures(ask, metadata=(*support.bearer(admin_token), ("traceparent", traceparent)), timeout=10)
        (policy_line,) = call_lines(caplog, "ListActiveFeatures")
        usage_lines = call_lines(caplog, "GetUsage")
        caplog.clear()
        stub.ListActiveFeatures(ask, metadata=support.bearer(admin_token), timeout=10)
    assert (policy_line["trace_id"], policy_line["span_id"]) == (trace_id, caller_span)
    assert usage_lines and {line["trace_id"] for line in usage_lines} == {trace_id}
    (untraced,) = call_lines(caplog, "ListActiveFeatures")
    assert "trace_id" not in untraced and "span_id" not in untraced


def http_list_active_features(port: int, token: str, tenant: str, traceparent: str | None) -> http_support.Reply:
    headers = {"traceparent": traceparent} if traceparent else {}
    body = {"tenantId": tenant, "userId": "u1"}
    return http_support.post(port, LIST, body, token=token, headers=headers)


def test_an_http_call_with_a_traceparent_is_one_trace_across_policy_and_usage(traced, admin_token, tenant, caplog):
    exporter, policy = traced
    caplog.set_level(logging.INFO, logger="tollgate.shared.interceptor")
    with support.channel(policy.port) as channel:
        setup_tenant(Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token), tenant)
    exporter.clear()
    caplog.clear()
    traceparent, trace_id, caller_span = a_traceparent()
    reply = http_list_active_features(policy.http_port, admin_token, tenant, traceparent)
    assert reply.status == 200 and reply.json()["usageAvailable"]

    (policy_span,) = spans_named(exporter, f"POST {LIST}", SpanKind.SERVER)
    client_spans = spans_named(exporter, GET_USAGE, SpanKind.CLIENT)
    usage_spans = spans_named(exporter, GET_USAGE, SpanKind.SERVER, count=len(client_spans))
    assert client_spans and len(usage_spans) == len(client_spans)
    assert {format(s.context.trace_id, "032x") for s in [policy_span, *client_spans, *usage_spans]} == {trace_id}
    assert format(policy_span.parent.span_id, "016x") == caller_span and policy_span.parent.is_remote
    assert all(s.parent.span_id == policy_span.context.span_id for s in client_spans)
    assert {s.parent.span_id for s in usage_spans} == {s.context.span_id for s in client_spans}
    assert policy_span.attributes["http.status_code"] == 200 and policy_span.status.is_unset

    (policy_line,) = call_lines(caplog, "ListActiveFeatures")
    assert (policy_line["trace_id"], policy_line["span_id"]) == (trace_id, format(policy_span.context.span_id, "016x"))
    assert policy_span.attributes["tollgate.request_id"] == policy_line["request_id"] == reply.headers["x-request-id"]
    assert policy_span.attributes["rpc.grpc.status_code"] == 0


def test_an_http_call_to_no_route_is_a_span_named_by_its_method_alone(traced, admin_token):
    exporter, policy = traced
    traceparent, trace_id, _ = a_traceparent()
    reply = http_support.post(
        policy.http_port, f"/nope/{trace_id}", {}, token=admin_token, headers={"traceparent": traceparent}
    )
    assert reply.status == 404
    (span,) = spans_named(exporter, "POST", SpanKind.SERVER)
    assert format(span.context.trace_id, "032x") == trace_id and span.attributes["http.status_code"] == 404


def test_with_traces_off_an_http_callers_traceparent_still_reaches_usage_and_both_log_lines(
    policy, policy_admin_stub, admin_token, tenant, caplog
):
    setup_tenant(Client(policy_admin_stub, admin_token), tenant)
    caplog.set_level(logging.INFO, logger="tollgate.shared.interceptor")
    traceparent, trace_id, caller_span = a_traceparent()
    assert http_list_active_features(policy.http_port, admin_token, tenant, traceparent).status == 200
    (policy_line,) = call_lines(caplog, "ListActiveFeatures")
    usage_lines = call_lines(caplog, "GetUsage")
    caplog.clear()
    assert http_list_active_features(policy.http_port, admin_token, tenant, None).status == 200
    assert (policy_line["trace_id"], policy_line["span_id"]) == (trace_id, caller_span)
    assert usage_lines and {line["trace_id"] for line in usage_lines} == {trace_id}
    (untraced,) = call_lines(caplog, "ListActiveFeatures")
    assert "trace_id" not in untraced and "span_id" not in untraced
