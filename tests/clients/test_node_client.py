"""The contract from another language: the Node.js client, as a repo checkout and as the installed package."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from google.protobuf import json_format

from tests import support
from tollgate.policy.v1 import policy_pb2 as p
from tollgate.usage.v1 import usage_pb2 as u

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"
NPM_QUIET = ["--no-audit", "--no-fund", "--loglevel=error"]


@pytest.fixture(scope="session")
def node_client() -> Path:
    """clients/node with its locked packages installed (npm ci on a fresh machine, from the cache when it can)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the Node.js client test")
    installed = (NODE_DIR / "node_modules" / name for name in ("@grpc/grpc-js", "typescript"))
    if not all(path.is_dir() for path in installed):
        subprocess.run(["npm", "ci", "--prefer-offline", *NPM_QUIET], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR


def run_smoke(node_client: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **{f"TOLLGATE_{key.upper()}": value for key, value in settings.items()}}
    return subprocess.run(["node", "smoke.mjs"], cwd=node_client, env=env, capture_output=True, text=True, timeout=60)


def tenant_token(dbs, tenant: str) -> str:
    return support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read", "policy:read"])


def test_the_node_client_records_a_batch_once_and_reads_the_totals_back(node_client, dbs, usage, policy, tenant):
    result = run_smoke(
        node_client,
        tenant=tenant,
        token=tenant_token(dbs, tenant),
        usage_addr=f"127.0.0.1:{usage.port}",
        policy_addr=f"127.0.0.1:{policy.port}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok  ") == 3
    assert "GetUsage reads the batch back (quantity +325, events +25)" in result.stdout


def test_the_smoke_test_passes_again_on_a_tenant_that_already_has_its_usage(node_client, dbs, usage, policy, tenant):
    settings = {
        "tenant": tenant,
        "token": tenant_token(dbs, tenant),
        "usage_addr": f"127.0.0.1:{usage.port}",
        "policy_addr": f"127.0.0.1:{policy.port}",
    }
    runs = [run_smoke(node_client, **settings) for _ in range(2)]
    for result in runs:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "GetUsage reads the batch back (quantity +325, events +25)" in result.stdout


def set_up_tenant(stub, admin_token: str, tenant: str) -> tuple[str, str]:
    """A tenant whose user may run a feature at SUGGEST: role SUGGEST < plan PROACTIVE < tenant AMBITIOUS."""
    feature, role, plan, user = (f"{tenant}-{name}" for name in ("feature", "role", "plan", "user"))
    auth = support.bearer(admin_token)
    stub.UpsertFeature(
        p.UpsertFeatureRequest(
            feature=p.Feature(
                feature_id=feature,
                display_name="Node smoke feature",
                description="Resolved from Node.js.",
                max_mode=p.MODE_AUTONOMOUS,
                metrics=["leads.processed"],
            )
        ),
        metadata=auth,
    )
    stub.ImportRoles(
        p.ImportRolesRequest(
            roles=[
                p.Role(
                    role_id=role,
                    display_name="Node smoke role",
                    default_cap=p.MODE_OFF,
                    feature_caps=[p.FeatureCap(feature_id=feature, cap=p.MODE_SUGGEST)],
                )
            ]
        ),
        metadata=auth,
    )
    stub.UpsertPlan(
        p.UpsertPlanRequest(
            plan=p.Plan(
                plan_id=plan,
                display_name="Node smoke plan",
                default_cap=p.MODE_OFF,
                inactive_cap=p.MODE_OFF,
                feature_caps=[p.FeatureCap(feature_id=feature, cap=p.MODE_PROACTIVE)],
            )
        ),
        metadata=auth,
    )
    stub.SetTenantPolicy(
        p.SetTenantPolicyRequest(
            tenant_policy=p.TenantPolicy(tenant_id=tenant, max_mode=p.MODE_AMBITIOUS, default_role_id=role)
        ),
        metadata=auth,
    )
    stub.SetSubscription(
        p.SetSubscriptionRequest(
            subscription=p.Subscription(tenant_id=tenant, plan_id=plan, status=p.SUBSCRIPTION_STATUS_ACTIVE)
        ),
        metadata=auth,
    )
    stub.BindRole(p.BindRoleRequest(tenant_id=tenant, user_id=user, role_id=role), metadata=auth)
    return feature, user


def test_the_node_client_resolves_a_mode_with_a_tenant_token(
    node_client, dbs, usage, policy, policy_admin_stub, admin_token, tenant
):
    feature, user = set_up_tenant(policy_admin_stub, admin_token, tenant)
    result = run_smoke(
        node_client,
        tenant=tenant,
        token=tenant_token(dbs, tenant),
        feature=feature,
        user=user,
        expect_mode="MODE_SUGGEST",
        usage_addr=f"127.0.0.1:{usage.port}",
        policy_addr=f"127.0.0.1:{policy.port}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ResolveMode answers MODE_SUGGEST" in result.stdout


def test_the_public_api_type_checks_and_its_types_refuse_wrong_calls(node_client):
    """test/api.ts uses every export through the package's name; its @ts-expect-error lines must each fail."""
    result = subprocess.run(
        ["npm", "run", "--silent", "typecheck"], cwd=node_client, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def packed(node_client, tmp_path_factory) -> Path:
    """The tarball `npm pack` makes of clients/node."""
    destination = tmp_path_factory.mktemp("npm-pack")
    result = subprocess.run(
        ["npm", "pack", "--json", "--pack-destination", str(destination), *NPM_QUIET],
        cwd=node_client,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return destination / json.loads(result.stdout)[0]["filename"]


def test_the_package_ships_the_module_its_types_and_the_contracts_it_loads_and_nothing_else(packed):
    with tarfile.open(packed) as tarball:
        names = sorted(name.removeprefix("package/") for name in tarball.getnames())
    assert names == [
        "README.md",
        "package.json",
        "proto/tollgate/audit/v1/audit.proto",
        "proto/tollgate/policy/v1/policy.proto",
        "proto/tollgate/usage/v1/usage.proto",
        "tollgate.d.ts",
        "tollgate.mjs",
    ]
    # The copy of proto/ is made for the tarball only: git and the checkout keep one.
    assert not (NODE_DIR / "proto").exists()


CONSUMER = """
import { randomUUID } from 'node:crypto';
import { createUsageClient, status } from '@tollgate/client';

const [address, token, tenant] = process.argv.slice(2);
const client = createUsageClient({ address, token, deadlineMs: 10000 });
const now = new Date();
const range = { start_time: new Date(now.getTime() - 60000), end_time: new Date(now.getTime() + 60000) };
const recorded = await client.recordEvents(tenant, [
  { event_id: randomUUID(), metric: 'leads.processed', quantity: 7, occurred_at: now, source_service: 'npm-consumer',
    actor_id: 'consumer', metadata: { installed: true, tags: ['npm', 1], nested: { none: null } } },
]);
const read = await client.getUsage({ tenant_id: tenant, metrics: ['leads.processed'], ...range });
const codeName = (code) => Object.keys(status).find((name) => status[name] === code);
const refusal = (call) => call.then(() => 'OK', (error) => codeName(error.code));
const stranger = createUsageClient({ address, token: 'tg_nobody_secret' });
const refused = {
  empty_range: await refusal(client.getUsage({ tenant_id: tenant, start_time: now, end_time: now })),
  other_tenant: await refusal(client.getUsage({ tenant_id: `${tenant}-other`, ...range })),
  unknown_token: await refusal(stranger.getUsage({ tenant_id: tenant, ...range })),
  past_deadline: await refusal(client.getUsage({ tenant_id: tenant, ...range }, { deadline: new Date(0) })),
};
client.close();
stranger.close();
console.log(JSON.stringify({ verdicts: recorded.results.map((r) => r.verdict), totals: read.totals, refused }));
"""

CONSUMER_TYPES = """
import { createUsageClient, type GetUsageResponse } from '@tollgate/client';
const client = createUsageClient({ address: 'localhost:50051', token: 't' });
const request = { tenant_id: 'a', start_time: new Date(0), end_time: new Date() };
export const read: Promise<GetUsageResponse> = client.getUsage(request);
"""


def test_the_installed_package_records_and_reads_usage_by_its_name(
    node_client, packed, tmp_path, dbs, usage, usage_stub, tenant
):
    (tmp_path / "package.json").write_text(json.dumps({"name": "consumer", "private": True, "type": "module"}))
    subprocess.run(
        ["npm", "install", "--prefer-offline", *NPM_QUIET, str(packed)], cwd=tmp_path, check=True, timeout=300
    )
    (tmp_path / "consumer.mjs").write_text(CONSUMER)
    token = tenant_token(dbs, tenant)
    result = subprocess.run(
        ["node", "consumer.mjs", f"127.0.0.1:{usage.port}", token, tenant],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["verdicts"] == ["VERDICT_ACCEPTED"]
    assert [(t["metric"], t["quantity"], t["event_count"]) for t in answer["totals"]] == [("leads.processed", "7", "1")]
    assert answer["refused"] == {
        "empty_range": "INVALID_ARGUMENT",
        "other_tenant": "PERMISSION_DENIED",
        "unknown_token": "UNAUTHENTICATED",
        "past_deadline": "DEADLINE_EXCEEDED",
    }
    stored = usage_stub.ListEvents(
        u.ListEventsRequest(tenant_id=tenant, source_service="npm-consumer"), metadata=support.bearer(token)
    )
    assert [json_format.MessageToDict(e.event.metadata) for e in stored.events] == [
        {"installed": True, "tags": ["npm", 1], "nested": {"none": None}}
    ]
    # A TypeScript consumer gets the types from the installed package, with no build of its own.
    (tmp_path / "consumer.ts").write_text(CONSUMER_TYPES)
    tsc = node_client / "node_modules" / ".bin" / "tsc"
    flags = ["--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--types", "node"]
    typed = subprocess.run([str(tsc), *flags, "consumer.ts"], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert typed.returncode == 0, typed.stdout + typed.stderr


DOCS = [NODE_DIR / "README.md", NODE_DIR.parents[1] / "docs" / "clients.md"]


def js_examples_as_typescript(document: Path) -> str:
    """Each ```js block of a document as the body of its own function, importing every export."""
    blocks = re.findall(r"```js\n(.*?)```", document.read_text(), flags=re.DOTALL)
    bodies = ["\n".join(line for line in block.splitlines() if not line.startswith("import ")) for block in blocks]
    return "\n".join(
        [
            "import * as tollgate from '@tollgate/client';",
            "const { createPolicyClient, createUsageClient, credentials, status } = tollgate;",
            "declare const usage: tollgate.UsageClient, policy: tollgate.PolicyClient;",
            "declare const request: tollgate.GetUsageRequest & tollgate.ResolveModeRequest;",
            "declare const token: string, leadId: string, userId: string;",
            *(f"export async function example{n}() {{\n{body}\n}}" for n, body in enumerate(bodies)),
        ]
    )


@pytest.mark.parametrize("document", DOCS, ids=lambda path: path.name)
def test_every_javascript_example_of_the_docs_calls_the_declared_api(node_client, tmp_path, document):
    """The JavaScript of the Node README and of docs/clients.md, compiled against tollgate.d.ts: a renamed call or
    field fails here."""
    examples = js_examples_as_typescript(document)
    assert examples.count("export async function example") >= (7 if document.name == "README.md" else 1)
    (tmp_path / "examples.mts").write_text(examples)
    config = {
        "compilerOptions": {
            "noEmit": True,
            "target": "es2022",
            "module": "nodenext",
            "moduleResolution": "nodenext",
            # The examples are JavaScript: a caught error is untyped and an env var may be unset.
            "strict": False,
            "noImplicitAny": False,
            "types": ["node"],
            "typeRoots": [str(node_client / "node_modules" / "@types")],
            "paths": {"@tollgate/client": [str(node_client / "tollgate.d.ts")]},
        },
        "files": ["examples.mts"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    tsc = node_client / "node_modules" / ".bin" / "tsc"
    command = [str(tsc), "-p", "tsconfig.json"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


DIMENSIONS_SENDER = """
import { createUsageClient } from '%(module)s';

const [address, token, tenant, metric] = process.argv.slice(2);
const client = createUsageClient({ address, token, deadlineMs: 10000 });
const at = new Date(Date.now() - 60000);
const base = { metric, occurred_at: at, source_service: 'node-dimensions' };
const recorded = await client.recordEvents(tenant, [
  { ...base, event_id: 'n1', quantity: 100, dimensions: { model: 'gpt-4o', token_type: 'prompt' } },
  { ...base, event_id: 'n2', quantity: 30, dimensions: { model: 'gpt-4o', token_type: 'completion', none: undefined } },
  { ...base, event_id: 'n3', quantity: 7, dimensions: { model: 'claude' } },
  { ...base, event_id: 'n4', quantity: 1 },
  { ...base, event_id: 'n5', quantity: 1, dimensions: { region: 'eu' } },
]);
const refused = await client
  .recordEvents(tenant, [{ ...base, event_id: 'n6', quantity: 1, dimensions: { model: 4 } }])
  .then(() => 'sent', (error) => `${error.name}: ${error.message}`);
client.close();
console.log(JSON.stringify({ results: recorded.results.map((r) => [r.verdict, r.reason]), refused }));
"""


def test_the_node_client_sends_dimensions_and_they_group_the_usage(
    node_client, tmp_path, dbs, usage, usage_stub, usage_admin_stub, admin_token, tenant
):
    metric = f"ai.tokens.{tenant}"
    usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(
            metric=u.Metric(name=metric, classification=u.CLASSIFICATION_BILLABLE, dimensions=["model", "token_type"])
        ),
        metadata=support.bearer(admin_token),
        timeout=10,
    )
    script = tmp_path / "dimensions.mjs"
    script.write_text(DIMENSIONS_SENDER % {"module": (node_client / "tollgate.mjs").as_uri()})
    token = tenant_token(dbs, tenant)
    result = subprocess.run(
        ["node", str(script), f"127.0.0.1:{usage.port}", token, tenant, metric],
        cwd=node_client,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    accepted = ["VERDICT_ACCEPTED", "REJECT_REASON_UNSPECIFIED"]
    assert answer["results"] == [accepted] * 4 + [["VERDICT_REJECTED", "REJECT_REASON_UNDECLARED_DIMENSION"]]
    assert answer["refused"] == "TypeError: dimension model must be a string, not number"
    request = u.QueryUsageRequest(tenant_id=tenant, metric=metric, group_by=["model", "token_type"])
    request.start_time.GetCurrentTime()
    request.start_time.seconds -= 3600
    request.end_time.GetCurrentTime()
    request.end_time.seconds += 3600
    rows = usage_stub.QueryUsage(request, metadata=support.bearer(token), timeout=10).rows
    assert {(r.group["model"], r.group["token_type"]): r.value for r in rows} == {
        ("", ""): 1,
        ("claude", ""): 7,
        ("gpt-4o", "completion"): 30,
        ("gpt-4o", "prompt"): 100,
    }
    listed = usage_stub.ListEvents(u.ListEventsRequest(tenant_id=tenant, metric=metric), metadata=support.bearer(token))
    assert {e.event.event_id: dict(e.event.dimensions) for e in listed.events}["n2"] == {
        "model": "gpt-4o",
        "token_type": "completion",
    }
