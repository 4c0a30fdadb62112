"""Helpers of the fault tests: real service processes, event batches with every key set, and the
stored truth read straight from the tables (rows and sums), beside what the RPCs say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from sqlalchemy import func, select

from tests import support
from tests.shared.test_health_database import wait_for_health
from tests.usage_support import MINUTE_US, event, now_us
from tollgate.services.usage import tables as usage_tables
from tollgate.shared.db import create_engine_for
from tollgate.usage.v1 import usage_pb2 as u

ROOT = Path(__file__).resolve().parent.parent
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
METRICS = ("api.requests", "leads.processed", "scoring.requests")


def _start(module: str, prefix: str, port: int, settings: dict[str, str], wait: bool) -> subprocess.Popen:
    env = {
        **os.environ,
        f"{prefix}_PORT": str(port),
        f"{prefix}_HOST": "127.0.0.1",
        f"{prefix}_METRICS_PORT": "-1",
        f"{prefix}_HTTP_PORT": "-1",
        f"{prefix}_LOG_LEVEL": "WARNING",
        f"{prefix}_HEALTH_INTERVAL_SECONDS": "0.2",
        **settings,
    }
    # The log goes to a file, never a pipe nobody reads: a full pipe would block the process's logging.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    process.log = log
    if wait and wait_for_health(port, SERVING, timeout=30) != SERVING:
        end(process)
        raise AssertionError(f"{module} did not turn SERVING: {log_tail(process)!r}")
    return process


def log_tail(process: subprocess.Popen, size: int = 2000) -> bytes:
    """The end of a started process's log."""
    process.log.seek(0, os.SEEK_END)
    process.log.seek(max(0, process.log.tell() - size))
    return process.log.read()


def start_usage(url: str, port: int, wait: bool = True, **settings: str) -> subprocess.Popen:
    """`python -m tollgate.services.usage` on 127.0.0.1:port; settings are USAGE_* names without the prefix."""
    env = {
        "USAGE_DATABASE_URL": url,
        "USAGE_ROLLUP_INTERVAL_SECONDS": "0",
        **{f"USAGE_{k.upper()}": str(v) for k, v in settings.items()},
    }
    return _start("tollgate.services.usage", "USAGE", port, env, wait)


def start_policy(
    url: str, port: int, usage_addr: str, usage_token: str, wait: bool = True, **settings: str
) -> subprocess.Popen:
    """`python -m tollgate.services.policy` on 127.0.0.1:port, asking Usage at usage_addr."""
    env = {
        "POLICY_DATABASE_URL": url,
        "POLICY_USAGE_ADDR": usage_addr,
        "POLICY_USAGE_TOKEN": usage_token,
        **{f"POLICY_{k.upper()}": str(v) for k, v in settings.items()},
    }
    return _start("tollgate.services.policy", "POLICY", port, env, wait)


def end(process: subprocess.Popen) -> None:
    """Kill a process this test started, if it still runs, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def batch(tenant: str, tag: str, size: int) -> u.RecordEventsRequest:
    """A batch whose events set all three keys (event id, idempotency key, correlation) and vary metric and quantity."""
    base = now_us() - 90 * MINUTE_US
    return u.RecordEventsRequest(
        tenant_id=tenant,
        events=[
            event(
                f"{tag}-{n}",
                metric=METRICS[n % 3],
                quantity=1 + n % 7,
                at_us=base + n,
                idempotency_key=f"k-{tag}-{n}",
                correlation_id=f"c-{tag}-{n}",
                actor_id=f"actor-{n % 5}",
            )
            for n in range(size)
        ],
    )


def expected_totals(requests) -> dict[str, tuple[int, int]]:
    """{metric: (quantity, event count)} of every event in the requests, each counted once."""
    seen, result = set(), {}
    for request in requests:
        for e in request.events:
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
            quantity, count = result.get(e.metric, (0, 0))
            result[e.metric] = (quantity + e.quantity, count + 1)
    return result


def stored_rows(url: str, tenant: str) -> dict[str, tuple[int, int]]:
    """{metric: (sum of quantity, rows)} counted in the events table itself, not through the service."""
    engine = create_engine_for(url, schema=usage_tables.SCHEMA, pool_size=1)
    events = usage_tables.events
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(events.c.metric, func.sum(events.c.quantity), func.count())
                .where(events.c.tenant_id == tenant)
                .group_by(events.c.metric)
            ).all()
    finally:
        engine.dispose()
    return {metric: (int(quantity), int(count)) for metric, quantity, count in rows}


def stored_event_ids(url: str, tenant: str) -> set[str]:
    engine = create_engine_for(url, schema=usage_tables.SCHEMA, pool_size=1)
    events = usage_tables.events
    try:
        with engine.connect() as connection:
            return set(connection.execute(select(events.c.event_id).where(events.c.tenant_id == tenant)).scalars())
    finally:
        engine.dispose()


def health_of(port: int, service: str = "", timeout: float = 1.0) -> int | None:
    """One health check; None when nothing answers."""
    from grpc_health.v1 import health_pb2_grpc

    with support.channel(port) as channel:
        try:
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
                .status
            )
        except grpc.RpcError:
            return None


def timed_code(call) -> tuple[grpc.StatusCode, float]:
    """(status code, seconds) of one stub call."""
    started = time.monotonic()
    try:
        call()
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
    return code, time.monotonic() - started
