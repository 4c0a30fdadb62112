"""ListActiveFeatures (20 features, Usage up) latency beside an empty unary RPC on the same server, in one run.

The reference is grpc.health.v1.Health/Check on the Policy server, as in bench/resolve.py, measured
sequentially and with IN_FLIGHT calls outstanding. One fresh PostgreSQL database holds both schemas;
a real Usage server runs in its own process, as deployed, and real Policy servers reading it with
their own service token run in this one. One tenant has 20 features, each measured by one or two
metrics of the default catalog (all 16 in all), and 50,000 events over the last 30 days from 50
users, rolled up once before measuring (the scheduled rollup is off so that it cannot land inside a
measurement), then vacuumed and analyzed. ListActiveFeatures rotates over the 50 users, on a Policy
with the default ranking cache (POLICY_RANKING_CACHE_SECONDS=5) and on one without (0), each beside
its own empty RPC. The two GetUsage calls Policy makes per answer (the plan has no quotas) are also
timed straight on Usage, to show where the time goes. Every answer must say usage_available and list
all 20 features, so a figure never hides fallbacks (Policy's default deadline on Usage applies); the
database is dropped at the end."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import grpc
import psycopg
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import timing, tokens
from bench.processes import UsageProcess
from bench.resolve import FEATURES, MODES, TENANT, seed_catalog
from scripts.pgcluster import create_postgres_database, drop_postgres_database
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy import server as policy_server
from tollgate.services.policy.config import Settings as PolicySettings
from tollgate.services.usage.domain.catalog import DEFAULT_CATALOG
from tollgate.shared import migrate
from tollgate.shared.db import normalize_url
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

METRICS = [metric.name for metric in DEFAULT_CATALOG]
USERS, EVENTS, BATCH, DAYS = 50, 50_000, 1000, 30
SEQUENTIAL, CONCURRENT, IN_FLIGHT, WARMUP, DIRECT = 2000, 1600, 32, 200, 300
GOAL = 4.0


def run(admin_url: str) -> None:
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    try:
        migrate.upgrade("usage", url)
        migrate.upgrade("policy", url)
        admin_token = tokens.token(
            url,
            {"usage:write", "usage:read", "usage:admin", "policy:read", "policy:write", "policy:admin"},
            schemas=("usage", "policy"),
            label="bench admin",
        )
        policy_token = tokens.token(url, {"usage:read"}, label="policy service")
        quiet = replace(
            PolicySettings(),
            database_url=url,
            host="127.0.0.1",
            port=0,
            metrics_port=None,
            http_port=None,
            log_level="WARNING",
        )
        usage = UsageProcess(url)
        try:
            policy = policy_server.build(replace(quiet, usage_addr=f"127.0.0.1:{usage.port}", usage_token=policy_token))
            uncached = policy_server.build(
                replace(
                    quiet,
                    usage_addr=f"127.0.0.1:{usage.port}",
                    usage_token=policy_token,
                    ranking_cache_seconds=0,
                )
            )
            try:
                metadata = (("authorization", f"Bearer {admin_token}"),)
                with (
                    grpc.insecure_channel(f"127.0.0.1:{usage.port}") as usage_channel,
                    grpc.insecure_channel(f"127.0.0.1:{policy.port}") as policy_channel,
                    grpc.insecure_channel(f"127.0.0.1:{uncached.port}") as uncached_channel,
                ):
                    _seed_policy(policy_pb2_grpc.PolicyAdminServiceStub(policy_channel), metadata)
                    _seed_usage(usage_channel, metadata)
                    _settle(url)
                    _measure(
                        {"ranking cache 5 s": policy_channel, "ranking cache off": uncached_channel},
                        usage_channel,
                        metadata,
                    )
            finally:
                policy.stop(grace=1)
                uncached.stop(grace=1)
        finally:
            usage.stop()
    finally:
        drop_postgres_database(admin_url, url)


def _seed_policy(admin, metadata) -> None:
    """bench/resolve.py's catalog, with every cap above OFF so that all 20 features are active, each measured by two
    of METRICS, no feature switched off, and USERS users."""
    caps = [pb.FeatureCap(feature_id=f, cap=MODES[1 + n % 5]) for n, f in enumerate(FEATURES)]
    seed_catalog(admin, metadata, caps, metrics=METRICS, flags=False, users=USERS)


def _seed_usage(channel, metadata) -> None:
    """EVENTS events over the last DAYS days across the features' metrics and USERS users, rolled up."""
    stub, admin = usage_pb2_grpc.UsageServiceStub(channel), usage_pb2_grpc.UsageAdminServiceStub(channel)
    rng, now_us = random.Random(7), int(time.time() * 1_000_000)
    span_us = DAYS * 86400 * 1_000_000 - 600 * 1_000_000  # stay inside the window measured a few minutes later
    started = time.perf_counter()
    for first in range(0, EVENTS, BATCH):
        events = []
        for n in range(first, min(first + BATCH, EVENTS)):
            occurred = Timestamp()
            occurred.FromMicroseconds(now_us - 60_000_000 - rng.randrange(span_us))
            events.append(
                u.UsageEvent(
                    event_id=f"ev-{n}",
                    metric=rng.choice(METRICS),
                    quantity=rng.randint(1, 20),
                    occurred_at=occurred,
                    actor_id=f"user{rng.randrange(USERS)}",
                    source_service="bench",
                )
            )
        results = stub.RecordEvents(
            u.RecordEventsRequest(tenant_id=TENANT, events=events), metadata=metadata, timeout=60
        ).results
        refused = [r for r in results if r.verdict != u.VERDICT_ACCEPTED]
        assert not refused, f"{len(refused)} events not accepted, e.g. {refused[0]}"
    recorded = time.perf_counter() - started
    report = admin.RunRollup(u.RunRollupRequest(tenant_id=TENANT), metadata=metadata, timeout=300)
    print(
        f"seeded {EVENTS} events in {recorded:.1f}s; rollup recomputed {report.buckets_recomputed} buckets "
        f"in {time.perf_counter() - started - recorded:.1f}s",
        flush=True,
    )


def _settle(url: str) -> None:
    """VACUUM ANALYZE, as autovacuum would within a minute: planner statistics for the fresh tables,
    and no dead dirty-bucket marks left by the one big rollup, so the figures do not move mid-run."""
    with psycopg.connect(
        normalize_url(url).replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as connection:
        connection.execute("VACUUM ANALYZE")


def _measure(policies: dict, usage_channel, metadata) -> None:
    """Each Policy configuration beside the empty RPC on its own server; the default one must never fall back."""
    usage = usage_pb2_grpc.UsageServiceStub(usage_channel)
    direct = {
        "tenant": lambda n: usage.GetUsage(_usage_request(""), metadata=metadata, timeout=5),
        "user": lambda n: usage.GetUsage(_usage_request(f"user{n % USERS}"), metadata=metadata, timeout=5),
    }
    print(f"{'case':50} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'x empty p50':>12} {'x empty p99':>12}")
    empty_reference: list[float] = []
    for name, channel in policies.items():
        empty, active, wrong = _calls(channel, metadata)
        for call in (empty, active):
            timing.timed(call, WARMUP)
        wrong.clear()
        empty_seq, active_seq = timing.timed(empty, SEQUENTIAL), timing.timed(active, SEQUENTIAL)
        wrong_alone = len(wrong)
        empty_many, empty_rate = timing.concurrent(empty, CONCURRENT, IN_FLIGHT)
        active_many, active_rate = timing.concurrent(active, CONCURRENT, IN_FLIGHT)
        empty_reference = empty_reference or empty_seq
        _row("empty unary (Health/Check), sequential", empty_seq, empty_seq, None)
        _row(f"ListActiveFeatures, {name}, sequential", active_seq, empty_seq, None)
        _row(f"empty unary, {IN_FLIGHT} in flight", empty_many, empty_many, empty_rate)
        _row(f"ListActiveFeatures, {name}, {IN_FLIGHT} in flight", active_many, empty_many, active_rate)
        for label, samples, reference in [
            ("sequential", active_seq, empty_seq),
            (f"{IN_FLIGHT} in flight", active_many, empty_many),
        ]:
            ratio = timing.pct(samples, 99) / timing.pct(reference, 99)
            print(
                f"goal: ListActiveFeatures ({name}) p99 <= {GOAL:g}x the empty RPC, {label}: {ratio:.2f}x, "
                f"{'met' if ratio <= GOAL else 'MISSED'}"
            )
        print(
            f"answers without usage or without all {len(FEATURES)} features ({name}): {wrong_alone} of "
            f"{SEQUENTIAL} sequential, {len(wrong) - wrong_alone} of {CONCURRENT} in flight"
        )
        if name == next(iter(policies)):
            assert not wrong, f"the default configuration fell back or lost features, e.g. {wrong[0]}"
    for label, call in direct.items():
        _row(f"  Policy's GetUsage, {label} (on Usage), sequential", timing.timed(call, DIRECT), empty_reference, None)


def _calls(policy_channel, metadata) -> tuple:
    """The empty RPC and ListActiveFeatures (rotating over the users) on one Policy server, and the
    list where ListActiveFeatures notes answers that are not full."""
    health = health_pb2_grpc.HealthStub(policy_channel)
    policy = policy_pb2_grpc.PolicyServiceStub(policy_channel)
    wrong: list[str] = []

    def active(n: int) -> None:
        request = pb.ListActiveFeaturesRequest(
            tenant_id=TENANT, user_id=f"user{n % USERS}", window=Duration(seconds=DAYS * 86400)
        )
        answer = policy.ListActiveFeatures(request, metadata=metadata, timeout=5)
        if not answer.usage_available or len(answer.features) != len(FEATURES):
            wrong.append(
                f"usage_available={answer.usage_available} ({answer.usage_unavailable_reason!r}), "
                f"{len(answer.features)} features"
            )

    return lambda n: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5), active, wrong


def _usage_request(actor_id: str) -> u.GetUsageRequest:
    """What Policy asks Usage for one ListActiveFeatures call (tenant-wide or the user's)."""
    start, end = Timestamp(), Timestamp()
    now_us = int(time.time() * 1_000_000)
    start.FromMicroseconds(now_us - DAYS * 86400 * 1_000_000)
    end.FromMicroseconds(now_us + 1)
    return u.GetUsageRequest(
        tenant_id=TENANT, metrics=sorted(METRICS), start_time=start, end_time=end, actor_id=actor_id
    )


def _row(label: str, samples: list[float], reference: list[float], rate: float | None) -> None:
    rate = rate or len(samples) / sum(samples)
    p50, p99 = timing.pct(samples, 50), timing.pct(samples, 99)
    print(
        f"{label:50} {p50:8.3f} {p99:8.3f} {rate:9.0f} "
        f"{p50 / timing.pct(reference, 50):12.2f} {p99 / timing.pct(reference, 99):12.2f}"
    )
