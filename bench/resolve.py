"""ResolveMode and ResolveModes latency beside an empty unary RPC on the same server, in one run.

The reference is grpc.health.v1.Health/Check on the same Policy server: the cheapest unary call
it offers (no database work). It skips the interceptor's token check, logging and metrics, which
ResolveMode pays, so the ratio is a conservative one. A fresh PostgreSQL database holds one tenant
with 20 features, 4 roles, a plan, a subscription and 1,000 bindings; it is dropped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import timing, tokens
from bench.processes import PolicyProcess
from scripts.pgcluster import create_postgres_database, drop_postgres_database, free_port
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy import server as policy_server
from tollgate.services.policy.config import Settings
from tollgate.shared import migrate

# The modes lowest first (MODES[0] is MODE_OFF, number 1).
MODES = [pb.MODE_OFF, pb.MODE_OBSERVE, pb.MODE_SUGGEST, pb.MODE_PROACTIVE, pb.MODE_AMBITIOUS, pb.MODE_AUTONOMOUS]

TENANT, FEATURES, USERS = "bench", [f"feature_{n:02d}" for n in range(20)], 1000
SEQUENTIAL, CONCURRENT, IN_FLIGHT, WARMUP = 3000, 6000, 64, 300


def run(admin_url: str) -> None:
    with seeded_policy(admin_url) as (port, _, metadata), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        _measure(channel, metadata)


@contextmanager
def seeded_policy(
    admin_url: str, *, http: bool = False, own_process: bool = False
) -> Iterator[tuple[int, int | None, tuple[tuple[str, str], ...]]]:
    """(gRPC port, HTTP port or None, metadata of a token) of a Policy server on a fresh database holding
    the tenant below, in this process or, with `own_process`, in a process of its own (as deployed: the
    bench's client threads do not share its GIL). Dropped at the end."""
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    try:
        migrate.upgrade("policy", url)
        token = tokens.token(url, {"policy:read", "policy:admin"}, schemas=("policy",))
        metadata = (("authorization", f"Bearer {token}"),)
        with _policy(url, http, own_process) as (port, http_port):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                _seed(policy_pb2_grpc.PolicyAdminServiceStub(channel), metadata)
            yield port, http_port, metadata
    finally:
        drop_postgres_database(admin_url, url)


@contextmanager
def _policy(url: str, http: bool, own_process: bool) -> Iterator[tuple[int, int | None]]:
    if own_process:
        http_port = free_port() if http else None
        process = PolicyProcess(url, POLICY_AUTH_CACHE_SECONDS="5", POLICY_HTTP_PORT=str(http_port or -1))
        try:
            yield process.port, http_port
        finally:
            process.stop()
        return
    settings = replace(
        Settings(),
        database_url=url,
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        http_port=0 if http else None,
        auth_cache_seconds=5.0,
        log_level="WARNING",
    )
    running = policy_server.build(settings)
    try:
        yield running.port, running.http_port
    finally:
        running.stop(grace=1)


def _seed(admin, metadata) -> None:
    seed_catalog(admin, metadata, [pb.FeatureCap(feature_id=f, cap=MODES[n % 6]) for n, f in enumerate(FEATURES)])


def seed_catalog(
    admin, metadata, caps: list, *, metrics: list[str] | None = None, flags: bool = True, users: int = USERS
) -> None:
    """This bench's catalog for TENANT: four roles capping the first 10 features (`caps`), FEATURES (each measured
    by two of `metrics` when given), plan PRO capping features 5 to 14, the tenant's subscription to it (with
    FEATURES[3] switched off when `flags`), and `users` users bound to the roles in turn."""
    roles = [
        pb.Role(role_id=r, default_cap=c, feature_caps=caps[:10])
        for r, c in [
            ("OWNER", pb.MODE_AUTONOMOUS),
            ("ADMIN", pb.MODE_AMBITIOUS),
            ("MEMBER", pb.MODE_SUGGEST),
            ("VIEWER", pb.MODE_OBSERVE),
        ]
    ]
    admin.ImportRoles(pb.ImportRolesRequest(roles=roles), metadata=metadata)
    for n, feature in enumerate(FEATURES):
        measured_by = sorted({metrics[n % len(metrics)], metrics[(n * 7) % len(metrics)]}) if metrics else []
        admin.UpsertFeature(
            pb.UpsertFeatureRequest(
                feature=pb.Feature(feature_id=feature, max_mode=MODES[5 - n % 3], metrics=measured_by)
            ),
            metadata=metadata,
        )
    admin.UpsertPlan(
        pb.UpsertPlanRequest(plan=pb.Plan(plan_id="PRO", default_cap=pb.MODE_AMBITIOUS, feature_caps=caps[5:15])),
        metadata=metadata,
    )
    admin.SetTenantPolicy(
        pb.SetTenantPolicyRequest(
            tenant_policy=pb.TenantPolicy(tenant_id=TENANT, max_mode=pb.MODE_AMBITIOUS, default_role_id="VIEWER")
        ),
        metadata=metadata,
    )
    admin.SetSubscription(
        pb.SetSubscriptionRequest(
            subscription=pb.Subscription(
                tenant_id=TENANT,
                plan_id="PRO",
                status=pb.SUBSCRIPTION_STATUS_ACTIVE,
                feature_flags={FEATURES[3]: False} if flags else {},
            )
        ),
        metadata=metadata,
    )
    for n in range(users):
        admin.BindRole(
            pb.BindRoleRequest(tenant_id=TENANT, user_id=f"user{n}", role_id=roles[n % 4].role_id), metadata=metadata
        )


def _measure(channel, metadata) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    policy = policy_pb2_grpc.PolicyServiceStub(channel)

    def empty(n: int) -> None:
        health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)

    def one(n: int) -> None:
        request = pb.ResolveModeRequest(
            tenant_id=TENANT, user_id=f"user{n % (USERS + 50)}", feature_id=FEATURES[n % 20]
        )
        policy.ResolveMode(request, metadata=metadata, timeout=5)

    def many(n: int) -> None:
        request = pb.ResolveModesRequest(tenant_id=TENANT, user_id=f"user{n % USERS}", feature_ids=FEATURES)
        policy.ResolveModes(request, metadata=metadata, timeout=5)

    for call in (empty, one, many):
        timing.timed(call, WARMUP)
    rows: list[tuple[str, list[float], float | None]] = [
        ("empty unary (Health/Check), sequential", timing.timed(empty, SEQUENTIAL), None),
        ("ResolveMode, sequential", timing.timed(one, SEQUENTIAL), None),
        ("ResolveModes (20 features), sequential", timing.timed(many, SEQUENTIAL // 3), None),
    ]
    for label, call in ((f"empty unary, {IN_FLIGHT} in flight", empty), (f"ResolveMode, {IN_FLIGHT} in flight", one)):
        samples, rate = timing.concurrent(call, CONCURRENT, IN_FLIGHT)
        rows.append((label, samples, rate))
    _report(rows)


def _report(rows) -> None:
    timing.report(rows, in_flight_reference=3, width=44)
    print("goal: ResolveMode <= 1.3x the empty RPC at p50 and p99")
