"""TLS on the gRPC ports, with a throwaway CA made by `openssl` for this module: server TLS, mutual TLS,
Policy calling Usage over mutual TLS, the plaintext health-only port, and a certificate rotated on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import support
from tests.policy.test_active_features import METRIC_B, record, setup_tenant
from tests.policy_support import Client
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy import server as policy_server
from tollgate.services.policy.config import Settings as PolicySettings
from tollgate.services.usage import server as usage_server
from tollgate.services.usage.config import Settings as UsageSettings
from tollgate.shared.config import ConfigError
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

ALL_SCOPES = ["usage:write", "usage:read", "usage:admin", "policy:read", "policy:write", "policy:admin"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """PEM files: two unrelated CAs, a server certificate and a client certificate from each."""

    folder: Path

    def __getattr__(self, name: str) -> str:
        """pki.ca_server_crt is the path of ca-server.crt."""
        stem, extension = name.rsplit("_", 1)
        return str(self.folder / f"{stem.replace('_', '-')}.{extension}")


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=folder)  # fmt: skip


def issue(folder: Path, ca: str, name: str, extensions: str) -> None:
    """name.crt and name.key, signed by `ca`, with the given x509v3 extensions."""
    (folder / f"{name}.ext").write_text(extensions)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=folder)  # fmt: skip
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    client = "extendedKeyUsage=clientAuth\n"
    for ca in ("ca", "other"):
        make_ca(folder, ca)
        issue(folder, ca, f"{ca}-server", server)
        issue(folder, ca, f"{ca}-client", client)
    return Pki(folder)


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory) -> support.Databases:
    # TLS is the transport's business: one backend says as much as two.
    return support.sqlite_databases(tmp_path_factory.mktemp("tls-db"))


@pytest.fixture(scope="module")
def token(sqlite) -> str:
    return support.make_token(sqlite, tenant=None, scopes=ALL_SCOPES)


def start_usage(dbs: support.Databases, **changes):
    settings = support.test_settings(
        UsageSettings(), database_url=dbs.usage_url, rollup_interval_seconds=0, http_port=None, **changes
    )
    return usage_server.build(settings)


def tls_channel(port: int, ca: str, cert: str | None = None, key: str | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        Path(ca).read_bytes(),
        Path(key).read_bytes() if key else None,
        Path(cert).read_bytes() if cert else None,
    )
    return grpc.secure_channel(f"localhost:{port}", credentials)


def list_metrics(channel: grpc.Channel, token: str) -> grpc.StatusCode:
    try:
        usage_pb2_grpc.UsageServiceStub(channel).ListMetrics(
            u.ListMetricsRequest(page_size=1), metadata=support.bearer(token), timeout=5
        )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def tls_usage(sqlite, pki):
    running = start_usage(sqlite, tls_cert_file=pki.ca_server_crt, tls_key_file=pki.ca_server_key, health_port=0)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def mutual_usage(sqlite, pki):
    running = start_usage(
        sqlite, tls_cert_file=pki.ca_server_crt, tls_key_file=pki.ca_server_key, tls_client_ca_file=pki.ca_crt
    )
    yield running
    running.stop(grace=1)


def test_a_client_trusting_the_ca_calls_over_tls(tls_usage, pki, token):
    with tls_channel(tls_usage.port, pki.ca_crt) as channel:
        assert list_metrics(channel, token) == grpc.StatusCode.OK


def test_a_plaintext_client_or_one_trusting_another_ca_is_not_answered(tls_usage, pki, token):
    with support.channel(tls_usage.port) as plaintext, tls_channel(tls_usage.port, pki.other_crt) as stranger:
        assert list_metrics(plaintext, token) == grpc.StatusCode.UNAVAILABLE
        assert list_metrics(stranger, token) == grpc.StatusCode.UNAVAILABLE


def test_the_health_port_answers_health_in_plaintext_and_nothing_else(tls_usage, token):
    assert tls_usage.health_port and tls_usage.health_port != tls_usage.port
    with support.channel(tls_usage.health_port) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        for name in ("liveness", "tollgate.usage.v1.UsageService"):
            reply = check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert list_metrics(channel, token) == grpc.StatusCode.UNIMPLEMENTED


def test_mutual_tls_refuses_a_client_without_a_certificate_or_with_another_cas(mutual_usage, pki, token):
    with (
        tls_channel(mutual_usage.port, pki.ca_crt) as anonymous,
        tls_channel(mutual_usage.port, pki.ca_crt, pki.other_client_crt, pki.other_client_key) as stranger,
    ):
        assert list_metrics(anonymous, token) == grpc.StatusCode.UNAVAILABLE
        assert list_metrics(stranger, token) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_answers_a_client_with_a_certificate_from_the_ca(mutual_usage, pki, token):
    with tls_channel(mutual_usage.port, pki.ca_crt, pki.ca_client_crt, pki.ca_client_key) as channel:
        assert list_metrics(channel, token) == grpc.StatusCode.OK


def start_policy(dbs: support.Databases, usage_port: int, **changes):
    settings = support.test_settings(
        PolicySettings(),
        database_url=dbs.policy_url,
        http_port=None,
        usage_addr=f"localhost:{usage_port}",
        usage_token=support.make_token(dbs, tenant=None, scopes=["usage:read"], service="usage"),
        ranking_cache_seconds=0,
        **changes,
    )
    return policy_server.build(settings)


def test_policy_reads_usage_over_mutual_tls_with_its_client_certificate(sqlite, mutual_usage, pki, token):
    tenant = support.new_tenant()
    policy = start_policy(
        sqlite,
        mutual_usage.port,
        usage_tls_ca_file=pki.ca_crt,
        usage_tls_cert_file=pki.ca_client_crt,
        usage_tls_key_file=pki.ca_client_key,
    )
    try:
        with (
            support.channel(policy.port) as channel,
            tls_channel(mutual_usage.port, pki.ca_crt, pki.ca_client_crt, pki.ca_client_key) as usage_channel,
        ):
            _, feature_b, _ = setup_tenant(Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), token), tenant)
            record(usage_pb2_grpc.UsageServiceStub(usage_channel), token, tenant, METRIC_B, 40)
            answer = policy_pb2_grpc.PolicyServiceStub(channel).ListActiveFeatures(
                pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"), metadata=support.bearer(token), timeout=10
            )
    finally:
        policy.stop(grace=1)
    assert answer.usage_available
    parts = next(item.parts for item in answer.features if item.feature_id == feature_b)
    assert parts.user_quantity == 40


def test_policy_without_a_client_certificate_ranks_without_usage(sqlite, mutual_usage, pki, token):
    tenant = support.new_tenant()
    policy = start_policy(sqlite, mutual_usage.port, usage_tls_ca_file=pki.ca_crt)
    try:
        with support.channel(policy.port) as channel:
            setup_tenant(Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), token), tenant)
            answer = policy_pb2_grpc.PolicyServiceStub(channel).ListActiveFeatures(
                pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"), metadata=support.bearer(token), timeout=10
            )
    finally:
        policy.stop(grace=1)
    assert not answer.usage_available and answer.features


def test_a_certificate_rotated_on_disk_serves_new_connections_without_a_restart(sqlite, pki, token, tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(Path(pki.ca_server_crt).read_bytes())
    key.write_bytes(Path(pki.ca_server_key).read_bytes())
    running = start_usage(sqlite, tls_cert_file=str(cert), tls_key_file=str(key))
    try:
        with tls_channel(running.port, pki.ca_crt) as before:
            assert list_metrics(before, token) == grpc.StatusCode.OK
        # As the kubelet updates a mounted Secret: both files replaced by renames, the pair issued by a new CA.
        for source, target in ((pki.other_server_crt, cert), (pki.other_server_key, key)):
            staged = target.with_suffix(".new")
            staged.write_bytes(Path(source).read_bytes())
            os.replace(staged, target)
        with tls_channel(running.port, pki.other_crt) as after, tls_channel(running.port, pki.ca_crt) as stale:
            assert list_metrics(after, token) == grpc.StatusCode.OK
            assert list_metrics(stale, token) == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(grace=1)


def test_unreadable_certificate_files_stop_the_start_naming_the_variable(sqlite):
    with pytest.raises(ConfigError, match="^USAGE_TLS_CERT_FILE cannot be read"):
        start_usage(sqlite, tls_cert_file="/nonexistent/tls.crt", tls_key_file="/nonexistent/tls.key")


def test_a_key_that_is_not_the_certificates_stops_the_start(sqlite, pki):
    with pytest.raises(ConfigError, match="^USAGE_TLS_CERT_FILE and USAGE_TLS_KEY_FILE are not a certificate and its"):
        start_usage(sqlite, tls_cert_file=pki.ca_server_crt, tls_key_file=pki.ca_client_key)


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"USAGE_TLS_CERT_FILE": "/nonexistent/tls.crt", "USAGE_TLS_KEY_FILE": "/nonexistent/tls.key"}, "USAGE_TLS_"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
    ],
)
def test_the_process_exits_2_naming_a_bad_tls_file_or_trace_setting(sqlite, env, variable):
    process = subprocess.run(
        [sys.executable, "-m", "tollgate.services.usage"],
        env={
            **os.environ,
            "USAGE_DATABASE_URL": sqlite.usage_url,
            "USAGE_PORT": "0",
            "USAGE_METRICS_PORT": "-1",
            "USAGE_HTTP_PORT": "-1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 2, process.stderr
    assert f"usage: configuration error: {variable}" in process.stderr
