"""Fixtures: every database test runs on SQLite and on PostgreSQL, through real servers on port 0."""

from __future__ import annotations

import os

import grpc
import pytest

from tests import support, usage_support
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.usage.v1 import usage_pb2_grpc

BACKENDS = ["sqlite", "postgres"]
ALL_SCOPES = ["usage:write", "usage:read", "usage:admin", "policy:read", "policy:write", "policy:admin"]


def pytest_collection_modifyitems(config, items):
    """With CI=true a PostgreSQL test may not skip: no server means the run fails."""
    if os.environ.get("CI") == "true" and not support.postgres_admin_url():
        raise pytest.UsageError("CI=true but TEST_DATABASE_URL is not set: PostgreSQL tests may not skip")


@pytest.fixture(autouse=True)
def _one_now_per_test():
    with usage_support.pinned_now():
        yield


@pytest.fixture(scope="session")
def postgres_url():
    admin = support.postgres_admin_url()
    if not admin:
        pytest.skip("no PostgreSQL: set TEST_DATABASE_URL or run through `make test`")
    url = support.create_postgres_database(admin)
    yield url
    support.drop_postgres_database(admin, url)


@pytest.fixture(scope="session", params=BACKENDS)
def dbs(request, tmp_path_factory) -> support.Databases:
    """Migrated databases of one backend, shared by the session; tests isolate by tenant."""
    if request.param == "sqlite":
        return support.sqlite_databases(tmp_path_factory.mktemp("sqlite"))
    return support.postgres_databases(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def admin_token(dbs) -> str:
    """A platform token with every scope."""
    return support.make_token(dbs, tenant=None, scopes=ALL_SCOPES)


@pytest.fixture
def tenant() -> str:
    return support.new_tenant()


@pytest.fixture(scope="session")
def usage(dbs):
    """A Usage server of this backend on a free port."""
    running = support.build_usage(dbs)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="session")
def policy(dbs, usage):
    """A Policy server of this backend on a free port, reading usage from the Usage server."""
    # No reuse of ranking usage: tests record usage and expect the next ranking to show it. Its outbox loop stays
    # idle for the session: commits are delivered as they are made, and a loop sending rows other modules' Policies
    # left behind would land RecordEvents at random in the metrics tests' exact counts (the registry is global).
    running = support.build_policy(dbs, usage.port, ranking_cache_seconds=0, outbox_interval_seconds=86_400)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="session")
def usage_channel(usage):
    with support.channel(usage.port) as channel:
        yield channel


@pytest.fixture(scope="session")
def policy_channel(policy):
    with support.channel(policy.port) as channel:
        yield channel


@pytest.fixture(scope="session")
def usage_stub(usage_channel):
    return usage_pb2_grpc.UsageServiceStub(usage_channel)


@pytest.fixture(scope="session")
def usage_admin_stub(usage_channel):
    return usage_pb2_grpc.UsageAdminServiceStub(usage_channel)


@pytest.fixture(scope="session")
def policy_stub(policy_channel):
    return policy_pb2_grpc.PolicyServiceStub(policy_channel)


@pytest.fixture(scope="session")
def policy_admin_stub(policy_channel):
    return policy_pb2_grpc.PolicyAdminServiceStub(policy_channel)


def status_of(call) -> grpc.StatusCode:
    """The status code a stub call ends with."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK
