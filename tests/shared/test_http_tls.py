"""TLS on the HTTP ports, with test_tls.py's throwaway CA: HTTPS, plain HTTP refused with a word on why, mutual
TLS, a certificate rotated on disk; and a port already in use stops the start naming its variable."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests import http_support, support
from tests.shared.test_tls import pki, sqlite, token  # noqa: F401 - fixtures
from tollgate.services.usage import server as usage_server
from tollgate.services.usage.config import Settings as UsageSettings
from tollgate.shared.config import ConfigError

LIST_METRICS = "/tollgate.usage.v1.UsageService/ListMetrics"


def client_context(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def https_list_metrics(port: int, bearer: str, context: ssl.SSLContext) -> tuple[int, dict]:
    """(status, JSON body) of ListMetrics over HTTPS, on a new connection."""
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}{LIST_METRICS}",
        data=b'{"pageSize": 1}',
        headers={"content-type": "application/json", "authorization": f"Bearer {bearer}"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return response.status, json.loads(response.read())


def start_usage(dbs: support.Databases, **changes):
    """A Usage server with its HTTP port on a free port (test_settings' default)."""
    return usage_server.build(
        support.test_settings(UsageSettings(), database_url=dbs.usage_url, rollup_interval_seconds=0, **changes)
    )


@pytest.fixture(scope="module")
def tls_usage(sqlite, pki):  # noqa: F811
    running = start_usage(sqlite, tls_cert_file=pki.ca_server_crt, tls_key_file=pki.ca_server_key)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def mutual_usage(sqlite, pki):  # noqa: F811
    running = start_usage(
        sqlite, tls_cert_file=pki.ca_server_crt, tls_key_file=pki.ca_server_key, tls_client_ca_file=pki.ca_crt
    )
    yield running
    running.stop(grace=1)


def test_a_client_trusting_the_ca_calls_over_https(tls_usage, pki, token):  # noqa: F811
    status, body = https_list_metrics(tls_usage.http_port, token, client_context(pki.ca_crt))
    assert status == 200 and set(body) <= {"metrics", "nextPageToken"}


def test_curl_calls_over_https_with_the_ca_and_keeps_the_connection(tls_usage, pki, token):  # noqa: F811
    url = f"https://localhost:{tls_usage.http_port}{LIST_METRICS}"
    call = [
        "-sS",
        "--cacert",
        pki.ca_crt,
        "-H",
        "content-type: application/json",
        "-H",
        f"authorization: Bearer {token}",
    ]
    # Two calls on one curl: the second reuses the TLS connection (keep-alive works over TLS too).
    process = subprocess.run(
        ["curl", *call, "-d", "{}", url, "--next", *call, "-d", "{}", "-w", "%{num_connects}", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.endswith("}0")  # the second call's body, then no new connection


def test_plain_http_to_a_tls_port_is_told_the_port_speaks_https_only(tls_usage, token):  # noqa: F811
    reply = http_support.post(tls_usage.http_port, LIST_METRICS, {}, token=token)
    assert reply.status == 400
    assert reply.json()["message"] == "this port speaks HTTPS only: call it with https://"


def test_a_client_trusting_another_ca_does_not_accept_the_server(tls_usage, pki, token):  # noqa: F811
    with pytest.raises(urllib.error.URLError) as refused:
        https_list_metrics(tls_usage.http_port, token, client_context(pki.other_crt))
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)


def test_mutual_tls_refuses_a_client_without_a_certificate_or_with_another_cas(mutual_usage, pki, token):  # noqa: F811
    for context in (client_context(pki.ca_crt), client_context(pki.ca_crt, pki.other_client_crt, pki.other_client_key)):
        # No HTTP answer at all: the handshake fails (TLS 1.3 reports it at the client's first read).
        with pytest.raises(OSError):
            https_list_metrics(mutual_usage.http_port, token, context)
    # The workers that refused them serve the next client.
    context = client_context(pki.ca_crt, pki.ca_client_crt, pki.ca_client_key)
    status, _ = https_list_metrics(mutual_usage.http_port, token, context)
    assert status == 200


def test_mutual_tls_answers_a_client_with_a_certificate_from_the_ca(mutual_usage, pki, token):  # noqa: F811
    context = client_context(pki.ca_crt, pki.ca_client_crt, pki.ca_client_key)
    status, _ = https_list_metrics(mutual_usage.http_port, token, context)
    assert status == 200


def test_a_silent_client_does_not_hold_up_the_others(tls_usage, pki, token):  # noqa: F811
    # Connected, never says hello: its handshake waits on a worker thread, not on the accept loop.
    with socket.create_connection(("127.0.0.1", tls_usage.http_port)):
        status, _ = https_list_metrics(tls_usage.http_port, token, client_context(pki.ca_crt))
    assert status == 200


def test_a_certificate_rotated_on_disk_serves_new_https_connections(sqlite, pki, token, tmp_path):  # noqa: F811
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(Path(pki.ca_server_crt).read_bytes())
    key.write_bytes(Path(pki.ca_server_key).read_bytes())
    running = start_usage(sqlite, tls_cert_file=str(cert), tls_key_file=str(key))
    try:
        assert https_list_metrics(running.http_port, token, client_context(pki.ca_crt))[0] == 200
        # As the kubelet updates a mounted Secret: both files replaced by renames, the pair issued by a new CA.
        for source, target in ((pki.other_server_crt, cert), (pki.other_server_key, key)):
            staged = target.with_suffix(".new")
            staged.write_bytes(Path(source).read_bytes())
            os.replace(staged, target)
        assert https_list_metrics(running.http_port, token, client_context(pki.other_crt))[0] == 200
        with pytest.raises(urllib.error.URLError):
            https_list_metrics(running.http_port, token, client_context(pki.ca_crt))
    finally:
        running.stop(grace=1)


def test_a_port_in_use_stops_the_start_naming_it_and_the_server_on_it_keeps_it(sqlite, token):  # noqa: F811
    first = start_usage(sqlite)
    try:
        with pytest.raises(ConfigError, match=f"^USAGE_HTTP_PORT {first.http_port} cannot be listened on at 127.0.0.1"):
            start_usage(sqlite, http_port=first.http_port)
        with pytest.raises(ConfigError, match=f"^USAGE_PORT cannot be listened on at 127.0.0.1:{first.port}: in use"):
            start_usage(sqlite, port=first.port)
        with pytest.raises(ConfigError, match="^USAGE_HEALTH_PORT cannot be listened on"):
            start_usage(sqlite, health_port=first.port)
        with pytest.raises(ConfigError, match="^USAGE_METRICS_PORT cannot be listened on .*Address already in use"):
            start_usage(sqlite, metrics_port=first.metrics_port)
        # No sharing: every call on the first server's ports is still its own.
        for _ in range(4):
            assert http_support.post(first.http_port, LIST_METRICS, {}, token=token).status == 200
    finally:
        first.stop(grace=1)


def test_the_process_exits_2_naming_an_http_port_in_use(sqlite):  # noqa: F811
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = subprocess.run(
            [sys.executable, "-m", "tollgate.services.usage"],
            env={
                **os.environ,
                "USAGE_DATABASE_URL": sqlite.usage_url,
                "USAGE_HOST": "127.0.0.1",
                "USAGE_PORT": "0",
                "USAGE_METRICS_PORT": "-1",
                "USAGE_HTTP_PORT": str(port),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert process.returncode == 2, process.stderr
    assert f"usage: configuration error: USAGE_HTTP_PORT {port} cannot be listened on" in process.stderr
    assert "Address already in use" in process.stderr
