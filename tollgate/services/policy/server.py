"""Wiring of the Policy service: settings in, a running server out (used by __main__ and tests)."""

from __future__ import annotations

from functools import partial

from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy import grpc_api, tables
from tollgate.services.policy.cache import SnapshotCache, VersionPoller
from tollgate.services.policy.config import Settings
from tollgate.services.policy.service import snapshots
from tollgate.services.policy.service.notifications import Notices, Retention
from tollgate.services.policy.service.outbox import Dispatcher
from tollgate.services.policy.usage_client import UsageClient
from tollgate.services.policy.usage_port import UsagePort
from tollgate.shared import auth, migrate
from tollgate.shared.db import INDEXED_PLANS, create_engine_for, session_factory
from tollgate.shared.server import RunningServer, ServerSpec, build_server


def build(settings: Settings, *, tracer_provider=None) -> RunningServer:
    """Connect, wire and start the Policy server on settings.address (spans, its own and those of its calls
    to Usage, to `tracer_provider`; None: the process's)."""
    engine = create_engine_for(
        settings.database_url,
        schema=tables.SCHEMA,
        pool_size=settings.db_pool_size,
        application_name="tollgate-policy",
        settings=INDEXED_PLANS,
        pre_ping=False,
        # Reserve's and Commit's statements are prepared by driver.in_one_query, unless behind PgBouncer
        driver_prepares=settings.db_pooling == "TRANSACTION",
    )
    sessions = session_factory(engine)
    # The balance reads of CheckEntitlement and Reserve: one statement each, on connections that stay in
    # autocommit (as Usage's reads).
    reads = create_engine_for(
        settings.database_url,
        schema=tables.SCHEMA,
        pool_size=settings.db_pool_size,
        application_name="tollgate-policy-reads",
        settings=INDEXED_PLANS,
        pre_ping=False,
        autocommit=True,
    )
    cache = SnapshotCache(partial(snapshots.load, sessions=sessions))
    poller = VersionPoller(
        cache,
        partial(snapshots.changed_since, connections=reads),
        snapshots.start_version(sessions=sessions),
        settings.cache_poll_seconds,
    )
    client = UsageClient(
        settings.usage_addr,
        settings.usage_token,
        max_timeout=settings.usage_timeout_seconds,
        cooldown=settings.usage_cooldown_seconds,
        tracer_provider=tracer_provider,
        tls=settings.usage_tls,
    )
    usage = UsagePort(
        client,
        quota_ttl=settings.quota_cache_seconds,
        ranking_ttl=settings.ranking_cache_seconds,
        balance_ttl=settings.balance_usage_seconds,
    )
    dispatcher = Dispatcher(engine, usage, interval=settings.outbox_interval_seconds)
    notices = Notices(max_watches=settings.watch_limit)
    retention = Retention(sessions, retention_days=settings.notification_retention_days)
    spec = ServerSpec(
        name="policy",
        registrations=[
            (
                policy_pb2_grpc.add_PolicyServiceServicer_to_server,
                grpc_api.PolicyApi(
                    cache=cache,
                    usage=usage,
                    sessions=sessions,
                    transactions=engine,
                    connections=reads,
                    dispatcher=dispatcher,
                    notices=notices,
                ),
            ),
            (
                policy_pb2_grpc.add_PolicyAdminServiceServicer_to_server,
                grpc_api.PolicyAdminApi(sessions=sessions, cache=cache, usage=usage),
            ),
        ],
        service_names=[grpc_api.POLICY, grpc_api.ADMIN],
        method_scopes=grpc_api.METHOD_SCOPES,
        authenticator=auth.table_authenticator(reads, tables.credentials, cache_seconds=settings.auth_cache_seconds),
        ready=migrate.readiness_check(reads, service="policy", schema=tables.SCHEMA),
        background=[poller.run, dispatcher.run, notices.run, retention.run],
    )
    running = build_server(
        spec,
        address=settings.address,
        max_workers=settings.workers,
        metrics_port=settings.metrics_port,
        health_interval=settings.health_interval_seconds,
        tracer_provider=tracer_provider,
        http_port=settings.http_port,
        tls=settings.tls,
        health_port=settings.health_port,
    )
    running.on_stop += [client.close, engine.dispose, reads.dispose]
    return running
