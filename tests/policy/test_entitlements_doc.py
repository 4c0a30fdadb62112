"""docs/entitlements.md's grpcurl block works as printed against `make run` (its script, on free ports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """scripts.run_local (what `make run` starts) with its var/ in a temp folder."""
    home = tmp_path_factory.mktemp("entitlements_doc")
    ports = {"usage": free_port(), "policy": free_port()}
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("USAGE_DATABASE_URL", "POLICY_DATABASE_URL")},
        "TOLLGATE_VAR_DIR": str(home / "var"),
        "USAGE_PORT": str(ports["usage"]),
        "POLICY_PORT": str(ports["policy"]),
        "USAGE_HTTP_PORT": "-1",
        "POLICY_HTTP_PORT": "-1",
        "USAGE_METRICS_PORT": "-1",
        "POLICY_METRICS_PORT": "-1",
        "USAGE_DATABASE_URL": f"sqlite:///{home}/var/usage.db",
        "POLICY_DATABASE_URL": f"sqlite:///{home}/var/policy.db",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.run_local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 90
    assert process.stdout is not None
    for line in process.stdout:
        if "Ctrl-C stops both services" in line or time.monotonic() > deadline:
            break
    yield home, ports
    process.terminate()
    process.wait(timeout=60)


def the_block() -> str:
    text = (ROOT / "docs" / "entitlements.md").read_text()
    return text.split("```sh\n")[1].split("```")[0]


def run_block(home: Path, ports: dict) -> subprocess.CompletedProcess:
    script = the_block().replace("localhost:50052", f"localhost:{ports['policy']}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=home, env=env, capture_output=True, text=True, timeout=120
    )


def answers(stdout: str) -> list[dict]:
    """grpcurl prints one indented JSON object per call: decode them in order."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(stdout):
        if stdout[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(stdout, at)
        found.append(value)
    return found


def test_the_docs_block_sets_up_reserves_commits_and_shows_the_balance_and_a_rerun_is_idempotent(running):
    home, ports = running
    first = run_block(home, ports)
    assert first.returncode == 0, first.stderr
    plan, _policy, subscription, grant, before, committed, after = answers(first.stdout)
    assert plan["plan"]["quotas"][0]["kind"] == "LIMIT_KIND_HARD"
    assert subscription["subscription"]["time_zone"] == "Europe/Paris"
    assert grant["grant"]["amount"] == "500"
    assert before["quotas"][0]["balance"] == "1500" and before["has_access"] is True
    assert committed["reservation"]["state"] == "RESERVATION_STATE_COMMITTED"
    assert committed["reservation"]["committed_amount"] == "250"
    [quota] = after["quotas"]
    assert (quota["usage"], quota["balance"], quota["decides"]) == ("250", "1250", True)
    assert quota["detail"] == "quota api.requests 1000/month hard: 250 used of 1500 allowed (1000 + 500 granted)"
    assert quota["period_start"].endswith(("T09:00:00Z", "T08:00:00Z"))  # 10:00 in Paris
    again = run_block(home, ports)
    assert again.returncode == 0, again.stderr
    *_, recommitted, rechecked = answers(again.stdout)
    assert recommitted["reservation"]["reservation_id"] == committed["reservation"]["reservation_id"]
    assert rechecked["quotas"][0]["usage"] == "250"  # the same reservation and commit: counted once
    assert rechecked["quotas"][0]["granted"] == "1000"  # the block's grant, given twice
