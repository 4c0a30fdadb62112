"""Wiring of the Policy service: settings in, a running server out (used by __main__ and tests)."""

from __future__ import annotations

from shared import auth, migrate
from shared.db import create_engine_for, session_factory
from shared.server import RunningServer, ServerSpec, build_server
from tollgate.policy.v1 import policy_pb2_grpc

from services.policy import grpc_api, tables
from services.policy.config import Settings


def build(settings: Settings) -> RunningServer:
    """Connect, wire and start the Policy server on settings.address."""
    engine = create_engine_for(settings.database_url, schema=tables.SCHEMA, pool_size=settings.db_pool_size,
                               application_name="tollgate-policy")
    sessions = session_factory(engine)
    spec = ServerSpec(
        name="policy",
        registrations=[
            (policy_pb2_grpc.add_PolicyServiceServicer_to_server, grpc_api.PolicyApi(sessions=sessions, settings=settings)),
            (policy_pb2_grpc.add_PolicyAdminServiceServicer_to_server,
             grpc_api.PolicyAdminApi(sessions=sessions, settings=settings)),
        ],
        service_names=[grpc_api.POLICY, grpc_api.ADMIN],
        method_scopes=grpc_api.METHOD_SCOPES,
        authenticator=auth.table_authenticator(engine, tables.credentials, cache_seconds=settings.auth_cache_seconds),
        ready=migrate.readiness_check(engine, service="policy", schema=tables.SCHEMA),
    )
    running = build_server(spec, address=settings.address, max_workers=settings.workers,
                           metrics_port=settings.metrics_port, health_interval=settings.health_interval_seconds)
    running.on_stop.append(engine.dispose)
    return running
