"""/metrics of both services, each a real process: RED and business series, exact after known traffic,
each service's own series only, bounded labels, and every series the docs and alerts name."""

import re
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scripts.pgcluster import free_port
from tests import fault_support, support
from tests.conftest import ALL_SCOPES, status_of
from tests.policy_support import Client, suffix
from tests.shared.test_health_database import wait_for_health
from tests.usage_support import event, totals
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.shared.server import MAX_MESSAGE_BYTES
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
USAGE, USAGE_ADMIN = "tollgate.usage.v1.UsageService", "tollgate.usage.v1.UsageAdminService"
POLICY, POLICY_ADMIN = "tollgate.policy.v1.PolicyService", "tollgate.policy.v1.PolicyAdminService"
# Every label a series may carry: enums and outcomes, plus the client library's own process/python series.
BOUNDED_LABELS = {
    "grpc_type",
    "grpc_service",
    "grpc_method",
    "grpc_code",
    "le",
    "verdict",
    "classification",
    "reason",
    "mode",
    "outcome",
    "action",
    "purpose",
    "implementation",
    "major",
    "minor",
    "patchlevel",
    "version",
    "generation",
    "period",
}
# The admin calls policy_world makes, each one audited write.
WRITES = {
    "UpsertFeature": 2,
    "ImportRoles": 1,
    "UpsertPlan": 1,
    "SetTenantPolicy": 1,
    "SetSubscription": 1,
    "BindRole": 1,
}


@dataclass(frozen=True)
class Scrapes:
    """Usage's /metrics before and after the all-tenant rollup, Policy's at the end, and what no label may hold."""

    backlog: list
    usage: list
    policy: list
    secrets: frozenset


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def own_dbs(request, tmp_path_factory):
    """Fresh databases for this module alone, so the rollup gauges read exactly its buckets."""
    with support.fresh_databases(request.param, tmp_path_factory.mktemp("metrics")) as own:
        yield own


def scrape(port: int) -> list:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [sample for family in text_string_to_metric_families(body) for sample in family.samples]


def counts(samples, name: str, *labels: str) -> dict:
    """{label value (or tuple of values): value} of one series' non-zero samples."""
    found = {}
    for sample in samples:
        if sample.name == name and sample.value:
            key = tuple(sample.labels[label] for label in labels)
            found[key[0] if len(key) == 1 else key] = sample.value
    return found


def value(samples, name: str) -> float:
    return next(sample.value for sample in samples if sample.name == name)


def red(samples) -> dict:
    """Calls by (service, method, code)."""
    return counts(samples, "grpc_server_handled_total", "grpc_service", "grpc_method", "grpc_code")


def timed_by_method(samples) -> dict:
    return Counter(counts(samples, "grpc_server_handling_seconds_count", "grpc_service", "grpc_method"))


def started(samples) -> dict:
    """Calls started, by (type, service, method)."""
    return counts(samples, "grpc_server_started_total", "grpc_type", "grpc_service", "grpc_method")


def usage_traffic(stub, admin: Client, tenant_token: str, tenant: str) -> None:
    """Two accepted (BILLABLE, NON_BILLABLE), two rejected, one duplicate; one read; a call refused for its token,
    one for its size."""
    first = [
        event("e-1"),
        event("e-2", metric="sla.timers.started"),
        event("e-3", quantity=0),
        event("e-4", metric="no.such.metric"),
    ]
    for events in (first, first[:1]):
        stub.RecordEvents(
            u.RecordEventsRequest(tenant_id=tenant, events=events), metadata=support.bearer(tenant_token), timeout=10
        )
    assert (
        status_of(lambda: stub.RecordEvents(u.RecordEventsRequest(tenant_id=tenant), timeout=10))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    too_large = u.RecordEventsRequest(tenant_id=tenant, events=[event("e-5", source_service="x" * MAX_MESSAGE_BYTES)])
    assert (
        status_of(lambda: stub.RecordEvents(too_large, metadata=support.bearer(tenant_token), timeout=30))
        == grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert totals(stub, tenant_token, tenant) == {"api.requests": (1, 1), "sla.timers.started": (1, 1)}
    assert status_of(lambda: admin.RunRollup(u.RunRollupRequest(max_buckets=-1))) == grpc.StatusCode.INVALID_ARGUMENT


def policy_world(admin: Client, tenant: str, user: str, tag: str) -> tuple[str, str]:
    """Feature a capped at SUGGEST and b at AUTONOMOUS by the user's role; both measured by a metric."""
    a, b, role, plan = f"a_{tag}", f"b_{tag}", f"R_{tag}", f"P_{tag}"
    for feature, metric in ((a, "leads.routed"), (b, "voice.calls.completed")):
        admin.UpsertFeature(
            pb.UpsertFeatureRequest(
                feature=pb.Feature(feature_id=feature, max_mode=pb.MODE_AUTONOMOUS, metrics=[metric])
            )
        )
    admin.ImportRoles(
        pb.ImportRolesRequest(
            roles=[
                pb.Role(
                    role_id=role,
                    feature_caps=[
                        pb.FeatureCap(feature_id=a, cap=pb.MODE_SUGGEST),
                        pb.FeatureCap(feature_id=b, cap=pb.MODE_AUTONOMOUS),
                    ],
                )
            ]
        )
    )
    admin.UpsertPlan(pb.UpsertPlanRequest(plan=pb.Plan(plan_id=plan, default_cap=pb.MODE_AUTONOMOUS)))
    admin.SetTenantPolicy(
        pb.SetTenantPolicyRequest(
            tenant_policy=pb.TenantPolicy(tenant_id=tenant, max_mode=pb.MODE_AUTONOMOUS, default_role_id=role)
        )
    )
    admin.SetSubscription(
        pb.SetSubscriptionRequest(
            subscription=pb.Subscription(tenant_id=tenant, plan_id=plan, status=pb.SUBSCRIPTION_STATUS_ACTIVE)
        )
    )
    admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id=user, role_id=role))
    return a, b


def resolve_traffic(stub, token: str, tenant: str, user: str, a: str, b: str) -> None:
    """SUGGEST once, AUTONOMOUS twice, OBSERVE once; then a NOT_FOUND and an UNAUTHENTICATED call."""
    client = Client(stub, token)
    for feature, requested in ((a, 0), (b, 0), (b, 0), (b, pb.MODE_OBSERVE)):
        client.ResolveMode(
            pb.ResolveModeRequest(tenant_id=tenant, user_id=user, feature_id=feature, requested_mode=requested)
        )
    unknown = pb.ResolveModeRequest(tenant_id=tenant, user_id=user, feature_id=f"nope_{suffix()}")
    assert status_of(lambda: client.ResolveMode(unknown)) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: stub.ResolveMode(unknown, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def scraped(own_dbs) -> Scrapes:
    """Both services as processes, each with its own metrics port; known traffic; then each /metrics."""
    tenant, user, tag = support.new_tenant(), f"user-{suffix()}", suffix()
    tokens = (
        support.make_token(own_dbs, tenant=None, scopes=ALL_SCOPES),
        support.make_token(own_dbs, tenant=tenant, scopes=["usage:write", "usage:read", "policy:read"]),
        support.make_token(own_dbs, tenant=None, scopes=["usage:read"], service="usage"),
    )
    ports = [free_port() for _ in range(4)]
    usage = fault_support.start_usage(own_dbs.usage_url, ports[0], wait=False, metrics_port=ports[1])
    # A generous Usage deadline: only a stopped Usage, never a busy test machine, may cause the fallback;
    # no reuse of ranking usage, so the ranking after Usage stops asks it (and falls back).
    policy = fault_support.start_policy(
        own_dbs.policy_url,
        ports[2],
        f"127.0.0.1:{ports[0]}",
        tokens[2],
        wait=False,
        metrics_port=ports[3],
        usage_timeout_seconds=5,
        ranking_cache_seconds=0,
    )
    try:
        for port in (ports[0], ports[2]):
            assert wait_for_health(port, fault_support.SERVING, timeout=30) == fault_support.SERVING
        with support.channel(ports[0]) as usage_channel, support.channel(ports[2]) as policy_channel:
            usage_admin = Client(usage_pb2_grpc.UsageAdminServiceStub(usage_channel), tokens[0])
            usage_traffic(usage_pb2_grpc.UsageServiceStub(usage_channel), usage_admin, tokens[1], tenant)
            policy_stub = policy_pb2_grpc.PolicyServiceStub(policy_channel)
            a, b = policy_world(
                Client(policy_pb2_grpc.PolicyAdminServiceStub(policy_channel), tokens[0]), tenant, user, tag
            )
            resolve_traffic(policy_stub, tokens[1], tenant, user, a, b)
            ranked = pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id=user)
            assert Client(policy_stub, tokens[1]).ListActiveFeatures(ranked).usage_available
            assert usage_admin.GetRollupStatus(u.GetRollupStatusRequest()).dirty_buckets == 6
            backlog = scrape(ports[1])
            usage_admin.RunRollup(u.RunRollupRequest())
            usage_scrape = scrape(ports[1])
            fault_support.end(usage)  # Usage gone: the next ranking falls back to caps alone
            assert not Client(policy_stub, tokens[1]).ListActiveFeatures(ranked).usage_available
            return Scrapes(
                backlog, usage_scrape, scrape(ports[3]), frozenset({tenant, user, tag, a, b, *tokens, "e-1", "e-2"})
            )
    finally:
        for process in (usage, policy):
            fault_support.end(process)


def test_usage_counts_events_by_verdict_and_classification_and_rejections_by_reason(scraped):
    assert counts(scraped.usage, "tollgate_usage_events_total", "verdict", "classification") == {
        ("ACCEPTED", "BILLABLE"): 1,
        ("ACCEPTED", "NON_BILLABLE"): 1,
        ("REJECTED", "BILLABLE"): 1,
        ("REJECTED", "UNKNOWN"): 1,
        ("DUPLICATE", "BILLABLE"): 1,
    }
    assert counts(scraped.usage, "tollgate_usage_rejections_total", "reason") == {
        "NON_POSITIVE_QUANTITY": 1,
        "UNKNOWN_METRIC": 1,
    }


def test_the_rollup_gauges_show_the_backlog_until_a_rollup_of_every_tenant_clears_it(scraped):
    # 2 accepted events of 2 metrics, one instant: 2 metrics x (day, week, month) = 6 dirty buckets.
    assert value(scraped.backlog, "tollgate_rollup_dirty_buckets") == 6
    assert 0 <= value(scraped.backlog, "tollgate_rollup_oldest_dirty_seconds") < 60
    assert value(scraped.usage, "tollgate_rollup_dirty_buckets") == 0
    assert value(scraped.usage, "tollgate_rollup_oldest_dirty_seconds") == 0


def test_every_rpc_is_counted_by_service_method_and_code_on_its_own_server(scraped):
    # GetUsage: one call of ours, one of Policy's ranking (tenant and user in one); ListMetrics: Policy
    # checking the metrics of each of its two UpsertFeature calls against Usage's catalog.
    assert red(scraped.usage) == {
        (USAGE, "ListMetrics", "OK"): 2,
        (USAGE, "RecordEvents", "OK"): 2,
        (USAGE, "RecordEvents", "UNAUTHENTICATED"): 1,
        (USAGE, "RecordEvents", "RESOURCE_EXHAUSTED"): 1,
        (USAGE, "GetUsage", "OK"): 2,
        (USAGE_ADMIN, "RunRollup", "INVALID_ARGUMENT"): 1,
        (USAGE_ADMIN, "GetRollupStatus", "OK"): 1,
        (USAGE_ADMIN, "RunRollup", "OK"): 1,
    }
    assert red(scraped.policy) == {
        **{(POLICY_ADMIN, action, "OK"): n for action, n in WRITES.items()},
        (POLICY, "ResolveMode", "OK"): 4,
        (POLICY, "ResolveMode", "NOT_FOUND"): 1,
        (POLICY, "ResolveMode", "UNAUTHENTICATED"): 1,
        (POLICY, "ListActiveFeatures", "OK"): 2,
    }


def test_every_rpc_is_counted_started_by_its_grpc_type_once_per_call_handled(scraped):
    # Every call of this traffic is unary and finished before the scrape: started equals handled.
    for samples in (scraped.usage, scraped.policy):
        calls = Counter()
        for (service, method, _code), n in red(samples).items():
            calls["unary", service, method] += n
        assert started(samples) == calls


def test_every_rpc_is_timed_once_by_service_and_method_whatever_its_code(scraped):
    for samples in (scraped.usage, scraped.policy):
        calls = Counter()
        for (service, method, _code), n in red(samples).items():
            calls[service, method] += n
        assert timed_by_method(samples) == calls


def test_policy_counts_modes_fallbacks_and_admin_writes(scraped):
    assert counts(scraped.policy, "tollgate_policy_resolutions_total", "mode") == {
        "SUGGEST": 1,
        "AUTONOMOUS": 2,
        "OBSERVE": 1,
    }
    assert counts(scraped.policy, "tollgate_policy_usage_fallbacks_total", "purpose") == {"ranking": 1}
    assert counts(scraped.policy, "tollgate_policy_admin_writes_total", "action", "outcome") == {
        (action, "changed"): n for action, n in WRITES.items()
    }
    assert set(counts(scraped.policy, "tollgate_policy_snapshot_requests_total", "outcome")) <= {"hit", "load"}
    assert value(scraped.policy, "tollgate_policy_version_poll_failures_total") == 0


def test_each_scrape_holds_only_its_own_service_series(scraped):
    assert not {n for n in exposed(scraped.usage) if n.startswith("tollgate_policy_")}
    assert not {n for n in exposed(scraped.policy) if n.startswith(("tollgate_usage_", "tollgate_rollup_"))}


def test_no_label_is_a_tenant_user_feature_event_or_token(scraped):
    for sample in [*scraped.backlog, *scraped.usage, *scraped.policy]:
        assert set(sample.labels) <= BOUNDED_LABELS, sample
        assert not [s for s in scraped.secrets for v in sample.labels.values() if s in v], sample


def test_the_docs_and_alerts_name_exactly_the_series_the_services_expose(scraped):
    documented, names = documented_series(), exposed(scraped.usage) | exposed(scraped.policy)
    assert documented <= names, "named in the docs or alerts but exposed by no service"
    assert {n for n in names if n.startswith("tollgate_")} <= documented
    assert not [n for n in names if n.endswith("_created")], "a *_created series per child doubles the series count"


def exposed(samples) -> set[str]:
    """Sample names, and the family name of each histogram (docs may name either)."""
    names = {sample.name for sample in samples}
    return names | {name.removesuffix("_bucket") for name in names if name.endswith("_bucket")}


def documented_series() -> set[str]:
    """Every tollgate_* and grpc_server_* series the alert rules and the operations guide's Monitoring section name."""
    rules = yaml.safe_load((ROOT / "docs/monitoring/alerts.yml").read_text())
    text = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    guide = (ROOT / "docs/operations.md").read_text().split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\b(?:tollgate|grpc_server)_[a-z_]+", text + guide))
