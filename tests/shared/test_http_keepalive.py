"""Kept-alive HTTP connections: a worker that has answered waits briefly for the same connection's next request
(shared/http.py, LINGER_SECONDS), and that wait never holds up another connection. A real cheroot server with a
single worker thread on loopback, so one lingering worker would be the only one."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from tollgate.shared.http import HttpServer


def _echo_port(environ, start_response):
    """Answers with the caller's port: which connection a request came on."""
    body = environ["REMOTE_PORT"].encode()
    start_response("200 OK", [("content-type", "text/plain"), ("content-length", str(len(body)))])
    return [body]


@pytest.fixture
def one_worker() -> Iterator[HttpServer]:
    server = HttpServer(_echo_port, "127.0.0.1", 0, threads=1, max_body_bytes=1024, name="keepalive")
    yield server
    server.stop(1)


def _call(connection: http.client.HTTPConnection) -> str:
    connection.request("POST", "/", body=b"{}")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("connection") != "close"
    return response.read().decode()


def _connect(server: HttpServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)


def test_calls_one_after_another_are_answered_on_the_same_connection(one_worker):
    connection = _connect(one_worker)
    try:
        ports = {_call(connection) for _ in range(50)}
    finally:
        connection.close()
    assert len(ports) == 1, ports


def test_an_idle_kept_alive_connection_does_not_hold_the_only_worker_from_a_new_one(one_worker):
    first, second = _connect(one_worker), _connect(one_worker)
    try:
        first_port = _call(first)
        # first stays open and silent: the worker must give it back and answer second.
        second_port = _call(second)
        assert second_port != first_port
        assert _call(first) == first_port
        assert _call(second) == second_port
    finally:
        first.close()
        second.close()


def test_a_connection_closed_after_its_answer_leaves_the_worker_free(one_worker):
    for _ in range(5):
        closing = _connect(one_worker)
        _call(closing)
        closing.close()
    staying = _connect(one_worker)
    try:
        assert _call(staying) == _call(staying)
    finally:
        staying.close()


def test_many_kept_alive_connections_all_stay_open(one_worker):
    # cheroot's default closed every kept-alive connection past its tenth: a client keeping more connections
    # (64 callers in flight) reconnected on every eleventh answer or so, and waited for the accept each time.
    connections = [_connect(one_worker) for _ in range(40)]
    try:
        ports = [_call(connection) for connection in connections]  # _call asserts no "connection: close"
        assert [_call(connection) for connection in connections] == ports
    finally:
        for connection in connections:
            connection.close()
