"""The contract is lint-clean, formatted, and compatible with its committed baseline."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"


def buf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BUF), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_buf_lint_finds_nothing_under_the_standard_rules():
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_leaves_every_proto_as_it_is():
    result = buf("format", "--diff", "--exit-code")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contract_breaks_nothing_in_the_committed_baseline():
    result = buf("breaking", "--against", "contracts/baseline.binpb")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rpc_of_the_spec_is_in_the_contract():
    from tollgate.policy.v1 import policy_pb2
    from tollgate.usage.v1 import usage_pb2

    expected = {
        (usage_pb2, "UsageService"): {
            "RecordEvents",
            "StreamEvents",
            "GetUsage",
            "ListAggregates",
            "ListEvents",
            "ListMetrics",
            "QueryUsage",
            "ListDimensionValues",
        },
        (usage_pb2, "UsageAdminService"): {
            "RunRollup",
            "GetRollupStatus",
            "UpsertMetric",
            "PurgeEvents",
            "ListAuditRecords",
            "VerifyAudit",
        },
        (policy_pb2, "PolicyService"): {
            "ResolveMode",
            "ResolveModes",
            "ListActiveFeatures",
            "CheckEntitlement",
            "Reserve",
            "Commit",
            "Release",
            "WatchEntitlements",
        },
        (policy_pb2, "PolicyAdminService"): {
            "ImportRoles",
            "ListRoles",
            "UpsertFeature",
            "ListFeatures",
            "UpsertPlan",
            "ListPlans",
            "GetSubscription",
            "SetSubscription",
            "SetTenantPolicy",
            "SetOverride",
            "DeleteOverride",
            "ListOverrides",
            "BindRole",
            "UnbindRole",
            "ListBindings",
            "InspectPolicy",
            "ListAuditRecords",
            "VerifyAudit",
            "CreateGrant",
            "VoidGrant",
            "ListGrants",
        },
    }
    for (module, service), methods in expected.items():
        assert set(module.DESCRIPTOR.services_by_name[service].methods_by_name) == methods


def test_both_services_list_their_audit_chain_as_the_one_audit_record_of_tollgate_audit_v1():
    from tollgate.audit.v1 import audit_pb2
    from tollgate.policy.v1 import policy_pb2
    from tollgate.usage.v1 import usage_pb2

    for module in (usage_pb2, policy_pb2):
        records = module.ListAuditRecordsResponse.DESCRIPTOR.fields_by_name["records"]
        assert records.message_type is audit_pb2.AuditRecord.DESCRIPTOR
        assert "AuditRecord" not in module.DESCRIPTOR.message_types_by_name
