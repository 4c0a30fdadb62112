"""Quotas with dimension filters through real servers on both backends (docs/entitlements.md, "Dimension
filters"): a filtered quota counts only the usage its filters allow, whether recorded straight into Usage or
reserved and committed through Policy; reservations carry dimension values to the commit's usage event; the
catalog decides which filters and values are accepted."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from scripts.pgcluster import free_port
from tests import http_support, support
from tests import policy_support as ps
from tests.policy import test_active_features as active_features
from tests.policy.test_entitlement_watch import take, watch
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy.domain.entitlements import EVENT_PREFIX
from tollgate.usage.v1 import usage_pb2 as u

HARD, SOFT = pb.LIMIT_KIND_HARD, pb.LIMIT_KIND_SOFT
GPT = {"model": pb.DimensionValues(values=["gpt-4o"])}


@pytest.fixture(scope="module")
def filter_policy(dbs, usage):
    """A Policy reading usage fresh on every call (no quota cache, no reuse of Usage's answers)."""
    running = support.build_policy(
        dbs, usage.port, quota_cache_seconds=0, balance_usage_seconds=0, outbox_interval_seconds=0.05
    )
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def filter_channel(filter_policy):
    with support.channel(filter_policy.port) as channel:
        yield channel


@pytest.fixture
def admin(filter_channel, admin_token):
    return ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(filter_channel), admin_token)


@pytest.fixture
def api(filter_channel, admin_token):
    return ps.Client(policy_pb2_grpc.PolicyServiceStub(filter_channel), admin_token)


def new_meter(usage_admin_stub, admin_token, aggregation=u.AGGREGATION_SUM) -> str:
    """A fresh metric declaring model and region (the catalog is global: each test makes its own)."""
    name = f"ai.tokens.{uuid.uuid4().hex[:10]}"
    metric = u.Metric(
        name=name,
        classification=u.CLASSIFICATION_BILLABLE,
        unit="token",
        dimensions=["model", "region"],
        aggregation=aggregation,
    )
    usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(metric=metric), metadata=support.bearer(admin_token), timeout=30
    )
    return name


@pytest.fixture
def meter(usage_admin_stub, admin_token) -> str:
    return new_meter(usage_admin_stub, admin_token)


def quota(meter, limit, *, kind=HARD, filters=None, scope=0, notify_at=()) -> pb.QuotaLimit:
    return pb.QuotaLimit(
        metric=meter,
        period=pb.QUOTA_PERIOD_MONTH,
        limit=limit,
        cap=pb.MODE_OBSERVE,
        kind=kind,
        filters=filters or {},
        scope=scope,
        notify_at=notify_at,
    )


def record(usage_stub, token, tenant, meter, quantity, dimensions, actor="u1") -> None:
    active_features.record(usage_stub, token, tenant, meter, quantity, actor, dimensions)


def reserve(api, tenant, meter, amount, dimensions, *, user="u1", key=None) -> pb.ReserveResponse:
    return api.Reserve(
        pb.ReserveRequest(
            tenant_id=tenant,
            user_id=user,
            metric=meter,
            amount=amount,
            idempotency_key=key or ps.suffix(),
            ttl=Duration(seconds=60),
            dimensions=dimensions,
        )
    )


def check(api, tenant, meter, dimensions=None, user="u1") -> list[pb.QuotaBalance]:
    request = pb.CheckEntitlementRequest(tenant_id=tenant, user_id=user, metric=meter, dimensions=dimensions or {})
    return list(api.CheckEntitlement(request).quotas)


def numbers(balance: pb.QuotaBalance) -> tuple[int, int, int]:
    return balance.usage, balance.reserved, balance.balance


def by_model(usage_stub, token, tenant, meter) -> dict[str, int]:
    start, end = Timestamp(), Timestamp()
    start.FromSeconds(int(datetime.now(UTC).timestamp()) - 86400)
    end.FromSeconds(int(datetime.now(UTC).timestamp()) + 86400)
    request = u.QueryUsageRequest(tenant_id=tenant, metric=meter, start_time=start, end_time=end, group_by=["model"])
    rows = usage_stub.QueryUsage(request, metadata=support.bearer(token), timeout=10).rows
    return {row.group["model"]: row.value for row in rows}


def test_a_filtered_hard_quota_counts_only_the_usage_it_allows_and_refuses_beyond_it(
    admin, api, usage_stub, admin_token, tenant, meter
):
    # A hard 100 of gpt-4o tokens beside a soft 1,000 of all tokens.
    ps.build_world(
        admin, tenant, metrics=(meter,), quotas=(quota(meter, 100, filters=GPT), quota(meter, 1000, kind=SOFT))
    )
    record(usage_stub, admin_token, tenant, meter, 60, {"model": "gpt-4o", "region": "eu"})
    record(usage_stub, admin_token, tenant, meter, 500, {"model": "claude"})
    record(usage_stub, admin_token, tenant, meter, 7, {})  # no model: the empty value, which the filter lacks
    gpt, every = check(api, tenant, meter)
    assert dict(gpt.filters)["model"].values == ["gpt-4o"] and not every.filters
    assert numbers(gpt) == (60, 0, 40) and numbers(every) == (567, 0, 433)
    assert "{model=gpt-4o}" in gpt.detail and gpt.decides

    refused = reserve(api, tenant, meter, 50, {"model": "gpt-4o"})
    assert not refused.reserved
    assert refused.refusal.startswith(f"quota {meter}{{model=gpt-4o}} 100/month hard: 60 used of 100 allowed")
    held = reserve(api, tenant, meter, 40, {"model": "gpt-4o", "region": "us"})
    assert held.reserved and dict(held.reservation.dimensions) == {"model": "gpt-4o", "region": "us"}
    # Claude's tokens are not the filtered quota's: only the quota of all tokens counts them, and it is soft.
    other = reserve(api, tenant, meter, 300, {"model": "claude"})
    assert other.reserved and [b.metric for b in other.quotas] == [meter]
    assert [numbers(b) for b in check(api, tenant, meter)] == [(60, 40, 0), (567, 340, 93)]
    assert [numbers(b) for b in check(api, tenant, meter, {"model": "claude"})] == [(567, 340, 93)]
    assert len(check(api, tenant, meter, {"model": "gpt-4o"})) == 2

    committed = api.Commit(
        pb.CommitRequest(tenant_id=tenant, reservation_id=held.reservation.reservation_id, amount=40)
    )
    assert committed.reservation.recorded_in_usage
    # The commit's usage event carries the reservation's dimension values, so Usage counts it by model too.
    assert by_model(usage_stub, admin_token, tenant, meter) == {"gpt-4o": 100, "claude": 500, "": 7}
    assert [numbers(b) for b in check(api, tenant, meter)] == [(100, 0, 0), (607, 300, 93)]
    assert not reserve(api, tenant, meter, 1, {"model": "gpt-4o"}).reserved
    assert reserve(api, tenant, meter, 1, {"model": "claude"}).reserved


def test_an_exhausted_filtered_quota_caps_the_mode_alike_in_resolve_mode_and_check_entitlement(
    admin, api, usage_stub, admin_token, tenant, meter
):
    w = ps.build_world(admin, tenant, metrics=(meter,), quotas=(quota(meter, 10, kind=SOFT, filters=GPT),))
    record(usage_stub, admin_token, tenant, meter, 9, {"model": "gpt-4o"})
    record(usage_stub, admin_token, tenant, meter, 50, {"model": "claude"})
    resolve = pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=w.feature)
    assert api.ResolveMode(resolve).resolution.effective_mode == pb.MODE_AUTONOMOUS  # claude's 50 do not count
    record(usage_stub, admin_token, tenant, meter, 1, {"model": "gpt-4o"})
    resolved = api.ResolveMode(resolve).resolution
    answer = api.CheckEntitlement(pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", feature_id=w.feature))
    assert resolved.effective_mode == answer.resolution.effective_mode == pb.MODE_OBSERVE
    [entry] = [e for e in resolved.basis if e.source == pb.CAP_SOURCE_QUOTA]
    assert entry.binding and entry.detail == f"quota {meter}{{model=gpt-4o}} 10/month reached: 10 used of 10 allowed"


def test_a_filtered_quota_per_user_counts_each_users_own_usage_of_the_values(
    admin, api, usage_stub, admin_token, tenant, meter
):
    ps.build_world(admin, tenant, metrics=(meter,), quotas=(quota(meter, 10, filters=GPT, scope=pb.QUOTA_SCOPE_USER),))
    record(usage_stub, admin_token, tenant, meter, 8, {"model": "gpt-4o"}, actor="u1")
    record(usage_stub, admin_token, tenant, meter, 5, {"model": "gpt-4o"}, actor="u2")
    assert not reserve(api, tenant, meter, 3, {"model": "gpt-4o"}, user="u1").reserved
    assert reserve(api, tenant, meter, 2, {"model": "gpt-4o"}, user="u1").reserved
    assert reserve(api, tenant, meter, 5, {"model": "gpt-4o"}, user="u2").reserved
    assert [numbers(b) for b in check(api, tenant, meter, user="u2")] == [(5, 5, 0)]


def test_usage_no_quota_counts_is_refused_as_no_quota_and_stores_nothing(admin, api, tenant, meter):
    ps.build_world(admin, tenant, metrics=(meter,), quotas=(quota(meter, 100, filters=GPT),))
    with pytest.raises(grpc.RpcError) as caught:
        reserve(api, tenant, meter, 1, {"model": "claude"})
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert support.error_reason(caught.value) == "NO_QUOTA"
    assert [numbers(b) for b in check(api, tenant, meter)] == [(0, 0, 100)]
    assert check(api, tenant, meter, {"model": "claude"}) == []


def test_reserve_dimensions_must_be_declared_by_the_metric_and_a_retry_must_repeat_them(admin, api, tenant, meter):
    ps.build_world(admin, tenant, metrics=(meter,), quotas=(quota(meter, 100),))
    with pytest.raises(grpc.RpcError) as caught:
        reserve(api, tenant, meter, 5, {"model": "gpt-4o", "tier": "gold", "Bad": "x"})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert support.field_violations(caught.value) == ["dimensions[Bad]"]  # its shape first, before any catalog
    with pytest.raises(grpc.RpcError) as caught:
        reserve(api, tenant, meter, 5, {"model": "gpt-4o", "tier": "gold"})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert support.field_violations(caught.value) == ["dimensions[tier]"]
    assert [numbers(b) for b in check(api, tenant, meter)] == [(0, 0, 100)]  # nothing held

    first = reserve(api, tenant, meter, 5, {"model": "gpt-4o"}, key="job-1")
    again = reserve(api, tenant, meter, 5, {"model": "gpt-4o"}, key="job-1")
    assert again.reservation.reservation_id == first.reservation.reservation_id
    with pytest.raises(grpc.RpcError) as caught:
        reserve(api, tenant, meter, 5, {"model": "claude"}, key="job-1")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert support.error_reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"


def test_a_plan_filter_on_an_undeclared_dimension_or_a_metric_that_is_not_a_sum_is_invalid(
    admin, usage_admin_stub, admin_token, tenant, meter
):
    undeclared = quota(meter, 5, filters={"tier": pb.DimensionValues(values=["gold"])})
    counted = new_meter(usage_admin_stub, admin_token, aggregation=u.AGGREGATION_COUNT)
    for bad, field in (
        (undeclared, "plan.quotas[0].filters[tier]"),
        (quota(counted, 5, filters=GPT), "plan.quotas[0].filters"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            admin.UpsertPlan(pb.UpsertPlanRequest(plan=pb.Plan(plan_id=f"P{ps.suffix()}", quotas=[bad])))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert support.field_violations(caught.value) == [field]
    stored = admin.UpsertPlan(
        pb.UpsertPlanRequest(plan=pb.Plan(plan_id=f"P{ps.suffix()}", quotas=[quota(meter, 5, filters=GPT)]))
    )
    assert dict(stored.plan.quotas[0].filters)["model"].values == ["gpt-4o"]


def test_quotas_alike_but_for_their_filters_announce_their_thresholds_each(
    admin, api, filter_channel, admin_token, tenant, meter
):
    quotas = (quota(meter, 10, filters=GPT, notify_at=[50]), quota(meter, 10, notify_at=[50]))
    ps.build_world(admin, tenant, metrics=(meter,), quotas=quotas)
    call = watch(filter_channel, admin_token, tenant)
    assert reserve(api, tenant, meter, 5, {"model": "gpt-4o"}).reserved
    first, second = take(call, 2)
    call.cancel()
    assert sorted(
        (dict(n.filters).get("model", pb.DimensionValues()).values == ["gpt-4o"]) for n in (first, second)
    ) == [
        False,
        True,
    ]
    assert {n.percent for n in (first, second)} == {50}


def test_a_commit_left_in_the_outbox_reaches_usage_with_its_dimension_values(
    dbs, admin, api, usage_stub, admin_token, tenant, meter
):
    """Committed through a Policy whose Usage is unreachable, the event waits in the outbox (the database both
    Policies share) and the other Policy's outbox loop delivers it, dimension values and all."""
    ps.build_world(admin, tenant, metrics=(meter,), quotas=(quota(meter, 100, filters=GPT),))
    held = reserve(api, tenant, meter, 30, {"model": "gpt-4o", "region": "eu"}).reservation
    cut_off = support.build_policy(dbs, free_port())
    try:
        with support.channel(cut_off.port) as channel:
            other = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token)
            answer = other.Commit(pb.CommitRequest(tenant_id=tenant, reservation_id=held.reservation_id, amount=20))
    finally:
        cut_off.stop(grace=1)
    assert not answer.reservation.recorded_in_usage
    deadline = time.monotonic() + 30  # a guard against a hang: the loop sends every 0.05 s
    while by_model(usage_stub, admin_token, tenant, meter) != {"gpt-4o": 20} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert by_model(usage_stub, admin_token, tenant, meter) == {"gpt-4o": 20}
    [balance] = check(api, tenant, meter)
    assert numbers(balance) == (20, 0, 80)


def test_a_commit_usage_refuses_for_a_dimension_removed_since_the_reserve_is_kept_and_lands_once_declared_again(
    admin, api, usage_stub, usage_admin_stub, admin_token, tenant, meter
):
    """The usage happened: the outbox keeps counting it and sends it again until Usage holds it."""
    ps.build_world(admin, tenant, metrics=(meter,), quotas=(quota(meter, 100, filters=GPT),))
    held = reserve(api, tenant, meter, 30, {"model": "gpt-4o", "region": "eu"}).reservation

    def declare(dimensions: list[str]) -> None:
        metric = u.Metric(name=meter, classification=u.CLASSIFICATION_BILLABLE, unit="token", dimensions=dimensions)
        usage_admin_stub.UpsertMetric(u.UpsertMetricRequest(metric=metric), metadata=support.bearer(admin_token))

    declare(["model"])
    answer = api.Commit(pb.CommitRequest(tenant_id=tenant, reservation_id=held.reservation_id, amount=20))
    assert not answer.reservation.recorded_in_usage
    time.sleep(0.5)  # several sends by the outbox loop (every 0.05 s), each refused
    assert by_model(usage_stub, admin_token, tenant, meter) == {}
    [balance] = check(api, tenant, meter)
    assert numbers(balance) == (20, 0, 80)  # still counted, as usage Usage does not hold yet
    declare(["model", "region"])
    deadline = time.monotonic() + 30  # a guard against a hang: the backoff is below 2 s after 0.5 s of refusals
    while by_model(usage_stub, admin_token, tenant, meter) != {"gpt-4o": 20} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert by_model(usage_stub, admin_token, tenant, meter) == {"gpt-4o": 20}
    [balance] = check(api, tenant, meter)
    assert numbers(balance) == (20, 0, 80)


def test_a_commit_usage_answers_conflict_for_is_dropped_for_good_and_stops_holding_the_balance(
    admin, api, usage_stub, admin_token, tenant, meter
):
    """Usage holds other content under the commit's event id (recorded straight into Usage): every resend would be
    refused alike, so the outbox drops the event, counted, instead of holding the balance down for ever."""
    from prometheus_client import REGISTRY

    ps.build_world(admin, tenant, metrics=(meter,), quotas=(quota(meter, 100),))
    held = reserve(api, tenant, meter, 30, {"model": "gpt-4o"}).reservation
    now = Timestamp()
    now.GetCurrentTime()
    squatter = u.UsageEvent(
        event_id=EVENT_PREFIX + held.reservation_id,
        metric=meter,
        quantity=5,
        occurred_at=now,
        actor_id="u1",
        source_service="test",
        dimensions={"model": "gpt-4o"},
    )
    [result] = usage_stub.RecordEvents(
        u.RecordEventsRequest(tenant_id=tenant, events=[squatter]), metadata=support.bearer(admin_token)
    ).results
    assert result.verdict == u.VERDICT_ACCEPTED

    def dropped() -> float:
        return REGISTRY.get_sample_value("tollgate_policy_outbox_refused_total", {"outcome": "dropped"}) or 0.0

    before = dropped()
    answer = api.Commit(pb.CommitRequest(tenant_id=tenant, reservation_id=held.reservation_id, amount=20))
    assert not answer.reservation.recorded_in_usage
    assert dropped() == before + 1
    time.sleep(0.3)  # several passes of the outbox loop (every 0.05 s): nothing is left to send
    assert dropped() == before + 1
    assert by_model(usage_stub, admin_token, tenant, meter) == {"gpt-4o": 5}
    [balance] = check(api, tenant, meter)
    assert numbers(balance) == (5, 0, 95)  # Usage's 5 alone: neither held as reserved nor waiting in the outbox


def test_filters_and_dimension_values_travel_as_proto3_json_over_http(admin, filter_policy, admin_token, tenant, meter):
    ps.build_world(admin, tenant, metrics=(meter,), quotas=(quota(meter, 100, filters=GPT),))
    path = "/tollgate.policy.v1.PolicyService/"
    asked = {"tenantId": tenant, "userId": "u1", "metric": meter, "amount": "7", "idempotencyKey": ps.suffix()}
    reply = http_support.post(
        filter_policy.http_port, path + "Reserve", {**asked, "dimensions": {"model": "gpt-4o"}}, token=admin_token
    )
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["reservation"]["dimensions"] == {"model": "gpt-4o"}
    checked = {"tenantId": tenant, "userId": "u1", "metric": meter}
    reply = http_support.post(filter_policy.http_port, path + "CheckEntitlement", checked, token=admin_token)
    assert reply.status == 200, reply.body
    [balance] = json.loads(reply.body)["quotas"]
    assert balance["filters"] == {"model": {"values": ["gpt-4o"]}} and balance["reserved"] == "7"
