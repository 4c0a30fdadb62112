"""The servers' own logs, read from the stderr of real `python -m services.<name>` processes on both backends:
every line is JSON naming its service, loggers follow one scheme, a refused call says why and by which
credential (never its secret), and a rollup round with nothing to do stays at DEBUG."""

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scripts.pgcluster import free_port
from tests import fault_support, support
from tests.conftest import status_of
from tests.usage_support import event
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.shared import credentials_cli
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
UNKNOWN = "tg_0123456789abcdef_" + "A" * 43


@dataclass(frozen=True)
class Logs:
    """Each process's log lines (parsed), the refused calls made ({request id: (reason, token id)}), every secret."""

    usage: list[dict]
    policy: list[dict]
    refused: dict[str, tuple[str, str]]
    secrets: frozenset[str]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def own_dbs(request, tmp_path_factory):
    """Fresh databases: the rollup rounds then see only this module's buckets."""
    with support.fresh_databases(request.param, tmp_path_factory.mktemp("logs")) as own:
        yield own


def token_id(token: str) -> str:
    return token.split("_")[1]


def secret(token: str) -> str:
    return token.split("_", 2)[2]


def read_lines(process) -> list[dict]:
    """Every line the process wrote on stderr, each parsed as JSON (a line that is not JSON fails the test)."""
    process.log.seek(0)
    return [json.loads(line) for line in process.log.read().decode().splitlines()]


def wait_for_line(process, predicate, what: str) -> None:
    """Wait (for as long as the scheduled job takes, bounded) until a log line matches."""
    for _ in range(300):
        if any(predicate(line) for line in read_lines(process)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {what} in {fault_support.log_tail(process)!r}")


def refuse(call, request_id: str, metadata=()) -> grpc.StatusCode:
    return status_of(lambda: call(metadata=(*metadata, ("x-request-id", request_id))))


@pytest.fixture(scope="module")
def logs(own_dbs) -> Logs:
    tenant, other = support.new_tenant(), support.new_tenant()
    make = lambda **kw: support.make_token(own_dbs, **kw)  # noqa: E731
    tokens = {
        "platform": make(tenant=None, scopes=["usage:read", "usage:admin", "policy:read"]),
        "writer": make(tenant=tenant, scopes=["usage:write"]),
        "tenant_admin": make(tenant=tenant, scopes=["usage:admin"]),
        "policy_only": make(tenant=tenant, scopes=["policy:read"]),
        "revoked": make(tenant=tenant, scopes=["usage:read"]),
        "policy_usage": make(tenant=None, scopes=["usage:read"]),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("USAGE_DATABASE_URL", own_dbs.usage_url)
        patch.setenv("POLICY_DATABASE_URL", own_dbs.policy_url)
        assert credentials_cli.main(["revoke", token_id(tokens["revoked"])]) == 0
    usage_port, policy_port = free_port(), free_port()
    usage = fault_support.start_usage(
        own_dbs.usage_url, usage_port, log_level="DEBUG", rollup_interval_seconds=0.2, auth_cache_seconds=0
    )
    policy = fault_support.start_policy(
        own_dbs.policy_url,
        policy_port,
        f"127.0.0.1:{usage_port}",
        tokens["policy_usage"],
        log_level="INFO",
        auth_cache_seconds=0,
    )
    try:
        refused = usage_calls(usage_port, tokens, tenant, other)
        # Nothing dirty until the event above: the rounds before it found nothing; one after rolls it up.
        wait_for_line(usage, lambda line: line["message"] == "rollup" and line.get("buckets"), "rollup with work")
        wait_for_line(
            usage,
            lambda line: (
                line["message"] == "rollup"
                and line["level"] == "debug"
                and line["time"] > first_busy_round(read_lines(usage))
            ),
            "idle rollup round after it",
        )
        with support.channel(policy_port) as channel:
            stub = policy_pb2_grpc.PolicyAdminServiceStub(channel)
            features = lambda **kw: stub.ListFeatures(pb.ListFeaturesRequest(), timeout=10, **kw)  # noqa: E731
            assert refuse(features, "p-unknown", support.bearer(tokens["writer"])) == grpc.StatusCode.UNAUTHENTICATED
            stub.ListFeatures(pb.ListFeaturesRequest(), metadata=support.bearer(tokens["platform"]), timeout=10)
        refused["p-unknown"] = ("unknown token", token_id(tokens["writer"]))
        return Logs(read_lines(usage), read_lines(policy), refused, frozenset(secret(t) for t in tokens.values()))
    finally:
        for process in (usage, policy):
            fault_support.end(process)


def first_busy_round(lines: list[dict]) -> str:
    return min(line["time"] for line in lines if line["message"] == "rollup" and line.get("buckets"))


def usage_calls(port: int, tokens: dict, tenant: str, other: str) -> dict[str, tuple[str, str]]:
    """One call refused for each reason, one accepted event (a dirty bucket for the rollup rounds)."""
    forged = tokens["revoked"][: tokens["revoked"].rindex("_") + 1] + "forged-secret"
    with support.channel(port) as channel:
        stub, admin = usage_pb2_grpc.UsageServiceStub(channel), usage_pb2_grpc.UsageAdminServiceStub(channel)
        metrics = lambda **kw: stub.ListMetrics(u.ListMetricsRequest(), timeout=10, **kw)  # noqa: E731
        cases = {
            "missing": (metrics, (), "missing token", ""),
            "malformed": (metrics, (("authorization", "Bearer nonsense"),), "malformed token", ""),
            "unknown": (metrics, support.bearer(UNKNOWN), "unknown token", "0123456789abcdef"),
            "forged": (metrics, support.bearer(forged), "wrong secret", token_id(forged)),
            "revoked": (metrics, support.bearer(tokens["revoked"]), "revoked token", token_id(tokens["revoked"])),
            "other-service": (
                metrics,
                support.bearer(tokens["policy_only"]),
                "unknown token",
                token_id(tokens["policy_only"]),
            ),
            "no-scope": (metrics, support.bearer(tokens["writer"]), "missing scope", token_id(tokens["writer"])),
            "other-tenant": (
                lambda **kw: stub.RecordEvents(
                    u.RecordEventsRequest(tenant_id=other, events=[event("e-other")]), timeout=10, **kw
                ),
                support.bearer(tokens["writer"]),
                "other tenant",
                token_id(tokens["writer"]),
            ),
            "platform-only": (
                lambda **kw: admin.VerifyAudit(u.VerifyAuditRequest(), timeout=10, **kw),
                support.bearer(tokens["tenant_admin"]),
                "platform only",
                token_id(tokens["tenant_admin"]),
            ),
        }
        for request_id, (call, metadata, _why, _id) in cases.items():
            assert refuse(call, request_id, metadata) in {
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            }, request_id
        stub.RecordEvents(
            u.RecordEventsRequest(tenant_id=tenant, events=[event("e-1")]),
            metadata=(*support.bearer(tokens["writer"]), ("x-request-id", "accepted")),
            timeout=10,
        )
    return {request_id: (why, token) for request_id, (_call, _metadata, why, token) in cases.items()}


def test_every_line_of_each_server_is_json_naming_its_service(logs):
    assert logs.usage and logs.policy
    assert {line["service"] for line in logs.usage} == {"usage"}
    assert {line["service"] for line in logs.policy} == {"policy"}


def test_a_refused_call_logs_a_warning_with_its_reason_and_credential_id(logs):
    lines = {line["request_id"]: line for line in logs.usage + logs.policy if line.get("request_id")}
    for request_id, (why, token) in logs.refused.items():
        line = lines[request_id]
        assert (line["level"], line["refused"], line["token_id"]) == ("warning", why, token), request_id
        assert line["code"] in {"UNAUTHENTICATED", "PERMISSION_DENIED"}
    accepted = lines["accepted"]
    assert (accepted["level"], accepted["code"], "refused" in accepted) == ("info", "OK", False)
    assert accepted["token_id"] and accepted["grpc_method"] == "RecordEvents"


def test_no_log_line_holds_a_secret(logs):
    text = "\n".join(json.dumps(line) for line in logs.usage + logs.policy)
    assert [s for s in logs.secrets if s in text] == []
    assert "forged-secret" not in text and "A" * 43 not in text and "nonsense" not in text


def test_a_rollup_round_with_nothing_to_do_logs_at_debug_and_one_with_work_at_info(logs):
    rounds = [line for line in logs.usage if line["message"] == "rollup"]
    busy = [line for line in rounds if line["buckets"] or line["remaining"]]
    idle = [line for line in rounds if not (line["buckets"] or line["remaining"])]
    assert busy and idle
    assert {line["level"] for line in busy} == {"info"}
    assert {line["level"] for line in idle} == {"debug"}


def test_the_servers_loggers_follow_the_naming_scheme(logs):
    ours = {line["logger"] for line in logs.usage + logs.policy if line["logger"].startswith("tollgate")}
    assert {"tollgate.shared.interceptor", "tollgate.shared.server", "tollgate.usage.schedule"} <= ours
    assert all(re.fullmatch(r"tollgate\.(usage|policy|shared)\.[a-z_]+", name) for name in ours), ours


def test_every_logger_in_the_code_is_named_tollgate_package_module():
    """`tollgate.<package>.<module>`: the directory under tollgate/services/ or tollgate/clients/ (or `shared`), and the
    file's name."""
    named = re.compile(r"getLogger\(([^)]*)\)")
    found = {}
    for path in ROOT.glob("tollgate/**/*.py"):
        relative = path.relative_to(ROOT / "tollgate")
        package = "shared" if relative.parts[0] == "shared" else relative.parts[1]
        for argument in named.findall(path.read_text()):
            if argument.strip() == "":  # the root logger, which tollgate/shared/logs.py configures
                continue
            found[str(relative)] = (argument, f'"tollgate.{package}.{path.stem}"')
    assert found
    assert {path: argument for path, (argument, expected) in found.items() if argument != expected} == {}
