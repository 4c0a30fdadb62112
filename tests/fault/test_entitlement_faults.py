"""Entitlements under concurrency and faults (docs/entitlements.md), with real Policy and Usage processes:

- 64 threads across two Policy processes reserve and commit against one hard limit (PostgreSQL), also with
  reservations expiring as they are committed: the limit is never exceeded and the committed sum equals Usage's
  total for the period exactly;
- Policy killed with SIGKILL between Reserve and Commit: the reservation expires, the balance returns;
- Policy killed with a commit still in its outbox (Usage down): a new process delivers it, exactly once;
- Usage down during Commit: the commit is accepted, and the event arrives exactly once when Usage returns;
  a Commit retried ten times meanwhile still makes one event.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from scripts.pgcluster import free_port
from tests import fault_support as fs
from tests import policy_support as ps
from tests import support
from tests.usage_support import list_all, totals
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.usage.v1 import usage_pb2_grpc

METRIC = "api.requests"
THREADS, ATTEMPTS, LIMIT = 64, 12, 400


def policy_token(dbs) -> str:
    """Policy's own token towards Usage: reads for quotas, writes for commits."""
    return support.make_token(dbs, tenant=None, scopes=["usage:read", "usage:write"], service="usage")


def start_policy(dbs, usage_port: int, pooling: str = "DIRECT") -> tuple:
    """A Policy process; `pooling`: POLICY_DB_POOLING (how Reserve's and Commit's statements are prepared and sent)."""
    port = free_port()
    process = fs.start_policy(
        dbs.policy_url,
        port,
        f"127.0.0.1:{usage_port}",
        policy_token(dbs),
        quota_cache_seconds="0",
        outbox_interval_seconds="0.05",
        usage_cooldown_seconds="0.2",
        usage_timeout_seconds="2",
        db_pooling=pooling,
    )
    return process, port


def clients(port: int, token: str):
    channel = support.channel(port)
    return (
        channel,
        ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), token),
        ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), token),
    )


@contextmanager
def two_policies(dbs, usage_port: int, token: str) -> Iterator[list[tuple]]:
    """Two Policy processes on one database, each's (channel, admin client, client): one sends each transaction's
    statements as one message of its own prepared statements, the other as psycopg's pipeline (as behind
    PgBouncer), and both decide on the same lock rows."""
    processes = [start_policy(dbs, usage_port, pooling) for pooling in ("DIRECT", "TRANSACTION")]
    opened = [clients(port, token) for _, port in processes]
    try:
        yield opened
    finally:
        for channel, _, _ in opened:
            channel.close()
        for process, _ in processes:
            fs.end(process)


def hard_world(admin, tenant: str, limit: int) -> ps.World:
    hard = pb.QuotaLimit(
        metric=METRIC, period=pb.QUOTA_PERIOD_MONTH, limit=limit, cap=pb.MODE_OFF, kind=pb.LIMIT_KIND_HARD
    )
    return ps.build_world(admin, tenant, metrics=(METRIC,), quotas=(hard,))


def reserve(api, tenant: str, amount: int, ttl: float = 60, key: str | None = None):
    return api.Reserve(
        pb.ReserveRequest(
            tenant_id=tenant,
            user_id="u1",
            metric=METRIC,
            amount=amount,
            idempotency_key=key or ps.suffix(),
            ttl=Duration(seconds=int(ttl), nanos=int(ttl % 1 * 1e9)),
        )
    )


def usage_total(usage_port: int, token: str, tenant: str) -> int:
    with support.channel(usage_port) as channel:
        return totals(usage_pb2_grpc.UsageServiceStub(channel), token, tenant).get(METRIC, (0, 0))[0]


def events_of(usage_port: int, token: str, tenant: str) -> list:
    with support.channel(usage_port) as channel:
        return list_all(usage_pb2_grpc.UsageServiceStub(channel), token, tenant)


def wait_for(condition, seconds: float = 30) -> None:
    """Poll `condition` until it holds (bounded); the assertion that follows says what was expected."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not condition():
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)
def test_64_threads_across_two_policy_processes_never_exceed_a_hard_limit_and_usage_gets_exactly_the_commits(
    dbs, usage, admin_token, tenant
):
    with two_policies(dbs, usage.port, admin_token) as opened:
        hard_world(opened[0][1], tenant, LIMIT)
        committed, refused, errors, lock = [], [], [], threading.Lock()

        def worker(n: int) -> None:
            api = opened[n % 2][2]
            rng = random.Random(n)
            for attempt in range(ATTEMPTS):
                amount = rng.randint(1, 4)
                try:
                    answer = reserve(api, tenant, amount)
                    if not answer.reserved:
                        with lock:
                            refused.append(amount)
                        continue
                    rid = answer.reservation.reservation_id
                    if attempt % 5 == 4:  # some are released, some committed for less than reserved
                        api.Release(pb.ReleaseRequest(tenant_id=tenant, reservation_id=rid))
                        continue
                    actual = amount if attempt % 3 else rng.randint(0, amount)
                    api.Commit(pb.CommitRequest(tenant_id=tenant, reservation_id=rid, amount=actual))
                    with lock:
                        committed.append(actual)
                except grpc.RpcError as error:
                    with lock:
                        errors.append(error.code())

        support.in_threads(worker, THREADS)
        assert errors == []
        assert refused, "the demand must exceed the limit for the test to mean anything"
        assert sum(committed) <= LIMIT
        wait_for(lambda: usage_total(usage.port, admin_token, tenant) == sum(committed))
        assert usage_total(usage.port, admin_token, tenant) == sum(committed)
        assert len(events_of(usage.port, admin_token, tenant)) == len([c for c in committed if c])
        # Exact once the Usage answer in use was asked after the last delivery: a delivery recorded between an
        # answer's note and its question counts twice (never zero times) while that answer is reused
        # (POLICY_BALANCE_USAGE_SECONDS, 1 s, then as long again while it is asked anew).
        exact = (sum(committed), 0, LIMIT - sum(committed))

        def balance() -> tuple[int, int, int]:
            ask = pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", metric=METRIC)
            [q] = opened[1][2].CheckEntitlement(ask).quotas
            return q.usage, q.reserved, q.balance

        wait_for(lambda: balance() == exact, seconds=5)
        assert balance() == exact
        print(f"\nentitlements: {len(committed)} commits summing {sum(committed)} of {LIMIT}, {len(refused)} refusals")


@pytest.mark.slow
@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)
def test_reservations_expiring_as_they_are_committed_across_two_processes_never_let_the_limit_be_exceeded(
    dbs, usage, admin_token, tenant
):
    # Commits race their reservations' expiry while Reserves on both processes count the expired ones as free: a
    # Commit decided after such a Reserve must find its reservation expired, whatever the instant it took.
    limit = LIMIT // 2
    with two_policies(dbs, usage.port, admin_token) as opened:
        hard_world(opened[0][1], tenant, limit)
        committed, expired, refused, errors, lock = [], [], [], [], threading.Lock()

        def worker(n: int) -> None:
            api = opened[n % 2][2]
            rng = random.Random(n)
            for _ in range(ATTEMPTS):
                amount = rng.randint(1, 4)
                try:
                    answer = reserve(api, tenant, amount, ttl=rng.choice((0.05, 0.1, 0.2)))
                    if not answer.reserved:
                        with lock:
                            refused.append(amount)
                        continue
                    time.sleep(rng.uniform(0, 0.1))  # about its time to live: some commits come too late
                    commit = pb.CommitRequest(
                        tenant_id=tenant, reservation_id=answer.reservation.reservation_id, amount=amount
                    )
                    api.Commit(commit)
                    with lock:
                        committed.append(amount)
                except grpc.RpcError as error:
                    late = error.code() == grpc.StatusCode.FAILED_PRECONDITION and "expired" in error.details()
                    with lock:
                        (expired if late else errors).append(error.code())

        support.in_threads(worker, THREADS)
        assert errors == []
        assert expired and refused, "commits must meet expiry and the demand exceed the limit to mean anything"
        assert sum(committed) <= limit
        wait_for(lambda: usage_total(usage.port, admin_token, tenant) == sum(committed))
        assert usage_total(usage.port, admin_token, tenant) == sum(committed)
        print(f"\nentitlements: {len(committed)} commits summing {sum(committed)} of {limit}, {len(expired)} too late")


@pytest.mark.slow
def test_policy_killed_between_reserve_and_commit_lets_the_reservation_expire_and_the_balance_return(
    dbs, usage, admin_token, tenant
):
    process, port = start_policy(dbs, usage.port)
    channel, admin, api = clients(port, admin_token)
    try:
        hard_world(admin, tenant, 100)
        held = reserve(api, tenant, 90, ttl=8).reservation  # outlives the restart below
        fs.end(process)  # SIGKILL
    finally:
        channel.close()
    process, port = start_policy(dbs, usage.port)
    channel, admin, api = clients(port, admin_token)
    try:
        assert not reserve(api, tenant, 20).reserved  # still held by the dead process's reservation
        wait_for(lambda: time.time() * 1e6 > held.expire_time.ToMicroseconds())
        assert reserve(api, tenant, 20).reserved
        late = pb.CommitRequest(tenant_id=tenant, reservation_id=held.reservation_id, amount=90)
        with pytest.raises(grpc.RpcError) as error:
            api.Commit(late)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        [q] = api.CheckEntitlement(pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", metric=METRIC)).quotas
        assert (q.usage, q.reserved) == (0, 20)
        assert usage_total(usage.port, admin_token, tenant) == 0
    finally:
        channel.close()
        fs.end(process)


@pytest.mark.slow
def test_usage_down_during_commit_gets_the_event_exactly_once_when_it_returns_even_with_ten_retries(
    dbs, admin_token, tenant
):
    usage_port = free_port()
    usage_process = fs.start_usage(dbs.usage_url, usage_port)
    process, port = start_policy(dbs, usage_port)
    channel, admin, api = clients(port, admin_token)
    try:
        hard_world(admin, tenant, 100)
        reservation = reserve(api, tenant, 30).reservation
        asked_at = time.monotonic()
        fs.end(usage_process)
        request = pb.CommitRequest(tenant_id=tenant, reservation_id=reservation.reservation_id, amount=25)
        answers = [api.Commit(request) for _ in range(10)]
        assert {a.reservation.state for a in answers} == {pb.RESERVATION_STATE_COMMITTED}
        assert not answers[0].reservation.recorded_in_usage
        # Usage down: once Usage's last answer is older than twice POLICY_BALANCE_USAGE_SECONDS (default 1 s: reused,
        # then served while a refresh is tried), a balance cannot be known, so it is not guessed.
        time.sleep(max(0.0, asked_at + 2.05 - time.monotonic()))
        check = pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", metric=METRIC)
        with pytest.raises(grpc.RpcError) as error:
            api.CheckEntitlement(check)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        usage_process = fs.start_usage(dbs.usage_url, usage_port)
        wait_for(lambda: api.Commit(request).reservation.recorded_in_usage)
        assert api.Commit(request).reservation.recorded_in_usage
        events = events_of(usage_port, admin_token, tenant)
        assert [(e.event.event_id, e.event.quantity) for e in events] == [(answers[0].reservation.usage_event_id, 25)]
        [q] = api.CheckEntitlement(check).quotas
        assert (q.usage, q.reserved, q.balance) == (25, 0, 75)
    finally:
        channel.close()
        fs.end(process)
        fs.end(usage_process)


@pytest.mark.slow
def test_policy_killed_with_a_commit_in_its_outbox_delivers_it_once_from_the_next_process(dbs, admin_token, tenant):
    usage_port = free_port()
    usage_process = fs.start_usage(dbs.usage_url, usage_port)
    process, port = start_policy(dbs, usage_port)
    channel, admin, api = clients(port, admin_token)
    try:
        hard_world(admin, tenant, 100)
        reservation = reserve(api, tenant, 40).reservation
        fs.end(usage_process)
        committed = api.Commit(pb.CommitRequest(tenant_id=tenant, reservation_id=reservation.reservation_id, amount=40))
        assert not committed.reservation.recorded_in_usage
        fs.end(process)  # SIGKILL with the event still in the outbox
        channel.close()
        usage_process = fs.start_usage(dbs.usage_url, usage_port)
        # Until a Policy runs, the commit is Policy's alone; the next process delivers it.
        process, port = start_policy(dbs, usage_port)
        channel, admin, api = clients(port, admin_token)
        check = pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", metric=METRIC)
        [q] = api.CheckEntitlement(check).quotas
        # Counted whether it is in Usage yet or still in the outbox: once, or for an instant twice if the new
        # process's delivery lands between the question's note and its read (docs/entitlements.md), never zero times.
        assert q.usage in (40, 80)
        wait_for(lambda: usage_total(usage_port, admin_token, tenant) == 40)
        events = events_of(usage_port, admin_token, tenant)
        assert [(e.event.event_id, e.event.quantity) for e in events] == [(committed.reservation.usage_event_id, 40)]
        # Once the delivery is recorded and a Usage answer newer than it is asked for (a reused one keeps its note).
        wait_for(lambda: api.CheckEntitlement(check).quotas[0].usage == 40)
        [q] = api.CheckEntitlement(check).quotas
        assert (q.usage, q.balance) == (40, 60)
    finally:
        channel.close()
        fs.end(process)
        fs.end(usage_process)
