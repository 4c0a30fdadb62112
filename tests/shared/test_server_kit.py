"""Health, reflection, authentication, request ids and metrics on both servers, both backends."""

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests import support
from tests.conftest import status_of
from tollgate.policy.v1 import policy_pb2
from tollgate.usage.v1 import usage_pb2

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture(params=["usage", "policy"])
def server(request, usage, policy):
    return {"usage": usage, "policy": policy}[request.param]


def health_status(port: int, service: str = "") -> int:
    with support.channel(port) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_answers_serving_for_the_server_and_each_service(server):
    names = ["", *server._service_names]
    assert [health_status(server.port, name) for name in names] == [health_pb2.HealthCheckResponse.SERVING] * 3


def test_health_needs_no_token_but_every_rpc_does(usage_stub, tenant):
    assert (
        status_of(lambda: usage_stub.GetUsage(usage_pb2.GetUsageRequest(tenant_id=tenant)))
        == grpc.StatusCode.UNAUTHENTICATED
    )


def test_reflection_lists_the_services_for_grpcurl(usage, policy):
    listed = {}
    for running in (usage, policy):
        result = subprocess.run(
            [GRPCURL, "-plaintext", f"127.0.0.1:{running.port}", "list"], capture_output=True, text=True, timeout=30
        )
        listed[running.port] = set(result.stdout.split())
    assert {"tollgate.usage.v1.UsageService", "tollgate.usage.v1.UsageAdminService", "grpc.health.v1.Health"} <= listed[
        usage.port
    ]
    assert {"tollgate.policy.v1.PolicyService", "tollgate.policy.v1.PolicyAdminService"} <= listed[policy.port]


def test_grpcurl_describe_shows_every_rpc(usage):
    result = subprocess.run(
        [GRPCURL, "-plaintext", f"127.0.0.1:{usage.port}", "describe", "tollgate.usage.v1.UsageAdminService"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    for rpc in ("RunRollup", "GetRollupStatus", "UpsertMetric", "PurgeEvents", "ListAuditRecords", "VerifyAudit"):
        assert f"rpc {rpc} " in result.stdout


def denial(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)
        reasons = []
        for detail in status.details if status else []:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reasons.append(info.reason)
        return error.code(), ",".join(reasons)
    return grpc.StatusCode.OK, ""


def test_a_call_without_a_token_is_unauthenticated_with_error_info(policy_stub, tenant):
    code, reason = denial(lambda: policy_stub.ResolveMode(policy_pb2.ResolveModeRequest(tenant_id=tenant)))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    "header", ["Bearer", "Basic abc", "Bearer not-a-token", "Bearer tg_abc_def", "Bearer tg_" + "x" * 300]
)
def test_a_malformed_or_unknown_token_is_unauthenticated(usage_stub, tenant, header):
    metadata = (("authorization", header),)
    assert (
        status_of(lambda: usage_stub.GetUsage(usage_pb2.GetUsageRequest(tenant_id=tenant), metadata=metadata))
        == grpc.StatusCode.UNAUTHENTICATED
    )


def test_a_token_with_a_wrong_secret_is_unauthenticated(usage_stub, dbs, tenant):
    token = support.make_token(dbs, tenant=tenant, scopes=["usage:read"])
    forged = token[: token.rindex("_") + 1] + "forged-secret"
    assert (
        status_of(
            lambda: usage_stub.GetUsage(usage_pb2.GetUsageRequest(tenant_id=tenant), metadata=support.bearer(forged))
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )


def test_a_revoked_token_is_unauthenticated(usage_stub, dbs, tenant, monkeypatch):
    from tollgate.shared import credentials_cli

    token = support.make_token(dbs, tenant=tenant, scopes=["usage:read"])
    request = usage_pb2.ListMetricsRequest()
    before = status_of(lambda: usage_stub.ListMetrics(request, metadata=support.bearer(token)))
    monkeypatch.setenv("USAGE_DATABASE_URL", dbs.usage_url)
    monkeypatch.setenv("POLICY_DATABASE_URL", dbs.policy_url)
    assert credentials_cli.main(["revoke", token.split("_")[1]]) == 0
    after = status_of(lambda: usage_stub.ListMetrics(request, metadata=support.bearer(token)))
    assert before != grpc.StatusCode.UNAUTHENTICATED
    assert after == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_without_the_scope_is_permission_denied(usage_stub, dbs, tenant):
    token = support.make_token(dbs, tenant=tenant, scopes=["usage:write"])
    code, reason = denial(
        lambda: usage_stub.GetUsage(usage_pb2.GetUsageRequest(tenant_id=tenant), metadata=support.bearer(token))
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


def test_the_request_id_sent_comes_back(usage_stub, admin_token):
    metadata = (*support.bearer(admin_token), ("x-request-id", "req-42"))
    _response, call = usage_stub.ListMetrics.with_call(usage_pb2.ListMetricsRequest(), metadata=metadata)
    assert dict(call.trailing_metadata())["x-request-id"] == "req-42"


def test_a_refused_call_also_sends_its_request_id_back(usage_stub):
    try:
        usage_stub.ListMetrics(usage_pb2.ListMetricsRequest(), metadata=(("x-request-id", "req-43"),))
    except grpc.RpcError as error:
        assert dict(error.trailing_metadata())["x-request-id"] == "req-43"
        assert rpc_status.from_call(error) is not None  # the rich status survives beside it
    else:
        raise AssertionError("a call without a token was answered")


def test_a_request_id_is_made_when_none_is_sent(usage_stub):
    try:
        usage_stub.ListMetrics(usage_pb2.ListMetricsRequest())
    except grpc.RpcError as error:
        assert len(dict(error.trailing_metadata())["x-request-id"]) == 32


def test_metrics_count_calls_by_code(usage, usage_stub, tenant):
    def handled(code: str) -> float:
        body = urllib.request.urlopen(f"http://127.0.0.1:{usage.metrics_port}/metrics", timeout=5).read().decode()
        prefix = (
            f'grpc_server_handled_total{{grpc_code="{code}",grpc_method="GetUsage",'
            'grpc_service="tollgate.usage.v1.UsageService",grpc_type="unary"} '
        )
        lines = [line for line in body.splitlines() if line.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = handled("UNAUTHENTICATED")
    status_of(lambda: usage_stub.GetUsage(usage_pb2.GetUsageRequest(tenant_id=tenant)))
    status_of(lambda: usage_stub.GetUsage(usage_pb2.GetUsageRequest(tenant_id=tenant)))
    assert handled("UNAUTHENTICATED") == before + 2


def test_the_metrics_endpoint_listens_only_where_grpc_does(usage):
    """The test servers bind 127.0.0.1; a listener on every interface would also answer on 127.0.0.2."""
    urllib.request.urlopen(f"http://127.0.0.1:{usage.metrics_port}/metrics", timeout=5).read()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", usage.metrics_port), timeout=5)


def test_each_call_writes_one_json_log_line(usage_stub, tenant, caplog):
    caplog.set_level("INFO", logger="tollgate.shared.interceptor")
    metadata = (("x-request-id", "log-me"),)
    status_of(lambda: usage_stub.GetUsage(usage_pb2.GetUsageRequest(tenant_id=tenant), metadata=metadata))
    from tollgate.shared.logs import JsonFormatter

    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if getattr(r, "fields", {}).get("request_id") == "log-me"
    ]
    assert len(lines) == 1
    assert lines[0]["grpc_method"] == "GetUsage" and lines[0]["code"] == "UNAUTHENTICATED"


def test_a_request_with_thousands_of_bad_fields_gets_a_bounded_invalid_argument(policy_admin_stub, admin_token):
    # Statuses travel in trailers: an unbounded list of violations would not be deliverable.
    roles = [policy_pb2.Role(role_id="R1", feature_caps=[policy_pb2.FeatureCap()] * 2000)]
    try:
        policy_admin_stub.ImportRoles(
            policy_pb2.ImportRolesRequest(roles=roles), metadata=support.bearer(admin_token), timeout=10
        )
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)
        bad = error_details_pb2.BadRequest()
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert any(detail.Unpack(bad) for detail in status.details)
        assert len(bad.field_violations) == 20 and "more bad fields" in status.message
    else:
        raise AssertionError("an import of 2,000 empty caps was accepted")
