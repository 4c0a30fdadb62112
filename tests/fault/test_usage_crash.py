"""A Usage process killed with SIGKILL mid-ingest and restarted, then every batch resent:
nothing acknowledged is lost and nothing counts twice."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from scripts.pgcluster import free_port
from tests import support
from tests.shared.test_health_database import wait_for_health
from tests.usage_support import event, tenant_token, totals
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
BATCHES, BATCH_SIZE = 60, 200
SERVING = health_pb2.HealthCheckResponse.SERVING


def start_usage(url: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "USAGE_DATABASE_URL": url,
        "USAGE_PORT": str(port),
        "USAGE_HOST": "127.0.0.1",
        "USAGE_METRICS_PORT": "-1",
        "USAGE_HTTP_PORT": "-1",
        "USAGE_LOG_LEVEL": "WARNING",
        "USAGE_HEALTH_INTERVAL_SECONDS": "0.2",
        "USAGE_ROLLUP_INTERVAL_SECONDS": "0",
    }  # a kill mid-round would leave the shared rollup lease held
    process = subprocess.Popen(
        [sys.executable, "-m", "tollgate.services.usage"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_for_health(port, SERVING, timeout=30) == SERVING
    return process


def batches(tenant: str) -> list[u.RecordEventsRequest]:
    return [
        u.RecordEventsRequest(
            tenant_id=tenant,
            events=[
                event(f"e{b}-{n}", quantity=1 + n % 3, idempotency_key=f"k{b}-{n}", correlation_id=f"c{b}-{n}")
                for n in range(BATCH_SIZE)
            ],
        )
        for b in range(BATCHES)
    ]


def send_until_killed(port: int, token: str, requests, acknowledged: list[int], stop: threading.Event) -> None:
    """Send batches in order, noting each one the server acknowledged, until the server is gone."""
    with support.channel(port) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        for index, request in enumerate(requests):
            if stop.is_set():
                return
            try:
                stub.RecordEvents(request, metadata=support.bearer(token), timeout=10)
            except grpc.RpcError:
                return
            acknowledged.append(index)


@pytest.mark.slow
def test_a_process_killed_mid_ingest_then_resent_everything_counts_each_event_exactly_once(dbs, tenant):
    token = tenant_token(dbs, tenant)
    requests = batches(tenant)
    port = free_port()
    process = start_usage(dbs.usage_url, port)
    acknowledged, stop = [], threading.Event()
    try:
        sender = threading.Thread(target=send_until_killed, args=(port, token, requests, acknowledged, stop))
        sender.start()
        for _ in range(300):  # bounded: kill once a few batches are in, while more are in flight
            if len(acknowledged) >= 5:
                break
            threading.Event().wait(0.02)
        process.kill()
        process.wait(timeout=30)
        stop.set()
        sender.join(timeout=30)
        assert 5 <= len(acknowledged) < BATCHES
        process = start_usage(dbs.usage_url, port)
        with support.channel(port) as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)
            answers = [stub.RecordEvents(r, metadata=support.bearer(token), timeout=30) for r in requests]
            expected_quantity = sum(e.quantity for r in requests for e in r.events)
            assert totals(stub, token, tenant) == {"api.requests": (expected_quantity, BATCHES * BATCH_SIZE)}
        for index in acknowledged:
            assert {r.verdict for r in answers[index].results} == {u.VERDICT_DUPLICATE}
        # A batch is stored whole or not at all, even the one the kill interrupted.
        assert all({r.verdict for r in a.results} in ({u.VERDICT_ACCEPTED}, {u.VERDICT_DUPLICATE}) for a in answers)
    finally:
        process.kill()
        process.wait(timeout=30)
