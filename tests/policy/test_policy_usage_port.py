"""Policy's one port to Usage: how many GetUsage calls an answer costs, and the deadline each one gets."""

import time
from concurrent import futures

import grpc
import pytest
from prometheus_client import REGISTRY

from tests import support
from tests.policy.test_active_features import METRIC_A, METRIC_B, record, setup_tenant
from tests.policy_support import Client
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

GET_USAGE = {"grpc_type": "unary", "grpc_service": "tollgate.usage.v1.UsageService", "grpc_method": "GetUsage"}


def get_usage_calls() -> float:
    """GetUsage calls Usage servers of this process have received (the interceptor's RED counter)."""
    return REGISTRY.get_sample_value("grpc_server_started_total", GET_USAGE) or 0.0


@pytest.fixture
def uncached(dbs, usage):
    """A Policy that reuses no usage at all, so that every answer shows what it asks Usage."""
    running = support.build_policy(
        dbs, usage.port, quota_cache_seconds=0, ranking_cache_seconds=0, usage_timeout_seconds=5
    )
    yield running
    running.stop(grace=1)


def quotas() -> list[pb.QuotaLimit]:
    """Three quotas over two periods: two monthly (one per metric) and one daily."""
    return [
        pb.QuotaLimit(metric=METRIC_A, period=pb.QUOTA_PERIOD_MONTH, limit=100, cap=pb.MODE_OBSERVE),
        pb.QuotaLimit(metric=METRIC_B, period=pb.QUOTA_PERIOD_MONTH, limit=100, cap=pb.MODE_OBSERVE),
        pb.QuotaLimit(metric=METRIC_A, period=pb.QUOTA_PERIOD_DAY, limit=50, cap=pb.MODE_OFF),
    ]


def with_quotas(admin: Client, tenant: str) -> tuple[str, str]:
    feature_a, feature_b, _role = setup_tenant(admin, tenant)
    plan = admin.GetSubscription(pb.GetSubscriptionRequest(tenant_id=tenant)).subscription.plan_id
    admin.UpsertPlan(pb.UpsertPlanRequest(plan=pb.Plan(plan_id=plan, default_cap=pb.MODE_AUTONOMOUS, quotas=quotas())))
    return feature_a, feature_b


def test_a_resolve_asks_usage_once_per_quota_period_however_many_quotas_and_features(
    uncached, usage_stub, admin_token, tenant
):
    with support.channel(uncached.port) as channel:
        admin = Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token)
        feature_a, feature_b = with_quotas(admin, tenant)
        record(usage_stub, admin_token, tenant, METRIC_A, 60)
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        before = get_usage_calls()
        answer = stub.ResolveModes(
            pb.ResolveModesRequest(tenant_id=tenant, user_id="u1", feature_ids=[feature_a, feature_b]),
            metadata=support.bearer(admin_token),
            timeout=10,
        )
        calls = get_usage_calls() - before
    assert calls == 2  # the month's two metrics in one GetUsage, the day's in another
    quota_details = [
        [entry.detail for entry in r.basis if entry.source == pb.CAP_SOURCE_QUOTA] for r in answer.resolutions
    ]
    assert quota_details == [
        [
            f"quota {METRIC_A} 100/month not reached: 60 used of 100 allowed",
            f"quota {METRIC_A} 50/day reached: 60 used of 50 allowed",
        ],
        [f"quota {METRIC_B} 100/month not reached: 0 used of 100 allowed"],
    ]
    assert [r.effective_mode for r in answer.resolutions] == [pb.MODE_OFF, pb.MODE_SUGGEST]


def test_a_ranking_asks_usage_once_per_quota_period_then_once_for_the_tenant_and_the_user_together(
    uncached, admin_token, tenant
):
    with support.channel(uncached.port) as channel:
        with_quotas(Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token), tenant)
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        before = get_usage_calls()
        answer = stub.ListActiveFeatures(
            pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"),
            metadata=support.bearer(admin_token),
            timeout=10,
        )
        calls = get_usage_calls() - before
    assert answer.usage_available
    assert calls == 2 + 1


class SlowRecordingUsageFake(usage_pb2_grpc.UsageServiceServicer):
    """Injected fault, named as such: a Usage stand-in whose GetUsage answers after `delay` seconds, noting the
    time each call had left and whose totals it asked for (actor '' = the tenant's; include_tenant_totals)."""

    def __init__(self, delay: float):
        self.delay, self.calls = delay, []

    def GetUsage(self, request, context):
        self.calls.append((request.actor_id, request.include_tenant_totals, context.time_remaining()))
        time.sleep(self.delay)
        return u.GetUsageResponse()


def test_a_later_read_within_one_call_gets_only_what_is_left_of_the_calls_deadline(dbs, admin_token, tenant):
    slow = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fake = SlowRecordingUsageFake(delay=1.5)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(fake, slow)
    port = slow.add_insecure_port("127.0.0.1:0")
    slow.start()
    # Each read may take up to 0.7 s of a 1.2 s call: the quota reads use 0.7, leaving the ranking at most 0.5.
    policy = support.build_policy(
        dbs,
        port,
        usage_token="tg_x_y",
        usage_timeout_seconds=0.7,
        usage_cooldown_seconds=0,
        quota_cache_seconds=0,
        ranking_cache_seconds=0,
    )
    try:
        with support.channel(policy.port) as channel:
            with_quotas(Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token), tenant)
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            try:
                stub.ListActiveFeatures(
                    pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"),
                    metadata=support.bearer(admin_token),
                    timeout=1.2,
                )
            except grpc.RpcError:
                pass  # whether the fallback answer makes it back in time is not what this test is about
    finally:
        policy.stop(grace=1)
        slow.stop(0)
    quota_reads, ranking_reads = fake.calls[:2], fake.calls[2:]  # the day's and the month's, then the ranking's
    assert [(actor, both) for actor, both, _left in quota_reads] == [("", False), ("", False)]
    assert all(left <= 0.75 for _a, _b, left in quota_reads)
    assert [(actor, both) for actor, both, _left in ranking_reads] == [("u1", True)]  # the tenant's rows come along
    assert all(left <= 0.55 for _a, _b, left in ranking_reads)  # 0.7 if computed once per call
