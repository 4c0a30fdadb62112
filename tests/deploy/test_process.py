"""The service processes: bad configuration fails fast; SIGTERM turns health off, drains, exits 0."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from grpc_health.v1 import health_pb2

from scripts.pgcluster import free_port
from tests.shared.test_health_database import wait_for_health
from tollgate.shared import migrate

ROOT = Path(__file__).resolve().parents[2]


def start(module: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_bad_setting_stops_the_service_at_start_naming_the_variable():
    process = start("tollgate.services.usage", {"USAGE_PORT": "not-a-port"})
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "USAGE_PORT" in err


def test_a_bad_database_url_names_its_variable():
    process = start("tollgate.services.policy", {"POLICY_DATABASE_URL": "mysql://nope"})
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "POLICY_DATABASE_URL" in err


def test_sigterm_turns_health_not_serving_first_then_exits_zero(tmp_path):
    url = f"sqlite:///{tmp_path}/usage.db"
    migrate.upgrade("usage", url)
    port = free_port()
    process = start(
        "tollgate.services.usage",
        {
            "USAGE_DATABASE_URL": url,
            "USAGE_PORT": str(port),
            "USAGE_HOST": "127.0.0.1",
            "USAGE_METRICS_PORT": "-1",
            "USAGE_HTTP_PORT": "-1",
            "USAGE_DRAIN_SECONDS": "2",
            "USAGE_HEALTH_INTERVAL_SECONDS": "0.2",
        },
    )
    try:
        assert wait_for_health(port, health_pb2.HealthCheckResponse.SERVING) == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        # While it drains, the process still answers, and says NOT_SERVING.
        assert (
            wait_for_health(port, health_pb2.HealthCheckResponse.NOT_SERVING, timeout=1.5)
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
