"""The HTTP port in a real service process: started by the process itself beside gRPC, each call one JSON log
line with its request id, closed with gRPC on SIGTERM (exit 0). SQLite; the process is `python -m`."""

from __future__ import annotations

import json
import signal
import socket

import pytest

from scripts.pgcluster import free_port
from tests import fault_support, http_support, support

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_dbs(tmp_path_factory):
    with support.fresh_databases("sqlite", tmp_path_factory.mktemp("http-process")) as own:
        yield own


def test_the_process_serves_http_logs_each_call_and_closes_the_port_on_sigterm(own_dbs):
    token = support.make_token(own_dbs, tenant="acme", scopes=["usage:read"])
    port, http_port = free_port(), free_port()
    process = fault_support.start_usage(own_dbs.usage_url, port, http_port=str(http_port), log_level="INFO")
    try:
        reply = http_support.post(
            http_port,
            "/tollgate.usage.v1.UsageService/ListMetrics",
            {},
            token=token,
            headers={"x-request-id": "http-process-1"},
        )
        assert reply.status == 200 and reply.headers["x-request-id"] == "http-process-1", reply.body
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        fault_support.end(process)
    process.log.seek(0)
    lines = [json.loads(line) for line in process.log.read().decode().splitlines()]
    (call,) = [line for line in lines if line.get("request_id") == "http-process-1"]
    assert call["grpc_method"] == "ListMetrics" and call["code"] == "OK" and call["peer"].startswith("http:127.0.0.1")
    assert call["token_id"] == token.split("_")[1] and call["tenant"] == "acme"
    (serving,) = [line for line in lines if line.get("message") == "serving"]
    assert serving["http_port"] == http_port
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", http_port), timeout=5):
        pass
