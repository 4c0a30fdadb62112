"""CheckEntitlement and Reserve+Commit latency beside an empty unary RPC on the same server, in one run,
sequential and with IN_FLIGHT calls outstanding on one hot limit; then zero overshoot under that load. Sequential
cases take turns in TURNS rounds, so that each meets the machine as the others do; in flight each runs once.

The reference is grpc.health.v1.Health/Check on the Policy server, as in bench/resolve.py. One fresh
PostgreSQL database holds both schemas; Usage and Policy run in processes of their own, as deployed (the
bench's client threads do not share Policy's GIL), Policy with a service token that may read and record
usage. A tenant's plan has one hard monthly quota on api.requests (high enough that the latency runs are
never refused) and a grant. CheckEntitlement reads Usage's answer (reused as deployed) and what Policy holds
(one statement); Reserve takes the (tenant, metric) lock, reads both and inserts; Commit locks, writes the
commit and its outbox row, and sends the event to Usage before answering. Every in-flight Reserve and Commit
hits the same (tenant, metric) lock row: that is the hot limit. Policy's CPU per call with IN_FLIGHT calls in
flight is printed too, beside that of ResolveMode (an authenticated call answered from memory): with calls in
flight, the process's CPU sets the latency. Last, a second tenant's hard limit is set to
half of what IN_FLIGHT callers ask for, and the bench checks that the committed sum stays within it and
that Usage's total equals it once the outbox is empty. The database is dropped at the end."""

from __future__ import annotations

import itertools
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import timing, tokens
from bench.processes import PolicyProcess, UsageProcess
from scripts.pgcluster import create_postgres_database, drop_postgres_database
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.shared import migrate
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

HOT, CAPPED, METRIC, FEATURE = "bench", "capped", "api.requests", "chat"
SEQUENTIAL, CONCURRENT, IN_FLIGHT, WARMUP = 1000, 1920, 64, 100
TURNS = 4  # rounds in which the sequential cases take turns (SEQUENTIAL calls of each in all)
OVERSHOOT_ROUNDS = 20  # per caller: IN_FLIGHT callers each reserve 1..4, OVERSHOOT_ROUNDS times


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
        policy_token = tokens.token(url, {"usage:read", "usage:write"}, label="policy service")
        usage = UsageProcess(url, USAGE_ROLLUP_INTERVAL_SECONDS="30")  # rolled up as deployed (the default)
        try:
            policy = PolicyProcess(
                url,
                POLICY_USAGE_ADDR=f"127.0.0.1:{usage.port}",
                POLICY_USAGE_TOKEN=policy_token,
                POLICY_USAGE_TIMEOUT_SECONDS="2",
            )
            try:
                metadata = (("authorization", f"Bearer {admin_token}"),)
                with (
                    grpc.insecure_channel(f"127.0.0.1:{policy.port}") as channel,
                    grpc.insecure_channel(f"127.0.0.1:{usage.port}") as usage_channel,
                ):
                    admin = policy_pb2_grpc.PolicyAdminServiceStub(channel)
                    _seed(admin, metadata, HOT, 10**12)
                    _measure(channel, usage_channel, metadata, policy)
                    _overshoot(channel, usage_channel, admin, metadata)
            finally:
                policy.stop()
        finally:
            usage.stop()
    finally:
        drop_postgres_database(admin_url, url)


def _seed(admin, metadata, tenant: str, limit: int) -> None:
    admin.ImportRoles(
        pb.ImportRolesRequest(roles=[pb.Role(role_id="MEMBER", default_cap=pb.MODE_AUTONOMOUS)]), metadata=metadata
    )
    admin.UpsertFeature(
        pb.UpsertFeatureRequest(feature=pb.Feature(feature_id=FEATURE, max_mode=pb.MODE_AUTONOMOUS, metrics=[METRIC])),
        metadata=metadata,
    )
    quota = pb.QuotaLimit(
        metric=METRIC, period=pb.QUOTA_PERIOD_MONTH, limit=limit, cap=pb.MODE_OFF, kind=pb.LIMIT_KIND_HARD
    )
    plan = f"PLAN_{tenant}"
    admin.UpsertPlan(
        pb.UpsertPlanRequest(plan=pb.Plan(plan_id=plan, default_cap=pb.MODE_AUTONOMOUS, quotas=[quota])),
        metadata=metadata,
    )
    admin.SetTenantPolicy(
        pb.SetTenantPolicyRequest(
            tenant_policy=pb.TenantPolicy(tenant_id=tenant, max_mode=pb.MODE_AUTONOMOUS, default_role_id="MEMBER")
        ),
        metadata=metadata,
    )
    admin.SetSubscription(
        pb.SetSubscriptionRequest(
            subscription=pb.Subscription(tenant_id=tenant, plan_id=plan, status=pb.SUBSCRIPTION_STATUS_ACTIVE)
        ),
        metadata=metadata,
    )
    if tenant == HOT:
        admin.CreateGrant(
            pb.CreateGrantRequest(grant=pb.Grant(tenant_id=tenant, metric=METRIC, amount=1000, priority=1)),
            metadata=metadata,
        )


def _measure(channel, usage_channel, metadata, process: PolicyProcess) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    policy = policy_pb2_grpc.PolicyServiceStub(channel)
    usage = usage_pb2_grpc.UsageServiceStub(usage_channel)
    keys = itertools.count()
    month_start = int(time.time()) // 86400 * 86400 - 27 * 86400  # about the month CheckEntitlement asks for

    def get_usage(n: int) -> None:
        request = u.GetUsageRequest(
            tenant_id=HOT,
            metrics=[METRIC],
            start_time={"seconds": month_start},
            end_time={"seconds": int(time.time()) + 1},
        )
        usage.GetUsage(request, metadata=metadata, timeout=5)

    def empty(n: int) -> None:
        health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)

    def check(n: int) -> None:
        request = pb.CheckEntitlementRequest(tenant_id=HOT, user_id=f"user{n % 50}", feature_id=FEATURE)
        policy.CheckEntitlement(request, metadata=metadata, timeout=5)

    def resolve(n: int) -> None:
        request = pb.ResolveModeRequest(tenant_id=HOT, user_id=f"user{n % 50}", feature_id=FEATURE)
        policy.ResolveMode(request, metadata=metadata, timeout=5)

    reserve_samples: list[float] = []
    lock = threading.Lock()

    def reserve_commit(n: int) -> None:
        started = time.perf_counter()
        answer = policy.Reserve(
            pb.ReserveRequest(
                tenant_id=HOT, user_id=f"user{n % 50}", metric=METRIC, amount=3, idempotency_key=f"k{next(keys)}"
            ),
            metadata=metadata,
            timeout=10,
        )
        took = time.perf_counter() - started
        with lock:
            reserve_samples.append(took)
        assert answer.reserved, answer.refusal
        policy.Commit(
            pb.CommitRequest(tenant_id=HOT, reservation_id=answer.reservation.reservation_id, amount=2),
            metadata=metadata,
            timeout=10,
        )

    for call in (empty, check, resolve, reserve_commit, get_usage):
        timing.timed(call, WARMUP)
    # The sequential cases take turns in short rounds, so that each meets the same load from whatever else runs on the
    # machine (its speed drifts over a run): the ratios compare calls timed under the same conditions.
    # ResolveMode, an authenticated call answered from memory, runs in flight only: its CPU is printed beside the rest.
    cases = {"empty unary": empty, "CheckEntitlement": check, "ResolveMode (answered from memory)": resolve}
    cases["Reserve+Commit pair"] = reserve_commit
    sequential: dict[str, list[float]] = {label: [] for label in cases if not label.startswith("ResolveMode")}
    reserves: dict[str, list[float]] = {"sequential": [], "in flight": []}  # the Reserve of each pair above
    for _ in range(TURNS):
        for label, call in cases.items():
            reserve_samples.clear()
            if label in sequential:
                sequential[label] += timing.timed(call, SEQUENTIAL // TURNS)
            reserves["sequential"] += reserve_samples
    # In flight each case runs once, whole: in short rounds, the ramp of every round (64 client threads started at
    # once) would weigh on the tail of the cheapest case most, and flatter the ratios.
    in_flight: dict[str, list[float]] = {}
    rate: dict[str, float] = {}
    cpu: dict[str, float] = {}  # Policy's CPU per call, in flight: what bounds the ratios there
    for label, call in cases.items():
        reserve_samples.clear()
        cpu_before = process.cpu_seconds()
        in_flight[label], rate[label] = timing.concurrent(call, CONCURRENT, IN_FLIGHT)
        cpu[label] = (process.cpu_seconds() - cpu_before) / len(in_flight[label])
        reserves["in flight"] += reserve_samples
    rows: list[tuple[str, list[float], float | None]] = [
        ("empty unary (Health/Check), sequential", sequential["empty unary"], None),
        ("CheckEntitlement, sequential", sequential["CheckEntitlement"], None),
        ("Reserve+Commit, sequential", sequential["Reserve+Commit pair"], None),
        ("Reserve (of the pairs above), sequential", reserves["sequential"], None),
        (f"empty unary, {IN_FLIGHT} in flight", in_flight["empty unary"], rate["empty unary"]),
        (f"CheckEntitlement, {IN_FLIGHT} in flight", in_flight["CheckEntitlement"], rate["CheckEntitlement"]),
        (
            f"Reserve+Commit, {IN_FLIGHT} in flight, one hot limit",
            in_flight["Reserve+Commit pair"],
            rate["Reserve+Commit pair"],
        ),
        (f"Reserve (of those pairs), {IN_FLIGHT} in flight", reserves["in flight"], None),
        ("where the time goes: GetUsage straight on Usage, sequential", timing.timed(get_usage, SEQUENTIAL), None),
    ]
    _report(rows, cpu)


def _report(rows, cpu: dict[str, float]) -> None:
    timing.report(rows, in_flight_reference=4, width=60)
    print("goals: CheckEntitlement p99 <= 2x the empty RPC, Reserve p99 <= 3x")
    print(f"Policy's CPU per call, {IN_FLIGHT} in flight (all its threads; it bounds the ratios there):")
    reference = cpu["empty unary"]
    for label, seconds in cpu.items():
        print(f"  {label:58} {seconds * 1000:8.3f} ms {seconds / reference:8.2f}x the empty RPC's")


def _overshoot(channel, usage_channel, admin, metadata) -> None:
    asked = IN_FLIGHT * OVERSHOOT_ROUNDS * 5 // 2  # the mean ask of 1..4 is 2.5
    limit = asked // 2
    _seed(admin, metadata, CAPPED, limit)
    policy = policy_pb2_grpc.PolicyServiceStub(channel)
    committed, refused, lock = [], [0], threading.Lock()

    def caller(slot: int) -> None:
        for n in range(OVERSHOOT_ROUNDS):
            amount = 1 + (slot + n) % 4
            answer = policy.Reserve(
                pb.ReserveRequest(
                    tenant_id=CAPPED, user_id=f"u{slot}", metric=METRIC, amount=amount, idempotency_key=f"{slot}-{n}"
                ),
                metadata=metadata,
                timeout=30,
            )
            if not answer.reserved:
                with lock:
                    refused[0] += 1
                continue
            policy.Commit(
                pb.CommitRequest(tenant_id=CAPPED, reservation_id=answer.reservation.reservation_id, amount=amount),
                metadata=metadata,
                timeout=30,
            )
            with lock:
                committed.append(amount)

    threads = [threading.Thread(target=caller, args=(slot,)) for slot in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = usage_pb2_grpc.UsageServiceStub(usage_channel)
    total = -1
    for _ in range(200):  # the outbox empties within a few passes; bounded
        answer = usage.GetUsage(
            u.GetUsageRequest(
                tenant_id=CAPPED,
                metrics=[METRIC],
                start_time={"seconds": int(time.time()) - 40 * 86400},
                end_time={"seconds": int(time.time()) + 60},
            ),
            metadata=metadata,
            timeout=10,
        )
        total = sum(t.quantity for t in answer.totals)
        if total == sum(committed):
            break
        time.sleep(0.05)
    overshoot = max(0, sum(committed) - limit)
    print(
        f"hot limit {limit}: {IN_FLIGHT} callers asked {asked} in {IN_FLIGHT * OVERSHOOT_ROUNDS} reservations; "
        f"committed {sum(committed)} ({refused[0]} refused), Usage holds {total}; overshoot {overshoot}"
    )
    if overshoot or total != sum(committed):
        raise SystemExit("entitlements: the hard limit was overshot or Usage's total differs from the commits")
