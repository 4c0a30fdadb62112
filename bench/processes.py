"""Services in processes of their own, as deployed: their work does not share the bench's GIL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.pgcluster import free_port

ROOT = Path(__file__).resolve().parent.parent


class UsageProcess:
    """`python -m tollgate.services.usage` on a free loopback port, SERVING when built; `stop()` ends it."""

    def __init__(self, url: str, **settings: str):
        """`settings`: more USAGE_* variables, which win over these defaults."""
        self.port = free_port()
        env = {
            **os.environ,
            "USAGE_DATABASE_URL": url,
            "USAGE_HOST": "127.0.0.1",
            "USAGE_PORT": str(self.port),
            "USAGE_METRICS_PORT": "-1",
            "USAGE_HTTP_PORT": "-1",
            "USAGE_ROLLUP_INTERVAL_SECONDS": "0",
            "USAGE_LOG_LEVEL": "WARNING",
            "USAGE_HEALTH_INTERVAL_SECONDS": "0.2",
            **settings,
        }
        self._process = subprocess.Popen([sys.executable, "-m", "tollgate.services.usage"], cwd=ROOT, env=env)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health, deadline = health_pb2_grpc.HealthStub(channel), time.monotonic() + 60
            while True:
                try:
                    if (
                        health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the Usage process did not become SERVING")
                time.sleep(0.1)

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
