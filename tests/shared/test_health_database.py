"""Health follows the database: NOT_SERVING while it is gone or not migrated, SERVING when back."""

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from tests import support
from tollgate.services.usage import server as usage_server
from tollgate.services.usage.config import Settings
from tollgate.shared import migrate
from tollgate.shared.db import normalize_url

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for_health(port: int, wanted: int, timeout: float = 15.0, service: str = "") -> int | None:
    """Poll health until it reads `wanted` or time runs out; None while nothing answers."""
    deadline = time.monotonic() + timeout
    with support.channel(port) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            except grpc.RpcError:
                status = None  # not listening yet, or gone
            if status == wanted or time.monotonic() > deadline:
                return status
            time.sleep(0.1)


def admin_sql(admin_url: str, *statements: str) -> None:
    engine = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for statement in statements:
            connection.execute(text(statement))
    engine.dispose()


def test_on_postgres_health_turns_not_serving_when_the_database_goes_away_and_back_when_it_returns():
    admin = support.postgres_admin_url()
    if not admin:
        pytest.skip("no PostgreSQL")
    url = support.create_postgres_database(admin)
    name = url.rpartition("/")[2]
    migrate.upgrade("usage", url)
    running = usage_server.build(support.test_settings(Settings(), database_url=url))
    try:
        assert wait_for_health(running.port, SERVING) == SERVING
        # The database refuses every connection and drops the open ones: it is gone for the service.
        admin_sql(
            admin,
            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
        assert wait_for_health(running.port, NOT_SERVING) == NOT_SERVING
        admin_sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert wait_for_health(running.port, SERVING) == SERVING
    finally:
        running.stop(grace=1)
        admin_sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        support.drop_postgres_database(admin, url)


def test_on_sqlite_health_is_not_serving_until_the_schema_is_migrated(tmp_path):
    url = f"sqlite:///{tmp_path}/usage.db"
    running = usage_server.build(support.test_settings(Settings(), database_url=url))
    try:
        assert wait_for_health(running.port, NOT_SERVING, timeout=1) == NOT_SERVING
        # The process itself is alive: liveness stays SERVING so Kubernetes does not restart it.
        assert wait_for_health(running.port, SERVING, timeout=1, service="liveness") == SERVING
        migrate.upgrade("usage", url)
        assert wait_for_health(running.port, SERVING) == SERVING
        migrate.downgrade("usage", url)
        assert wait_for_health(running.port, NOT_SERVING) == NOT_SERVING
    finally:
        running.stop(grace=1)
