"""Policy asks Usage: ranking by caps and usage, the fallback when Usage is down or slow, quota caps."""

import time
from concurrent import futures
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from scripts.pgcluster import free_port
from tests import support
from tests.conftest import status_of
from tests.policy_support import Client, suffix
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.usage import server as usage_server
from tollgate.services.usage.config import Settings as UsageSettings
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

METRIC_A, METRIC_B = "leads.routed", "voice.calls.completed"


def setup_tenant(
    admin: Client, tenant: str, *, quota: pb.QuotaLimit | None = None, inactive_cap: int = pb.MODE_UNSPECIFIED
) -> tuple[str, str, str]:
    """Two features (A measured by METRIC_A, B by METRIC_B) at SUGGEST for user u1; returns (a, b, role)."""
    tag = suffix()
    feature_a, feature_b, role = f"a_{tag}", f"b_{tag}", f"R_{tag}"
    for feature, metric in ((feature_a, METRIC_A), (feature_b, METRIC_B)):
        admin.UpsertFeature(
            pb.UpsertFeatureRequest(
                feature=pb.Feature(
                    feature_id=feature, display_name=feature.upper(), max_mode=pb.MODE_AUTONOMOUS, metrics=[metric]
                )
            )
        )
    admin.ImportRoles(
        pb.ImportRolesRequest(
            roles=[
                pb.Role(
                    role_id=role,
                    feature_caps=[
                        pb.FeatureCap(feature_id=feature_a, cap=pb.MODE_SUGGEST),
                        pb.FeatureCap(feature_id=feature_b, cap=pb.MODE_SUGGEST),
                    ],
                )
            ]
        )
    )
    plan = f"P_{tag}"
    admin.UpsertPlan(
        pb.UpsertPlanRequest(
            plan=pb.Plan(
                plan_id=plan, default_cap=pb.MODE_AUTONOMOUS, inactive_cap=inactive_cap, quotas=[quota] if quota else []
            )
        )
    )
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
    admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u1", role_id=role))
    return feature_a, feature_b, role


def record(usage_stub, token: str, tenant: str, metric: str, quantity: int, actor: str = "u1", dimensions=None) -> None:
    now = Timestamp()
    now.FromDatetime(datetime.now(UTC))
    event = u.UsageEvent(
        event_id=f"ev-{suffix()}",
        metric=metric,
        quantity=quantity,
        occurred_at=now,
        actor_id=actor,
        source_service="test",
        dimensions=dimensions or {},
    )
    result = usage_stub.RecordEvents(
        u.RecordEventsRequest(tenant_id=tenant, events=[event]), metadata=support.bearer(token), timeout=10
    ).results[0]
    assert result.verdict == u.VERDICT_ACCEPTED, result


def ours(response, *features: str) -> list[str]:
    return [item.feature_id for item in response.features if item.feature_id in features]


@pytest.fixture
def admin(policy_admin_stub, admin_token) -> Client:
    return Client(policy_admin_stub, admin_token)


def test_recording_usage_for_a_features_metric_raises_it_in_the_ranking(
    admin, policy_stub, usage_stub, admin_token, tenant
):
    feature_a, feature_b, _role = setup_tenant(admin, tenant)
    ask = pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1")
    before = policy_stub.ListActiveFeatures(ask, metadata=support.bearer(admin_token), timeout=10)
    record(usage_stub, admin_token, tenant, METRIC_B, 40)
    after = policy_stub.ListActiveFeatures(ask, metadata=support.bearer(admin_token), timeout=10)
    assert before.usage_available and after.usage_available
    assert ours(before, feature_a, feature_b) == [feature_a, feature_b]  # a tie breaks by feature id
    assert ours(after, feature_a, feature_b) == [feature_b, feature_a]
    parts = next(item.parts for item in after.features if item.feature_id == feature_b)
    assert (parts.user_quantity, parts.tenant_quantity) == (40, 40)
    assert parts.usage_score > 0 and parts.mode_score == 2.0


def test_a_ranking_reuses_its_usage_then_serves_it_stale_while_refreshing(dbs, usage, admin_token, tenant):
    policy = support.build_policy(dbs, usage.port, ranking_cache_seconds=1.0)
    try:
        with support.channel(policy.port) as channel, support.channel(usage.port) as usage_channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            usage_stub = usage_pb2_grpc.UsageServiceStub(usage_channel)
            feature_a, feature_b, _ = setup_tenant(
                Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token), tenant
            )

            def order() -> list[str]:
                answer = stub.ListActiveFeatures(
                    pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"),
                    metadata=support.bearer(admin_token),
                    timeout=10,
                )
                return ours(answer, feature_a, feature_b)

            first = order()
            record(usage_stub, admin_token, tenant, METRIC_B, 40)
            reused = order()
            time.sleep(1.1)
            stale = order()  # past the cache time: answered at once, from the old totals, while refreshing
            deadline, refreshed = time.monotonic() + 5, stale
            while refreshed == stale and time.monotonic() < deadline:
                time.sleep(0.05)
                refreshed = order()
    finally:
        policy.stop(grace=1)
    assert first == reused == stale == [feature_a, feature_b]
    assert refreshed == [feature_b, feature_a]


def test_each_ranked_item_shows_the_parts_of_its_score(admin, policy_stub, usage_stub, admin_token, tenant):
    feature_a, _feature_b, _role = setup_tenant(admin, tenant)
    record(usage_stub, admin_token, tenant, METRIC_A, 9, actor="someone-else")
    answer = policy_stub.ListActiveFeatures(
        pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"), metadata=support.bearer(admin_token), timeout=10
    )
    item = next(item for item in answer.features if item.feature_id == feature_a)
    assert (item.parts.user_quantity, item.parts.tenant_quantity) == (0, 9)
    assert item.score == pytest.approx(item.parts.mode_score + item.parts.usage_score)
    assert item.effective_mode == pb.MODE_SUGGEST


def test_features_at_off_are_not_listed(admin, policy_stub, admin_token, tenant):
    feature_a, feature_b, role = setup_tenant(admin, tenant)
    admin.SetOverride(pb.SetOverrideRequest(tenant_id=tenant, role_id=role, feature_id=feature_a, cap=pb.MODE_OFF))
    answer = policy_stub.ListActiveFeatures(
        pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"), metadata=support.bearer(admin_token), timeout=10
    )
    assert ours(answer, feature_a, feature_b) == [feature_b]


def test_policys_service_token_is_refused_by_usage_for_writes_and_admin_calls(
    usage_stub, usage_admin_stub, dbs, tenant
):
    token = support.make_token(dbs, tenant=None, scopes=["usage:read"], service="usage")
    metadata = support.bearer(token)
    now = Timestamp()
    now.FromDatetime(datetime.now(UTC))
    write = u.RecordEventsRequest(
        tenant_id=tenant,
        events=[u.UsageEvent(event_id="x", metric=METRIC_A, quantity=1, occurred_at=now, source_service="policy")],
    )
    assert status_of(lambda: usage_stub.RecordEvents(write, metadata=metadata)) == grpc.StatusCode.PERMISSION_DENIED
    assert (
        status_of(lambda: usage_admin_stub.RunRollup(u.RunRollupRequest(), metadata=metadata))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        status_of(
            lambda: usage_admin_stub.UpsertMetric(
                u.UpsertMetricRequest(metric=u.Metric(name="x.y", classification=u.CLASSIFICATION_INFO)),
                metadata=metadata,
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )


@pytest.fixture
def own_pair(dbs):
    """A Usage server on a fixed free port (so it can be stopped and restarted) and a Policy reading it."""
    port = free_port()
    usage_settings = support.test_settings(
        UsageSettings(), database_url=dbs.usage_url, port=port, rollup_interval_seconds=0
    )
    policy = support.build_policy(
        dbs, port, usage_timeout_seconds=0.3, quota_cache_seconds=0, usage_cooldown_seconds=0.5
    )
    usage = usage_server.build(usage_settings)
    yield usage, policy, port, usage_settings
    policy.stop(grace=1)
    usage.stop(grace=1)


def test_with_usage_stopped_the_ranking_falls_back_to_caps_within_the_deadline(own_pair, admin_token, tenant):
    usage, policy, _port, _settings = own_pair
    with support.channel(policy.port) as channel:
        admin = Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token)
        feature_a, feature_b, _role = setup_tenant(admin, tenant)
        usage.stop(grace=0)
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        started = time.monotonic()
        answer = stub.ListActiveFeatures(
            pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"),
            metadata=support.bearer(admin_token),
            timeout=2,
        )
        elapsed = time.monotonic() - started
    assert answer.usage_available is False and answer.usage_unavailable_reason
    assert ours(answer, feature_a, feature_b) == [feature_a, feature_b]
    assert all(item.parts.usage_score == 0 for item in answer.features)
    assert elapsed < 2


class SlowUsageFake(usage_pb2_grpc.UsageServiceServicer):
    """Injected fault, named as such: a Usage stand-in whose GetUsage answers only after `delay` seconds."""

    def __init__(self, delay: float):
        self.delay = delay

    def GetUsage(self, request, context):
        time.sleep(self.delay)
        return u.GetUsageResponse()


def test_a_usage_slower_than_the_deadline_gives_the_fallback_in_time(dbs, admin_token, tenant):
    slow = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    usage_pb2_grpc.add_UsageServiceServicer_to_server(SlowUsageFake(delay=3), slow)
    port = slow.add_insecure_port("127.0.0.1:0")
    slow.start()
    policy = support.build_policy(dbs, port, usage_token="tg_x_y", usage_timeout_seconds=0.3)
    try:
        with support.channel(policy.port) as channel:
            setup_tenant(Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token), tenant)
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            started = time.monotonic()
            answer = stub.ListActiveFeatures(
                pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"),
                metadata=support.bearer(admin_token),
                timeout=2,
            )
            elapsed = time.monotonic() - started
            # The circuit is open now: the next call does not wait for Usage at all.
            started = time.monotonic()
            again = stub.ListActiveFeatures(
                pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"),
                metadata=support.bearer(admin_token),
                timeout=2,
            )
            second = time.monotonic() - started
    finally:
        policy.stop(grace=1)
        slow.stop(0)
    assert answer.usage_available is False and again.usage_available is False
    assert elapsed < 1.5
    assert second < 0.25


def quota(limit: int, *, fail_closed: bool = False, cap: int = pb.MODE_OBSERVE) -> pb.QuotaLimit:
    return pb.QuotaLimit(metric=METRIC_A, period=pb.QUOTA_PERIOD_MONTH, limit=limit, cap=cap, fail_closed=fail_closed)


def resolve(stub, token: str, tenant: str, feature: str) -> pb.Resolution:
    return stub.ResolveMode(
        pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=feature),
        metadata=support.bearer(token),
        timeout=5,
    ).resolution


def quota_entry(resolution: pb.Resolution) -> pb.BasisEntry:
    return next(entry for entry in resolution.basis if entry.source == pb.CAP_SOURCE_QUOTA)


def test_a_quota_caps_once_usage_reaches_its_limit_and_not_before(own_pair, admin_token, tenant):
    _usage, policy, port, _settings = own_pair
    with support.channel(policy.port) as channel, support.channel(port) as usage_channel:
        feature_a, _b, _role = setup_tenant(
            Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token), tenant, quota=quota(100)
        )
        stub, usage_stub = policy_pb2_grpc.PolicyServiceStub(channel), usage_pb2_grpc.UsageServiceStub(usage_channel)
        record(usage_stub, admin_token, tenant, METRIC_A, 99)
        below = resolve(stub, admin_token, tenant, feature_a)
        record(usage_stub, admin_token, tenant, METRIC_A, 1)
        at = resolve(stub, admin_token, tenant, feature_a)
    assert below.effective_mode == pb.MODE_SUGGEST
    assert (quota_entry(below).cap, quota_entry(below).binding) == (pb.MODE_AUTONOMOUS, False)
    assert quota_entry(below).detail == f"quota {METRIC_A} 100/month not reached: 99 used of 100 allowed"
    assert at.effective_mode == pb.MODE_OBSERVE
    assert (quota_entry(at).cap, quota_entry(at).binding) == (pb.MODE_OBSERVE, True)
    assert quota_entry(at).detail == f"quota {METRIC_A} 100/month reached: 100 used of 100 allowed"
    assert [entry.source for entry in at.basis][-1] == pb.CAP_SOURCE_QUOTA


@pytest.mark.parametrize("status", [pb.SUBSCRIPTION_STATUS_PAST_DUE, pb.SUBSCRIPTION_STATUS_CANCELED])
def test_a_reached_quota_keeps_capping_when_the_subscription_stops_paying(
    admin, policy_stub, usage_stub, admin_token, tenant, status
):
    # The plan's inactive cap (PROACTIVE) is above the quota's cap (OFF): only the quota keeps the feature off.
    feature_a, _b, _role = setup_tenant(admin, tenant, quota=quota(10, cap=pb.MODE_OFF), inactive_cap=pb.MODE_PROACTIVE)
    record(usage_stub, admin_token, tenant, METRIC_A, 10)
    plan = admin.GetSubscription(pb.GetSubscriptionRequest(tenant_id=tenant)).subscription.plan_id
    admin.SetSubscription(
        pb.SetSubscriptionRequest(subscription=pb.Subscription(tenant_id=tenant, plan_id=plan, status=status))
    )
    resolution = resolve(policy_stub, admin_token, tenant, feature_a)
    plan_entry = next(entry for entry in resolution.basis if entry.source == pb.CAP_SOURCE_PLAN)
    assert plan_entry.cap == pb.MODE_PROACTIVE and "inactive cap" in plan_entry.detail
    assert resolution.effective_mode == pb.MODE_OFF
    assert quota_entry(resolution).binding and quota_entry(resolution).cap == pb.MODE_OFF
    listed = policy_stub.ListActiveFeatures(
        pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"), metadata=support.bearer(admin_token), timeout=10
    )
    assert feature_a not in [item.feature_id for item in listed.features]


@pytest.mark.parametrize("usage_up", [True, False])
def test_a_limit_of_zero_always_caps_even_with_usage_down_and_failing_open(own_pair, admin_token, tenant, usage_up):
    usage, policy, _port, _settings = own_pair
    with support.channel(policy.port) as channel:
        feature_a, _b, _role = setup_tenant(
            Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token),
            tenant,
            quota=quota(0, fail_closed=False),
        )
        if not usage_up:
            usage.stop(grace=0)
        resolution = resolve(policy_pb2_grpc.PolicyServiceStub(channel), admin_token, tenant, feature_a)
    assert resolution.effective_mode == pb.MODE_OBSERVE
    assert quota_entry(resolution).binding
    assert quota_entry(resolution).detail == f"quota {METRIC_A} 0/month reached: a limit of 0 allows nothing"


@pytest.mark.parametrize("fail_closed,expected", [(True, pb.MODE_OBSERVE), (False, pb.MODE_SUGGEST)])
def test_with_usage_down_a_quota_fails_as_its_plan_says(own_pair, admin_token, tenant, fail_closed, expected):
    usage, policy, _port, _settings = own_pair
    with support.channel(policy.port) as channel:
        feature_a, _b, _role = setup_tenant(
            Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token),
            tenant,
            quota=quota(100, fail_closed=fail_closed),
        )
        usage.stop(grace=0)
        resolution = resolve(policy_pb2_grpc.PolicyServiceStub(channel), admin_token, tenant, feature_a)
    entry = next(entry for entry in resolution.basis if entry.source == pb.CAP_SOURCE_QUOTA)
    assert resolution.effective_mode == expected
    assert ("fails closed" if fail_closed else "fails open") in entry.detail
