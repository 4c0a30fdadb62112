"""The README's and docs/api.md's grpcurl calls work as printed against `make run` (its script, on free ports)."""

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scripts import demo
from scripts.pgcluster import free_port
from tollgate.usage.v1 import usage_pb2 as u

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
    call = demo.at_ports(call, ports)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", call], cwd=home, env=env, capture_output=True, text=True, timeout=60)


def test_make_run_prints_the_endpoints_and_the_readme_calls(running):
    _home, ports, banner, _process = running
    # The ports it was started on, not the defaults: the README's calls are printed aimed at them.
    assert f"Usage   gRPC localhost:{ports['usage']}   HTTP/JSON http://localhost:{ports['usage_http']}" in banner
    assert f"Policy  gRPC localhost:{ports['policy']}   HTTP/JSON http://localhost:{ports['policy_http']}" in banner
    assert "metrics off" in banner
    assert "localhost:50051" not in banner and "localhost:8081" not in banner
    for call in demo.readme_calls():
        assert demo.at_ports(call, ports) in banner


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


def test_the_readme_ai_metering_example_answers_tokens_by_model_and_token_type_per_berlin_day(running):
    home, ports, _banner, _process = running
    calls = {call.split()[-1]: call for call in demo.readme_calls() if '"ai.tokens"' in call}
    recorded = run_call(calls["tollgate.usage.v1.UsageService/RecordEvents"], home, ports)
    assert recorded.returncode == 0, recorded.stderr
    # Accepted, or already recorded by the run of every README call (a DUPLICATE, or a CONFLICT in another second).
    verdict = json.loads(recorded.stdout)["results"][0]["verdict"]
    assert verdict in ("VERDICT_ACCEPTED", "VERDICT_DUPLICATE", "VERDICT_CONFLICT")
    queried = run_call(calls["tollgate.usage.v1.UsageService/QueryUsage"], home, ports)
    assert queried.returncode == 0, queried.stderr
    answer = json.loads(queried.stdout)
    rows = answer["rows"]
    assert answer["aggregation"] == "AGGREGATION_SUM"
    starts = [datetime.fromisoformat(row["window_start"]) for row in rows]
    assert starts == sorted(starts)
    # Every window but the clipped first starts at midnight in Berlin: 23:00 UTC in winter, 22:00 in summer.
    berlin = ZoneInfo("Europe/Berlin")
    for start in sorted(set(starts))[1:]:
        assert start.astimezone(berlin).time() == dtime(0, 0), start
    by_group = {}
    for row in rows:
        key = (row["group"]["model"], row["group"]["token_type"])
        by_group[key] = by_group.get(key, 0) + int(row["value"])
    assert set(by_group) <= {(model, token_type) for _user, model, token_type, *_ in demo.AI_USAGE} | {
        ("gpt-4o", "completion")
    }
    assert ("claude-sonnet", "cached") in by_group
    last = [row for row in rows if row["window_start"] == rows[-1]["window_start"]]
    assert any(
        (row["group"]["model"], row["group"]["token_type"]) == ("gpt-4o", "completion") and int(row["value"]) >= 512
        for row in last
    )


def test_every_query_usage_call_of_docs_api_md_answers_rows_of_its_aggregation(running):
    """One QueryUsage example per aggregation, each on a meter of the demo catalog, run as printed."""
    home, ports, _banner, _process = running
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = [block.split("```")[0] for block in text.split("```sh\n")[1:]]
    calls = [line for block in blocks for line in block.splitlines() if line.endswith("UsageService/QueryUsage")]
    meters = {meter.name: meter for meter in demo.METERS}
    seen = set()
    for call in calls:
        result = run_call(blocks[0] + call, home, ports)
        assert result.returncode == 0, f"{call}\n{result.stderr}"
        answer = json.loads(result.stdout)
        metric = re.search(r'"metric":"([^"]+)"', call)
        assert metric, call
        expected = u.Aggregation.Name(meters[metric.group(1)].aggregation or u.AGGREGATION_SUM)
        assert answer["aggregation"] == expected, call
        assert answer["rows"], call
        seen.add(expected)
    assert seen == {name for name in u.Aggregation.keys() if name != "AGGREGATION_UNSPECIFIED"}
