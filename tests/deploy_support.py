"""Paths, constants and readers shared by the deployment tests (test_deploy_*.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OVERLAYS = ["dev", "production"]
K8S_VERSION = "1.37.0"
SERVICES = {
    "usage": {
        "port": 50051,
        "http": 8081,
        "health_port": 50061,
        "metrics": 9464,
        "health": "tollgate.usage.v1.UsageService",
        "prefix": "USAGE_",
    },
    "policy": {
        "port": 50052,
        "http": 8082,
        "health_port": 50062,
        "metrics": 9465,
        "health": "tollgate.policy.v1.PolicyService",
        "prefix": "POLICY_",
    },
}
PLACEHOLDER = "REPLACE_ME"


def env_variables(service: str) -> set[str]:
    """Every variable a service's Settings reads (POLICY_USAGE_TOKEN also as ..._FILE)."""
    from tollgate.services.policy.config import Settings as PolicySettings
    from tollgate.services.usage.config import Settings as UsageSettings

    return set({"usage": UsageSettings, "policy": PolicySettings}[service].variables())


def check_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker/compose.yaml").read_text())


def clean_env() -> dict[str, str]:
    """This process's environment without any service setting (a subprocess reads only what it is given)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_", "POLICY_"))}
