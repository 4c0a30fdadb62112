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


class ServiceProcess:
    """`python -m tollgate.services.<SERVICE>` on a free loopback port, SERVING when built; `stop()` ends it."""

    SERVICE = ""
    DEFAULTS: dict[str, str] = {}

    def __init__(self, url: str, **settings: str):
        """`settings`: more <SERVICE>_* variables, which win over these defaults."""
        self.port, p = free_port(), self.SERVICE.upper()
        env = {
            **os.environ,
            f"{p}_DATABASE_URL": url,
            f"{p}_HOST": "127.0.0.1",
            f"{p}_PORT": str(self.port),
            f"{p}_METRICS_PORT": "-1",
            f"{p}_HTTP_PORT": "-1",
            f"{p}_LOG_LEVEL": "WARNING",
            **self.DEFAULTS,
            **settings,
        }
        self._process = subprocess.Popen([sys.executable, "-m", f"tollgate.services.{self.SERVICE}"], cwd=ROOT, env=env)
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
                    raise RuntimeError(f"the {self.SERVICE} process did not become SERVING")
                time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """The CPU time the process (all its threads) has used so far, user and system, from /proc/<pid>/stat."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class UsageProcess(ServiceProcess):
    SERVICE, DEFAULTS = "usage", {"USAGE_ROLLUP_INTERVAL_SECONDS": "0"}


class PolicyProcess(ServiceProcess):
    SERVICE = "policy"
