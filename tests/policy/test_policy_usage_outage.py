"""Policy tells operators once when Usage becomes unreachable and once when it is back, never once per call."""

import logging
import time

import pytest

from scripts.pgcluster import free_port
from tests import policy_support as ps
from tests import support
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.usage import server as usage_server
from tollgate.services.usage.config import Settings as UsageSettings

DOWN, UP = "became unreachable", "is reachable again"


@pytest.fixture
def pair(dbs):
    """Usage on a fixed free port (to stop and start it again) and a Policy that asks it on every resolve."""
    usage_settings = support.test_settings(
        UsageSettings(), database_url=dbs.usage_url, port=free_port(), rollup_interval_seconds=0
    )
    policy = support.build_policy(
        dbs, usage_settings.port, usage_timeout_seconds=0.3, quota_cache_seconds=0, usage_cooldown_seconds=0
    )
    usages = [usage_server.build(usage_settings)]
    yield usages, usage_settings, policy
    policy.stop(grace=1)
    usages[-1].stop(grace=1)


def outage_lines(caplog, port: int) -> list[tuple[int, str]]:
    """The outage lines about the Usage on `port`: a server an earlier test left stopping may log its own."""
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    return [(level, text) for level, text in lines if (DOWN in text or UP in text) and f"127.0.0.1:{port}" in text]


def test_usage_going_down_and_coming_back_is_logged_once_each(pair, admin_token, tenant, caplog):
    usages, usage_settings, policy = pair
    caplog.set_level(logging.INFO)
    with support.channel(policy.port) as channel:
        admin = ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token)
        resolver = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token)
        # The quota names no feature: it caps the world's feature, which its metric measures.
        world = ps.build_world(
            admin,
            tenant,
            metrics=("leads.routed",),
            quotas=(pb.QuotaLimit(metric="leads.routed", period=pb.QUOTA_PERIOD_DAY, limit=10, cap=pb.MODE_OFF),),
        )

        def quota_detail() -> str:
            answer = resolver.ResolveMode(
                pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=world.feature)
            )
            return next(e.detail for e in answer.resolution.basis if e.source == pb.CAP_SOURCE_QUOTA)

        assert "not reached" in quota_detail()
        healthy = outage_lines(caplog, usage_settings.port)
        usages[-1].stop(grace=0)
        while_down = [quota_detail() for _ in range(5)]
        down = outage_lines(caplog, usage_settings.port)
        usages.append(usage_server.build(usage_settings))
        deadline = time.monotonic() + 30  # the channel reconnects after its backoff; no timing is asserted
        while "usage unavailable" in quota_detail() and time.monotonic() < deadline:
            time.sleep(0.1)
        back = [quota_detail() for _ in range(3)]
    assert healthy == []
    assert all("usage unavailable, fails open" in detail for detail in while_down)
    assert [level for level, _ in down] == [logging.WARNING]
    assert f"127.0.0.1:{usage_settings.port}" in down[0][1] and "GetUsage" in down[0][1]
    assert all("not reached" in detail for detail in back)
    assert [level for level, _ in outage_lines(caplog, usage_settings.port)] == [logging.WARNING, logging.INFO]
