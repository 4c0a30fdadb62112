"""Wiring of the Policy service: settings in, a running server out (used by __main__ and tests)."""

from __future__ import annotations

import sqlalchemy.exc

from shared import auth, migrate
from shared.db import create_engine_for, session_factory
from shared.server import RunningServer, ServerSpec, build_server
from tollgate.policy.v1 import policy_pb2_grpc

from services.policy import grpc_api, tables
from services.policy.cache import SnapshotCache, VersionPoller
from services.policy.config import Settings
from services.policy.repository import chain, snapshot
from services.policy.service.active import RankingUsage
from services.policy.service.metric_names import UsageMetrics
from services.policy.service.quotas import QuotaUsage
from services.policy.usage_client import UsageClient


def build(settings: Settings) -> RunningServer:
    """Connect, wire and start the Policy server on settings.address."""
    engine = create_engine_for(settings.database_url, schema=tables.SCHEMA, pool_size=settings.db_pool_size,
                               application_name="tollgate-policy")
    sessions = session_factory(engine)
    cache, poller = _snapshot_cache(sessions, settings)
    usage = UsageClient(settings.usage_addr, settings.usage_token, max_timeout=settings.usage_timeout_seconds,
                        cooldown=settings.usage_cooldown_seconds)
    quotas = QuotaUsage(usage, ttl=settings.quota_cache_seconds)
    ranking_usage = RankingUsage(usage, ttl=settings.ranking_cache_seconds)
    spec = ServerSpec(
        name="policy",
        registrations=[
            (policy_pb2_grpc.add_PolicyServiceServicer_to_server, grpc_api.PolicyApi(
                sessions=sessions, settings=settings, cache=cache, usage=ranking_usage, quotas=quotas)),
            (policy_pb2_grpc.add_PolicyAdminServiceServicer_to_server,
             grpc_api.PolicyAdminApi(sessions=sessions, settings=settings, cache=cache,
                                     usage_metrics=UsageMetrics(usage))),
        ],
        service_names=[grpc_api.POLICY, grpc_api.ADMIN],
        method_scopes=grpc_api.METHOD_SCOPES,
        authenticator=auth.table_authenticator(engine, tables.credentials, cache_seconds=settings.auth_cache_seconds),
        ready=migrate.readiness_check(engine, service="policy", schema=tables.SCHEMA),
        background=[poller.run],
    )
    running = build_server(spec, address=settings.address, max_workers=settings.workers,
                           metrics_port=settings.metrics_port, health_interval=settings.health_interval_seconds)
    running.on_stop += [usage.close, engine.dispose]
    return running


def _snapshot_cache(sessions, settings: Settings) -> tuple[SnapshotCache, VersionPoller]:
    """The resolve path's snapshot cache and the poller that tells it about other replicas' writes."""

    def load(tenant_id: str):
        with sessions.begin() as session:
            return snapshot.load(session, tenant_id)

    def changed_since(version: int):
        with sessions.begin() as session:
            return chain.changed_since(session, version)

    def latest() -> int:
        with sessions.begin() as session:
            return chain.latest_version(session)

    cache = SnapshotCache(load)
    # Read before serving: no snapshot can be loaded before the poller's starting point.
    return cache, VersionPoller(cache, changed_since, _start_version(latest), settings.cache_poll_seconds)


def _start_version(latest) -> int:
    try:
        return latest()
    except sqlalchemy.exc.SQLAlchemyError:  # not migrated yet: health says NOT_SERVING; poll from the start
        return 0
