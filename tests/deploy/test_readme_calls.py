"""The README's and docs/api.md's grpcurl calls work as printed against `make run` (its script, on free ports)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts import demo
from scripts.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """scripts.run_local (what `make run` starts) with its var/ in a temp folder."""
    home = tmp_path_factory.mktemp("readme")
    ports = {"usage": free_port(), "policy": free_port(), "usage_http": free_port(), "policy_http": free_port()}
    env = {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(home / "var"),
        "USAGE_PORT": str(ports["usage"]),
        "POLICY_PORT": str(ports["policy"]),
        "USAGE_HTTP_PORT": str(ports["usage_http"]),
        "POLICY_HTTP_PORT": str(ports["policy_http"]),
        "USAGE_METRICS_PORT": "-1",
        "POLICY_METRICS_PORT": "-1",
    }
    for name in ("USAGE_DATABASE_URL", "POLICY_DATABASE_URL"):
        env.pop(name, None)
    env["USAGE_DATABASE_URL"] = f"sqlite:///{home}/var/usage.db"
    env["POLICY_DATABASE_URL"] = f"sqlite:///{home}/var/policy.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.run_local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    banner = []
    deadline = time.monotonic() + 90
    for line in process.stdout:
        banner.append(line)
        if "Ctrl-C stops both services" in line or time.monotonic() > deadline:
            break
    yield home, ports, "".join(banner), process
    process.terminate()
    process.wait(timeout=60)


def run_call(call: str, home: Path, ports: dict) -> subprocess.CompletedProcess:
    call = call.replace("localhost:50051", f"localhost:{ports['usage']}")
    call = call.replace("localhost:50052", f"localhost:{ports['policy']}")
    call = call.replace("localhost:8081/", f"localhost:{ports['usage_http']}/")
    call = call.replace("localhost:8082/", f"localhost:{ports['policy_http']}/")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", call], cwd=home, env=env, capture_output=True, text=True, timeout=60)


def test_make_run_prints_the_endpoints_and_the_readme_calls(running):
    _home, _ports, banner, _process = running
    assert "localhost:50051" in banner and "localhost:50052" in banner
    assert "http://localhost:8081" in banner and "http://localhost:8082" in banner
    for call in demo.readme_calls():
        assert call in banner


def test_every_readme_call_answers_as_the_readme_says(running):
    home, ports, _banner, _process = running
    answers = {}
    for call in demo.readme_calls():
        result = run_call(call, home, ports)
        assert result.returncode == 0, f"{call}\n{result.stderr}"
        # grpcurl ends with the RPC, curl with its URL: keyed by the RPC, the curl answers as "http:" + RPC.
        rpc = call.split()[-1]
        answers["http:" + rpc.split("/", 3)[-1] if call.startswith("curl ") else rpc] = result.stdout
    assert '"SERVING"' in answers["grpc.health.v1.Health/Check"]
    assert "VERDICT_ACCEPTED" in answers["tollgate.usage.v1.UsageService/RecordEvents"]
    totals = json.loads(answers["tollgate.usage.v1.UsageService/GetUsage"])["totals"]
    assert any(t["metric"] == "scoring.requests" for t in totals)
    resolved = json.loads(answers["tollgate.policy.v1.PolicyService/ResolveMode"])
    assert resolved["resolution"]["effective_mode"].startswith("MODE_"), resolved
    ranked = json.loads(answers["tollgate.policy.v1.PolicyService/ListActiveFeatures"])
    assert ranked["usage_available"] is True and ranked["features"]
    assert json.loads(answers["tollgate.policy.v1.PolicyAdminService/VerifyAudit"])["ok"] is True
    # The curl calls: the same RPCs over HTTP/JSON, answered in proto3 JSON (lowerCamelCase).
    assert "VERDICT_ACCEPTED" in answers["http:tollgate.usage.v1.UsageService/RecordEvents"]
    totals = json.loads(answers["http:tollgate.usage.v1.UsageService/GetUsage"])["totals"]
    assert any(t["metric"] == "scoring.requests" and int(t["quantity"]) >= 5 for t in totals)
    resolved = json.loads(answers["http:tollgate.policy.v1.PolicyService/ResolveMode"])
    assert resolved["resolution"]["effectiveMode"].startswith("MODE_"), resolved
    # POST /v1/events: a CloudEvent, answered with RecordEvents' verdicts.
    assert "VERDICT_ACCEPTED" in answers["http:v1/events"]


def api_md_usage(home: Path, ports: dict, call: str) -> dict[tuple[str, str], int]:
    """Run docs/api.md's setup lines, then its call of `call` (an RPC path), as printed; GetUsage's totals."""
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = [block.split("```")[0] for block in text.split("```sh\n")[1:]]
    calls = {line.split()[-1]: line for block in blocks for line in block.splitlines() if line.startswith("grpcurl")}
    result = run_call(blocks[0] + calls[f"tollgate.usage.v1.UsageService/{call}"], home, ports)
    assert result.returncode == 0, f"{call}\n{result.stderr}"
    if call != "GetUsage":
        return {}
    return {
        (t["metric"], t.get("actor_id", "")): int(t["quantity"]) for t in json.loads(result.stdout).get("totals", [])
    }


def test_the_event_docs_api_md_records_is_counted_by_its_get_usage_call(running):
    home, ports, _banner, _process = running
    before = api_md_usage(home, ports, "GetUsage")
    api_md_usage(home, ports, "RecordEvents")
    after = api_md_usage(home, ports, "GetUsage")
    key = ("leads.processed", "alice")
    assert after.get(key, 0) - before.get(key, 0) == 1
