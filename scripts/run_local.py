"""`make run`: migrate the SQLite databases, mint tokens, start both services, load the demo,
print the endpoints and ready-to-paste grpcurl calls; Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts import demo, tokens
from tollgate.shared import migrate

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("TOLLGATE_VAR_DIR") or ROOT / "var")
ALL_SCOPES = ["usage:write", "usage:read", "usage:admin", "policy:read", "policy:write", "policy:admin"]


METRICS = {"usage": 9464, "policy": 9465}  # the services' default metrics ports


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("USAGE_DATABASE_URL", f"sqlite:///{VAR}/usage.db")
    env.setdefault("POLICY_DATABASE_URL", f"sqlite:///{VAR}/policy.db")
    env.setdefault("POLICY_USAGE_ADDR", f"localhost:{env.get('USAGE_PORT', '50051')}")
    env.setdefault("POLICY_USAGE_TOKEN_FILE", str(VAR / "policy-usage.token"))
    env.setdefault("USAGE_ROLLUP_INTERVAL_SECONDS", "10")
    return env


def _wait_serving(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"service on port {port} exited with {process.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"service on port {port} did not become SERVING in {timeout:.0f}s")


def main() -> int:
    VAR.mkdir(exist_ok=True)
    env = _environment()
    os.environ.update({k: env[k] for k in ("USAGE_DATABASE_URL", "POLICY_DATABASE_URL")})
    migrate.upgrade("usage", env["USAGE_DATABASE_URL"])
    migrate.upgrade("policy", env["POLICY_DATABASE_URL"])
    admin = tokens.ensure(VAR / "admin.token", tenant=None, scopes=ALL_SCOPES, service="both", label="make run admin")
    tokens.ensure(
        VAR / "policy-usage.token",
        tenant=None,
        scopes=["usage:read", "usage:write"],
        service="usage",
        label="policy service",
    )
    tokens.ensure(
        VAR / "demo.token",
        tenant=demo.TENANT,
        scopes=["usage:write", "usage:read", "policy:read", "policy:write"],
        service="both",
        label="demo tenant",
    )
    children = [
        subprocess.Popen([sys.executable, "-m", f"tollgate.services.{name}"], cwd=ROOT, env=env)
        for name in ("usage", "policy")
    ]
    try:
        ports = demo.ports_from(env)
        _wait_serving(ports["usage"], children[0])
        _wait_serving(ports["policy"], children[1])
        demo.load(
            usage_addr=f"localhost:{ports['usage']}", policy_addr=f"localhost:{ports['policy']}", admin_token=admin
        )
        metrics = {name: int(env.get(f"{name.upper()}_METRICS_PORT", default)) for name, default in METRICS.items()}
        print(demo.banner(ports, metrics), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
