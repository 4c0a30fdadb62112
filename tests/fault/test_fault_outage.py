"""PostgreSQL stopped for several seconds under load (a throwaway cluster this test owns), with a
Usage and a Policy process on it and a UsageRecorder feeding Usage.

While it is down: every call with a 2 s deadline answers UNAVAILABLE well before its deadline (never
DEADLINE_EXCEEDED, INTERNAL or UNKNOWN), health reads NOT_SERVING, and Policy's ResolveMode keeps
answering from memory for a tenant whose snapshot (and caller's token) it holds — the documented
cache (docs/policy.md, docs/reliability.md). When it returns, both services recover by themselves
and the recorder delivers every event exactly once."""

import threading
import time

import grpc
import pytest

from scripts.pgcluster import ThrowawayCluster, free_port
from tests import fault_support as fs
from tests import support
from tests.policy_support import Client, build_world
from tests.usage_support import DAY_US, event, now_us, totals, ts
from tollgate.clients.recorder import UsageRecorder
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

OUTAGE_SECONDS = 6.0
DEADLINE = 2.0
FEED_EVENTS = 4000  # recorded at ~400 events/s, so the feed spans the whole outage
ALL_SCOPES = ["usage:write", "usage:read", "usage:admin", "policy:read", "policy:write", "policy:admin"]


@pytest.fixture
def cluster():
    try:
        owned = ThrowawayCluster().init().start()
    except FileNotFoundError as missing:
        pytest.skip(f"no local PostgreSQL binaries for a throwaway cluster: {missing}")
    yield owned
    owned.destroy()


def feed(recorder: UsageRecorder, stop: threading.Event, recorded: list) -> None:
    """Record FEED_EVENTS events, ten every 25 ms, remembering each accepted (id, quantity)."""
    for i in range(FEED_EVENTS):
        if stop.is_set():
            return
        quantity = 1 + i % 4
        if recorder.record(
            "api.requests", quantity, event_id=f"rec-{i}", idempotency_key=f"rk-{i}", correlation_id=f"rc-{i}"
        ):
            recorded.append(quantity)
        if i % 10 == 9:
            time.sleep(0.025)


def probes(usage_port: int, policy_port: int, tenant: str, token: str, admin: str, world) -> dict:
    """One round of calls, each with a 2 s deadline: {name: (code, seconds)}."""
    with support.channel(usage_port) as uc, support.channel(policy_port) as pc:
        usage = usage_pb2_grpc.UsageServiceStub(uc)
        policy = policy_pb2_grpc.PolicyServiceStub(pc)
        policy_admin = policy_pb2_grpc.PolicyAdminServiceStub(pc)
        role = next(iter(world.roles))
        batch = u.RecordEventsRequest(tenant_id=tenant, events=[event(f"probe-{time.monotonic_ns()}")])
        when = dict(metadata=support.bearer(token), timeout=DEADLINE)
        as_admin = dict(metadata=support.bearer(admin), timeout=DEADLINE)
        return {
            "RecordEvents": fs.timed_code(lambda: usage.RecordEvents(batch, **when)),
            "GetUsage": fs.timed_code(
                lambda: usage.GetUsage(
                    u.GetUsageRequest(
                        tenant_id=tenant, start_time=ts(now_us() - DAY_US), end_time=ts(now_us() + DAY_US)
                    ),
                    **when,
                )
            ),
            "ListEvents": fs.timed_code(lambda: usage.ListEvents(u.ListEventsRequest(tenant_id=tenant), **when)),
            "SetOverride": fs.timed_code(
                lambda: policy_admin.SetOverride(
                    pb.SetOverrideRequest(
                        tenant_id=tenant, role_id=role, feature_id=world.feature, cap=pb.MODE_SUGGEST, reason="outage"
                    ),
                    **as_admin,
                )
            ),
            "ListBindings": fs.timed_code(
                lambda: policy_admin.ListBindings(pb.ListBindingsRequest(tenant_id=tenant), **when)
            ),
            "ResolveMode(uncached tenant)": fs.timed_code(
                lambda: policy.ResolveMode(
                    pb.ResolveModeRequest(tenant_id=support.new_tenant(), user_id="u1", feature_id=world.feature),
                    **as_admin,
                )
            ),
            "ResolveMode(cached)": fs.timed_code(
                lambda: policy.ResolveMode(
                    pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=world.feature), **when
                )
            ),
        }


def answered_normally(round_: dict) -> bool:
    """Every probe answered as with the database up (a tenant no one created is NOT_FOUND)."""
    return all(
        code == (grpc.StatusCode.NOT_FOUND if name == "ResolveMode(uncached tenant)" else grpc.StatusCode.OK)
        for name, (code, _) in round_.items()
    )


@pytest.mark.slow
def test_a_database_outage_fails_calls_fast_turns_health_off_then_recovers_and_the_recorder_loses_nothing(
    cluster, tmp_path
):
    dbs = support.postgres_databases(cluster.url)
    tenant = support.new_tenant()
    token = support.make_token(dbs, tenant=tenant, scopes=ALL_SCOPES)
    admin = support.make_token(dbs, tenant=None, scopes=ALL_SCOPES)
    usage_token = support.make_token(dbs, tenant=None, scopes=["usage:read"], service="usage")
    usage_port, policy_port = free_port(), free_port()
    usage_process = fs.start_usage(cluster.url, usage_port)
    # Tokens are cached for a minute here so the cached-snapshot case below is about the snapshot cache.
    policy_process = fs.start_policy(
        cluster.url, policy_port, f"127.0.0.1:{usage_port}", usage_token, auth_cache_seconds="60"
    )
    recorder, stop, recorded = None, threading.Event(), []
    try:
        with support.channel(policy_port) as channel:
            admin_client = Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin)
            world = build_world(admin_client, tenant)
        before = probes(usage_port, policy_port, tenant, token, admin, world)  # also caps the feature by override
        assert answered_normally(before)
        with support.channel(policy_port) as channel:  # this tenant's snapshot is now in Policy's memory
            resolved = policy_pb2_grpc.PolicyServiceStub(channel).ResolveMode(
                pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=world.feature),
                metadata=support.bearer(token),
                timeout=10,
            )

        recorder = UsageRecorder(
            f"127.0.0.1:{usage_port}",
            token,
            tenant,
            str(tmp_path / "spool.db"),
            batch_size=200,
            max_batch_age=0.2,
            deadline=DEADLINE,
            backoff_base=0.1,
            backoff_cap=1.0,
        )
        feeder = threading.Thread(target=feed, args=(recorder, stop, recorded))
        feeder.start()
        time.sleep(1.0)  # load flowing before the fault
        cluster.stop()
        down_at = time.monotonic()
        during, health = [], []
        while time.monotonic() - down_at < OUTAGE_SECONDS:  # bounded by the outage length
            during.append(probes(usage_port, policy_port, tenant, token, admin, world))
            health.append((fs.health_of(usage_port), fs.health_of(policy_port)))
            time.sleep(0.2)
        with support.channel(policy_port) as channel:  # the cached answer is the very answer of before
            during_outage = policy_pb2_grpc.PolicyServiceStub(channel).ResolveMode(
                pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=world.feature),
                metadata=support.bearer(token),
                timeout=2,
            )
        cluster.start()
        outage = time.monotonic() - down_at
        assert during_outage == resolved and resolved.resolution.effective_mode == pb.MODE_SUGGEST

        assert outage >= OUTAGE_SECONDS and len(during) >= 5
        for round_ in during:
            for name, (code, seconds) in round_.items():
                if name == "ResolveMode(cached)":
                    # Answered from the in-memory snapshot: the same answer as before the outage.
                    assert code == grpc.StatusCode.OK, round_
                else:
                    assert code == grpc.StatusCode.UNAVAILABLE, (name, round_)
                    assert seconds < DEADLINE / 2, (name, seconds)
        assert (fs.NOT_SERVING, fs.NOT_SERVING) in health
        assert fs.health_of(usage_port, "liveness") == fs.SERVING  # the process itself never stopped

        # Recovery by themselves: health SERVING again and every call succeeds.
        assert fs.wait_for_health(usage_port, fs.SERVING, timeout=30) == fs.SERVING
        assert fs.wait_for_health(policy_port, fs.SERVING, timeout=30) == fs.SERVING
        after = probes(usage_port, policy_port, tenant, token, admin, world)
        assert answered_normally(after), after

        feeder.join(timeout=60)
        assert recorder.flush(timeout=60)
        counters = recorder.counters()
        assert counters.sent + counters.duplicate == len(recorded) == FEED_EVENTS
        assert (counters.rejected, counters.conflict, counters.dropped, counters.spooled) == (0, 0, 0, 0)
        assert counters.retries > 0  # the outage was felt, and ridden out
        probes_stored = 2  # the probe event of the round before and the round after the outage
        expected = (sum(recorded) + probes_stored, FEED_EVENTS + probes_stored)
        with support.channel(usage_port) as channel:
            assert totals(usage_pb2_grpc.UsageServiceStub(channel), token, tenant) == {"api.requests": expected}
        assert fs.stored_rows(cluster.url, tenant) == {"api.requests": expected}
        slowest = max(seconds for round_ in during for name, (_, seconds) in round_.items())
        print(
            f"\noutage: PostgreSQL down {outage:.1f} s; {len(during)} probe rounds x {len(during[0])} RPCs, slowest "
            f"UNAVAILABLE/cached answer {slowest * 1000:.0f} ms (deadline {DEADLINE:.0f} s); recorder "
            f"{FEED_EVENTS} events, {counters.retries} retried batches, sent {counters.sent} + duplicate "
            f"{counters.duplicate}; lost 0, double 0"
        )
    finally:
        stop.set()
        if recorder is not None:
            recorder.close(timeout=5)
        fs.end(usage_process)
        fs.end(policy_process)
