"""Helpers the tests share: databases per backend, servers on port 0, tokens, stubs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from scripts.pgcluster import create_postgres_database, drop_postgres_database
from tollgate.shared import credentials_cli, migrate


@dataclass(frozen=True)
class Databases:
    """The database URLs of one backend, already migrated."""

    backend: str
    usage_url: str
    policy_url: str


def sqlite_databases(folder) -> Databases:
    dbs = Databases("sqlite", f"sqlite:///{folder}/usage.db", f"sqlite:///{folder}/policy.db")
    migrate.upgrade("usage", dbs.usage_url)
    migrate.upgrade("policy", dbs.policy_url)
    return dbs


def postgres_admin_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


def postgres_databases(url: str) -> Databases:
    dbs = Databases("postgres", url, url)
    migrate.upgrade("usage", url)
    migrate.upgrade("policy", url)
    return dbs


@contextlib.contextmanager
def fresh_databases(backend: str, folder):
    """Migrated databases of `backend` for one test or module alone, removed afterwards."""
    if backend == "sqlite":
        yield sqlite_databases(folder)
        return
    admin = postgres_admin_url()
    if not admin:
        pytest.skip("no PostgreSQL: set TEST_DATABASE_URL or run through `make test`")
    url = create_postgres_database(admin)
    try:
        yield postgres_databases(url)
    finally:
        drop_postgres_database(admin, url)


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def make_token(dbs: Databases, *, tenant: str | None, scopes: list[str], service: str | None = None) -> str:
    """Mint a token in the credentials tables of the services its scopes name."""
    env = {"USAGE_DATABASE_URL": dbs.usage_url, "POLICY_DATABASE_URL": dbs.policy_url}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return credentials_cli.create(tenant=tenant, scopes=scopes, service=service, label="test")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_settings(settings, **changes):
    """Settings for an in-process server: port 0, no fixed metrics or HTTP port, fast health checks.

    A Policy waits up to 5 s for Usage unless a test sets usage_timeout_seconds: production's quarter second is a
    latency bound, and on a loaded CI machine one slow answer would open the circuit and fail the next tests of a
    module that is not about outages."""
    defaults = dict(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        http_port=0,
        health_interval_seconds=0.2,
        auth_cache_seconds=0.0,
        grace_seconds=2.0,
    )
    if hasattr(settings, "usage_timeout_seconds"):
        defaults["usage_timeout_seconds"] = 5.0
    defaults.update(changes)
    return replace(settings, **defaults)


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}")


def field_violations(error: grpc.RpcError) -> list[str]:
    """The fields named by the BadRequest detail of a failed call (empty when it has none)."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [v.field for v in bad.field_violations]
    return []


def error_reason(error: grpc.RpcError) -> str:
    """The reason of the ErrorInfo detail of a failed call ('' when it has none)."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def wait_until(predicate, *, seconds: float, every: float = 0.02) -> bool:
    """Whether `predicate()` came true within `seconds`, asked every `every` seconds (and once more at the end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def in_threads(target, count: int, *, timeout: float = 120) -> None:
    """Run target(0) .. target(count - 1) in threads started together; all must end within `timeout`."""
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread outlived its timeout"


def build_usage(dbs: Databases, **changes):
    """A Usage server of this backend on a free port, its rollup loop off (tests roll up when they mean to)."""
    from tollgate.services.usage import server
    from tollgate.services.usage.config import Settings

    return server.build(
        test_settings(Settings(), database_url=dbs.usage_url, **{"rollup_interval_seconds": 0, **changes})
    )


def build_policy(dbs: Databases, usage_port: int | None = None, *, usage_token: str | None = None, **changes):
    """A Policy server of this backend on a free port; given usage_port, it asks the Usage there with
    usage_token (unless one is given, a fresh platform token with what production gives Policy: usage:read for
    quotas and rankings, usage:write for committed reservations; a read-only one would leave a commit in the outbox,
    retried against the shared Usage server for the rest of the session)."""
    from tollgate.services.policy import server
    from tollgate.services.policy.config import Settings

    if usage_port is not None:
        changes["usage_addr"] = f"127.0.0.1:{usage_port}"
        changes["usage_token"] = usage_token or make_token(
            dbs, tenant=None, scopes=["usage:read", "usage:write"], service="usage"
        )
    return server.build(test_settings(Settings(), database_url=dbs.policy_url, **changes))
