"""A refusal from Usage that is about one question (a tenant's range past the purge horizon, say) fails that
call alone: it does not open the circuit that makes every other tenant's quota reads fail fast.

The Usage here is a stand-in gRPC server on loopback that refuses one tenant's GetUsage with
FAILED_PRECONDITION and answers everyone else: a fault injected on purpose, which a real Usage gives only
after purging raw events."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from scripts.pgcluster import free_port
from tollgate.services.policy.domain.errors import UsageUnavailable
from tollgate.services.policy.domain.usage import UsageQuery, Window
from tollgate.services.policy.usage_client import UsageClient
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc


class _RefusesOneTenant(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self):
        self.calls = 0

    def GetUsage(self, request, context):  # noqa: N802 - the RPC's name
        self.calls += 1
        if request.tenant_id == "purged":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "raw events before the horizon were purged")
        return u.GetUsageResponse(totals=[u.UsageTotal(metric="api.requests", quantity=7)])

    def ListMetrics(self, request, context):  # noqa: N802 - the RPC's name
        context.abort(grpc.StatusCode.UNAVAILABLE, "down for maintenance")


@pytest.fixture
def stand_in():
    servicer, port = _RefusesOneTenant(), free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    usage_pb2_grpc.add_UsageServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    client = UsageClient(f"127.0.0.1:{port}", "token", max_timeout=2, cooldown=60)
    yield servicer, client
    client.close()
    server.stop(None)


def _ask(client: UsageClient, tenant: str) -> dict[str, int]:
    [answer] = client.get_usage([UsageQuery(tenant, ("api.requests",), Window(0, 10**15))], timeout=2)
    return answer


def test_one_tenants_refused_question_leaves_the_circuit_shut_for_the_others(stand_in):
    servicer, client = stand_in
    with pytest.raises(UsageUnavailable, match="FAILED_PRECONDITION"):
        _ask(client, "purged")
    assert not client.breaker.is_open()
    assert _ask(client, "healthy") == {"api.requests": 7}
    assert servicer.calls == 2


def test_an_outage_answer_opens_the_circuit_for_everyone(stand_in):
    servicer, client = stand_in
    with pytest.raises(UsageUnavailable, match="UNAVAILABLE"):
        client.metric_catalog(timeout=2)
    assert client.breaker.is_open()
    with pytest.raises(UsageUnavailable, match="circuit open"):
        _ask(client, "healthy")
    assert servicer.calls == 0  # failed fast, Usage not asked
