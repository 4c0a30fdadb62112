"""The contract from another language: the Node.js client records, reads back and resolves a mode."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import support
from tollgate.policy.v1 import policy_pb2 as p

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    """clients/node with its locked packages installed (npm ci on a fresh machine)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the Node.js client test")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True, timeout=300
        )
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
