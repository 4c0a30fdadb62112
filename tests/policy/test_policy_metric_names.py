"""Features and quotas name only metrics Usage knows; when Usage cannot say, the write is accepted and says so."""

import logging

import grpc
import pytest

from scripts.pgcluster import free_port
from tests import policy_support as ps
from tests import support
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.usage.v1 import usage_pb2 as u


@pytest.fixture
def admin(policy_admin_stub, admin_token):
    return ps.Client(policy_admin_stub, admin_token)


def feature(metrics: list[str], feature_id: str = "") -> pb.UpsertFeatureRequest:
    return pb.UpsertFeatureRequest(
        feature=pb.Feature(feature_id=feature_id or f"f_{ps.suffix()}", max_mode=pb.MODE_AUTONOMOUS, metrics=metrics)
    )


def plan(metrics: list[str], plan_id: str = "") -> pb.UpsertPlanRequest:
    return pb.UpsertPlanRequest(
        plan=pb.Plan(
            plan_id=plan_id or f"P_{ps.suffix()}",
            quotas=[
                pb.QuotaLimit(metric=metric, period=pb.QUOTA_PERIOD_DAY, limit=5, cap=pb.MODE_OFF) for metric in metrics
            ],
        )
    )


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_a_feature_naming_a_metric_usage_does_not_know_is_refused_naming_it_and_nothing_is_written(admin):
    request = feature(["leads.routed", "no.such.metric"])
    error = refusal(lambda: admin.UpsertFeature(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "feature.metrics[1] 'no.such.metric'" in error.details() and "leads.routed" not in error.details()
    stored = admin.UpsertFeature(feature(["leads.routed"], request.feature.feature_id))
    assert stored.created and list(stored.unchecked_metrics) == [] and stored.metrics_unchecked_reason == ""


def test_a_quota_naming_a_metric_usage_does_not_know_is_refused_naming_it_and_nothing_is_written(admin):
    request = plan(["api.requests", "no.such.metric"])
    error = refusal(lambda: admin.UpsertPlan(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "plan.quotas[1].metric 'no.such.metric'" in error.details()
    stored = admin.UpsertPlan(plan(["api.requests"], request.plan.plan_id))
    assert stored.created and list(stored.unchecked_metrics) == []


def test_a_metric_added_to_usage_a_moment_ago_is_accepted(admin, usage_admin_stub, admin_token):
    name = f"test.metric.{ps.suffix()}"
    assert refusal(lambda: admin.UpsertFeature(feature([name]))).code() == grpc.StatusCode.FAILED_PRECONDITION
    usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(metric=u.Metric(name=name, classification=u.CLASSIFICATION_BILLABLE)),
        metadata=support.bearer(admin_token),
        timeout=10,
    )
    assert admin.UpsertFeature(feature([name])).created
    assert admin.UpsertPlan(plan([name])).created


@pytest.fixture
def policy_without_usage(dbs, admin_token):
    """A Policy server whose Usage address is a port nobody listens on."""
    running = support.build_policy(dbs, free_port(), usage_token="tg_x_y", usage_timeout_seconds=0.3)
    with support.channel(running.port) as channel:
        yield ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token)
    running.stop(grace=1)


def test_with_usage_unreachable_names_are_accepted_unchecked_and_the_answer_and_log_say_so(
    policy_without_usage, caplog
):
    caplog.set_level(logging.WARNING)
    stored_feature = policy_without_usage.UpsertFeature(feature(["no.such.metric", "leads.routed"]))
    stored_plan = policy_without_usage.UpsertPlan(plan(["no.such.quota.metric"]))
    assert stored_feature.created and list(stored_feature.unchecked_metrics) == ["no.such.metric", "leads.routed"]
    assert list(stored_plan.unchecked_metrics) == ["no.such.quota.metric"]
    assert "usage service" in stored_feature.metrics_unchecked_reason and stored_plan.metrics_unchecked_reason
    unchecked = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "without checking them against Usage's catalog" in r.getMessage()
    ]
    assert len(unchecked) == 2
    assert "UpsertFeature" in unchecked[0] and "no.such.metric" in unchecked[0]
    assert "UpsertPlan" in unchecked[1] and "no.such.quota.metric" in unchecked[1]


def test_a_feature_without_metrics_never_asks_usage(policy_without_usage):
    stored = policy_without_usage.UpsertFeature(feature([]))
    assert stored.created and list(stored.unchecked_metrics) == [] and stored.metrics_unchecked_reason == ""
