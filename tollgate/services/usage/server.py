"""Wiring of the Usage service: settings in, a running server out (used by __main__ and tests)."""

from __future__ import annotations

from tollgate.services.usage import cloudevents, grpc_api, tables
from tollgate.services.usage.config import Settings
from tollgate.services.usage.repository.postgres import POSTGRES
from tollgate.services.usage.repository.sqlite import SQLITE
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service import purge, rollups
from tollgate.shared import auth, migrate
from tollgate.shared.db import GENERIC_PLANS, INDEXED_PLANS, create_engine_for, is_sqlite, session_factory
from tollgate.shared.server import MAX_MESSAGE_BYTES, RunningServer, ServerSpec, build_server
from tollgate.usage.v1 import usage_pb2_grpc

RETENTION_EVERY_SECONDS = 3600.0  # retention works in days: an hourly pass is plenty


def storage_for(engine) -> Storage:
    """The backend of the database the engine connects to: the one place Usage tells them apart."""
    return SQLITE if is_sqlite(engine) else POSTGRES


def build(settings: Settings, *, tracer_provider=None) -> RunningServer:
    """Connect, wire and start the Usage server on settings.address (spans to `tracer_provider`, None: the
    process's)."""
    engine = create_engine_for(
        settings.database_url,
        schema=tables.SCHEMA,
        pool_size=settings.db_pool_size,
        application_name="tollgate-usage",
        settings=GENERIC_PLANS,
        pre_ping=False,
    )
    sessions, storage = session_factory(engine), storage_for(engine)
    # GetUsage, ListAggregates, ListEvents, token lookups and readiness: one statement each, on connections that
    # stay in autocommit (SQLite: readers that never wait for the write lock a rollup or an ingest holds).
    reads = create_engine_for(
        settings.database_url,
        schema=tables.SCHEMA,
        pool_size=settings.db_pool_size,
        application_name="tollgate-usage-reads",
        settings=INDEXED_PLANS,
        pre_ping=False,
        autocommit=True,
    )
    authenticator = auth.table_authenticator(reads, tables.credentials, cache_seconds=settings.auth_cache_seconds)
    spec = ServerSpec(
        name="usage",
        registrations=[
            (
                usage_pb2_grpc.add_UsageServiceServicer_to_server,
                grpc_api.UsageApi(sessions=sessions, connections=reads, storage=storage, settings=settings),
            ),
            (
                usage_pb2_grpc.add_UsageAdminServiceServicer_to_server,
                grpc_api.UsageAdminApi(sessions=sessions, storage=storage),
            ),
        ],
        service_names=[grpc_api.USAGE, grpc_api.ADMIN],
        method_scopes=grpc_api.METHOD_SCOPES,
        authenticator=authenticator,
        ready=migrate.readiness_check(reads, service="usage", schema=tables.SCHEMA),
        # CloudEvents ingest: translated, then judged by the RecordEvents RPC path like any call (cloudevents.py).
        http_routes={
            cloudevents.PATH: cloudevents.route(
                authenticator=authenticator,
                record_path=f"/{grpc_api.USAGE}/RecordEvents",
                scope=grpc_api.METHOD_SCOPES[f"/{grpc_api.USAGE}/RecordEvents"],
                max_body_bytes=MAX_MESSAGE_BYTES,
            )
        },
        background=[
            job
            for job in [
                rollups.scheduled_job(sessions, settings.rollup_interval_seconds, storage=storage),
                purge.retention_job(sessions, settings.retention_days, RETENTION_EVERY_SECONDS, storage=storage),
            ]
            if job
        ],
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
    running.on_stop += [engine.dispose, reads.dispose]
    return running
