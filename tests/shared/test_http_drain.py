"""The HTTP transport's drain (shared/http.py, HttpServer.stop, which RunningServer.stop calls with the gRPC
server's): once stopping it accepts no new connection, and a request already in flight is answered in full. A real
cheroot server on loopback, with an application that waits on purpose until the test lets it answer."""

from __future__ import annotations

import http.client
import socket
import threading

from tests import support
from tollgate.shared.http import HttpServer


class _Held:
    """A WSGI application whose every request waits until `release` is set; `entered` is set once one is in."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, environ, start_response):
        self.entered.set()
        self.release.wait(30)
        body = b'{"answered": true}'
        start_response("200 OK", [("content-type", "application/json"), ("content-length", str(len(body)))])
        return [body]


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def _call_in_thread(port: int, answers: list) -> threading.Thread:
    def call() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("POST", "/", body=b"{}")
            response = connection.getresponse()
            answers.append((response.status, response.read()))
        except OSError as error:
            answers.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_a_request_in_flight_when_the_server_stops_is_answered_and_no_new_connection_is_accepted():
    app = _Held()
    server = HttpServer(app, "127.0.0.1", 0, threads=2, max_body_bytes=1024, name="drain")
    answers: list = []
    caller = _call_in_thread(server.port, answers)
    assert app.entered.wait(10)
    stopping = threading.Thread(target=server.stop, args=(10,))
    stopping.start()
    assert support.wait_until(lambda: _refused(server.port), seconds=10)
    assert stopping.is_alive()  # still draining: the request in flight holds the stop
    app.release.set()
    caller.join(10)
    stopping.join(10)
    assert answers == [(200, b'{"answered": true}')]
    assert not stopping.is_alive()
