"""Threshold notifications through real servers on both backends (docs/entitlements.md, "Notifications"): stored
in the Reserve or CheckEntitlement that crosses them, once per period, numbered per tenant, and offered on the
resumable WatchEntitlements stream."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from tests import http_support, support
from tests import policy_support as ps
from tests.policy.test_active_features import record
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy.domain.entitlements import Balance
from tollgate.services.policy.domain.model import LimitKind, QuotaLimit, QuotaScope
from tollgate.services.policy.domain.modes import Mode
from tollgate.services.policy.domain.notifications import crossings, threshold

METRIC = "api.requests"
# A guard against a hang, never an assertion on speed: every item awaited is stored before it is awaited.
GUARD_SECONDS = 30


@pytest.fixture(scope="module")
def usage_token(dbs):
    return support.make_token(dbs, tenant=None, scopes=["usage:read", "usage:write"], service="usage")


@pytest.fixture(scope="module")
def watch_policy(dbs, usage, usage_token):
    running = support.build_policy(
        dbs, usage.port, usage_token=usage_token, quota_cache_seconds=0, outbox_interval_seconds=0.05
    )
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def watch_channel(watch_policy):
    with support.channel(watch_policy.port) as channel:
        yield channel


@pytest.fixture
def admin(watch_channel, admin_token):
    return ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(watch_channel), admin_token)


@pytest.fixture
def api(watch_channel, admin_token):
    return ps.Client(policy_pb2_grpc.PolicyServiceStub(watch_channel), admin_token)


def world(admin, tenant, limit=100, notify_at=(80, 100), kind=pb.LIMIT_KIND_HARD) -> None:
    quota = pb.QuotaLimit(
        metric=METRIC, period=pb.QUOTA_PERIOD_MONTH, limit=limit, cap=pb.MODE_OBSERVE, kind=kind, notify_at=notify_at
    )
    ps.build_world(admin, tenant, metrics=(METRIC,), quotas=(quota,))


def reserve(api, tenant, amount) -> pb.ReserveResponse:
    return api.Reserve(
        pb.ReserveRequest(
            tenant_id=tenant,
            user_id="u1",
            metric=METRIC,
            amount=amount,
            idempotency_key=ps.suffix(),
            ttl=Duration(seconds=60),
        )
    )


def watch(channel, token, tenant, after=0, timeout: float = GUARD_SECONDS):
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    request = pb.WatchEntitlementsRequest(tenant_id=tenant, after_sequence=after)
    return stub.WatchEntitlements(request, metadata=support.bearer(token), timeout=timeout)


def take(call, count: int) -> list[pb.EntitlementNotification]:
    """The next `count` notifications of an open watch."""
    return [next(call).notification for _ in range(count)]


def refused(channel, token, tenant, after) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        next(watch(channel, token, tenant, after))
    return caught.value


def assert_latest(channel, token, tenant, latest: int) -> None:
    """Exactly `latest` notifications are stored: the last is numbered `latest`, and a cursor beyond it refused."""
    call = watch(channel, token, tenant, after=latest - 1)
    assert [n.sequence for n in take(call, 1)] == [latest]
    call.cancel()
    error = refused(channel, token, tenant, latest + 1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert support.field_violations(error) == ["after_sequence"]
    assert f"latest notification ({latest})" in error.details()


def test_crossings_at_80_and_100_are_stored_once_each_in_order_and_a_watch_resumes_after_a_cursor(
    api, admin, watch_channel, admin_token, tenant
):
    world(admin, tenant)
    call = watch(watch_channel, admin_token, tenant)
    assert reserve(api, tenant, 50).reserved  # 50 %: nothing
    assert reserve(api, tenant, 30).reserved  # 80 %
    [first] = take(call, 1)  # sent while the stream waits
    assert (first.sequence, first.percent, first.threshold, first.allowed) == (1, 80, 80, 100)
    assert (first.usage, first.reserved, first.observed_by) == (0, 80, "Reserve")
    assert first.metric == METRIC and first.kind == pb.LIMIT_KIND_HARD and first.period == pb.QUOTA_PERIOD_MONTH
    assert first.period_start.ToMicroseconds() < first.create_time.ToMicroseconds() < first.period_end.ToMicroseconds()
    assert "80% of 100 allowed reached" in first.detail
    assert reserve(api, tenant, 10).reserved  # 90 %: nothing new
    tenth = reserve(api, tenant, 10)  # 100 %
    assert tenth.reserved
    assert not reserve(api, tenant, 1).reserved  # refused: stores nothing
    # Below 100 % and back again within the period: the threshold was announced, and is not again.
    api.Release(pb.ReleaseRequest(tenant_id=tenant, reservation_id=tenth.reservation.reservation_id))
    assert reserve(api, tenant, 10).reserved
    [second] = take(call, 1)
    call.cancel()
    assert (second.sequence, second.percent, second.threshold, second.reserved) == (2, 100, 100, 100)
    assert_latest(watch_channel, admin_token, tenant, 2)

    resumed = watch(watch_channel, admin_token, tenant, after=1)
    assert [n.sequence for n in take(resumed, 1)] == [2]
    resumed.cancel()
    again = watch(watch_channel, admin_token, tenant, after=0)
    assert [(n.sequence, n.percent) for n in take(again, 2)] == [(1, 80), (2, 100)]
    again.cancel()


def test_concurrent_reserves_and_checks_store_each_crossing_once_numbered_without_gaps(
    api, admin, watch_channel, admin_token, tenant
):
    world(admin, tenant, notify_at=(50, 80, 100))
    calls = [lambda: reserve(api, tenant, 5) for _ in range(20)] + [
        lambda: api.CheckEntitlement(pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", metric=METRIC))
        for _ in range(10)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda call: call(), calls))
    assert sum(a.reserved for a in answers[:20]) == 20  # 20 x 5 fills the 100 exactly
    call = watch(watch_channel, admin_token, tenant)
    stored = take(call, 3)
    call.cancel()
    assert [(n.sequence, n.percent) for n in stored] == [(1, 50), (2, 80), (3, 100)]
    assert_latest(watch_channel, admin_token, tenant, 3)


def test_a_refused_reserve_stores_no_crossing(api, admin, watch_channel, admin_token, tenant):
    world(admin, tenant)
    answer = reserve(api, tenant, 150)
    assert not answer.reserved and answer.refusal
    error = refused(watch_channel, admin_token, tenant, 1)  # beyond the latest, which is 0: nothing stored
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "latest notification (0)" in error.details()


def test_usage_recorded_straight_into_usage_is_announced_by_the_check_that_reads_it(
    api, admin, watch_channel, admin_token, tenant, usage_stub
):
    world(admin, tenant, kind=pb.LIMIT_KIND_SOFT)
    record(usage_stub, admin_token, tenant, METRIC, 85)
    api.CheckEntitlement(pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", metric=METRIC))
    call = watch(watch_channel, admin_token, tenant)
    [crossed] = take(call, 1)
    call.cancel()
    assert (crossed.percent, crossed.usage, crossed.reserved, crossed.observed_by) == (80, 85, 0, "CheckEntitlement")
    api.CheckEntitlement(pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", metric=METRIC))
    assert_latest(watch_channel, admin_token, tenant, 1)  # a second look stores nothing more


def test_a_crossing_is_stored_a_restarted_policy_offers_it_and_a_stopping_server_ends_its_watches(
    dbs, usage, usage_token, admin_token, tenant
):
    first = support.build_policy(dbs, usage.port, usage_token=usage_token, quota_cache_seconds=0)
    with support.channel(first.port) as channel:
        admin = ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token)
        world(admin, tenant)
        assert reserve(ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token), tenant, 90).reserved
    first.stop(grace=1)

    second = support.build_policy(dbs, usage.port, usage_token=usage_token, quota_cache_seconds=0)
    with support.channel(second.port) as channel:
        call = watch(channel, admin_token, tenant)
        assert [n.percent for n in take(call, 1)] == [80]
        stopping = threading.Thread(target=second.stop, kwargs={"grace": GUARD_SECONDS})
        stopping.start()
        assert list(call) == []  # the stream ends, cleanly
        assert call.code() == grpc.StatusCode.OK
        stopping.join()


def test_a_watch_is_the_tenants_own(dbs, api, admin, watch_channel, admin_token, tenant):
    world(admin, tenant)
    assert reserve(api, tenant, 80).reserved
    own = support.make_token(dbs, tenant=tenant, scopes=["policy:read"])
    call = watch(watch_channel, own, tenant)
    assert [(n.tenant_id, n.percent) for n in take(call, 1)] == [(tenant, 80)]
    call.cancel()
    other = support.make_token(dbs, tenant=f"{tenant}-other", scopes=["policy:read"])
    error = refused(watch_channel, other, tenant, 0)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert tenant in error.details()


def test_a_bad_cursor_or_tenant_is_invalid_and_a_deadline_ends_the_watch(watch_channel, admin_token, tenant):
    negative = refused(watch_channel, admin_token, tenant, -1)
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert support.field_violations(negative) == ["after_sequence"]
    assert refused(watch_channel, admin_token, "", 0).code() == grpc.StatusCode.INVALID_ARGUMENT
    waiting = watch(watch_channel, admin_token, tenant, timeout=0.5)
    with pytest.raises(grpc.RpcError) as caught:
        next(waiting)  # nothing is ever stored for this tenant
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_notify_at_is_validated_and_kept_sorted(admin, tenant):
    def plan(*percents):
        quota = pb.QuotaLimit(metric=METRIC, period=pb.QUOTA_PERIOD_DAY, limit=10, cap=pb.MODE_OFF, notify_at=percents)
        return pb.UpsertPlanRequest(plan=pb.Plan(plan_id=f"PLAN_{ps.suffix()}", quotas=[quota]))

    with pytest.raises(grpc.RpcError) as caught:
        admin.UpsertPlan(plan(80, 0, 80, 1001))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert support.field_violations(caught.value) == [
        "plan.quotas[0].notify_at[1]",
        "plan.quotas[0].notify_at[2]",
        "plan.quotas[0].notify_at[3]",
    ]
    stored = admin.UpsertPlan(plan(100, 50, 80)).plan
    assert list(stored.quotas[0].notify_at) == [50, 80, 100]


def test_a_watch_over_a_connect_stream_sends_what_is_stored_and_ends_at_its_timeout(
    api, admin, watch_policy, admin_token, tenant
):
    """Over HTTP/1.1 a Connect server stream is one response: it ends at the call's Connect-Timeout-Ms."""
    world(admin, tenant)
    assert reserve(api, tenant, 100).reserved
    request = pb.WatchEntitlementsRequest(tenant_id=tenant)
    reply = http_support.post(
        watch_policy.http_port,
        "/tollgate.policy.v1.PolicyService/WatchEntitlements",
        http_support.envelope(request.SerializeToString()),
        token=admin_token,
        content_type="application/connect+proto",
        headers={"connect-timeout-ms": "1000"},
    )
    assert reply.status == 200, reply.body
    frames = http_support.envelopes(reply.body)
    sent = [pb.WatchEntitlementsResponse.FromString(payload).notification for flags, payload in frames if flags == 0]
    assert [(n.sequence, n.percent) for n in sent] == [(1, 80), (2, 100)]
    assert frames[-1] == (0x02, b"{}")  # the end of the stream, without an error: resume after sequence 2


def test_a_threshold_is_rounded_up_and_nothing_consumed_crosses_nothing():
    assert (threshold(101, 80), threshold(100, 80), threshold(0, 100), threshold(10, 150)) == (81, 80, 0, 15)
    quota = QuotaLimit(METRIC, pb.QUOTA_PERIOD_DAY, 0, Mode.OFF, (), False, QuotaScope.USER, LimitKind.HARD, (80,))

    def crossed(used, reserved, limit=0):
        balance = Balance(QuotaLimit(**{**quota.__dict__, "limit": limit}), 0, 1, 0, used, reserved, ())
        return [(c.percent, c.user_id) for c in crossings(balance, "t", "alice", "Reserve")]

    assert crossed(0, 0) == []  # an allowance of 0, nothing consumed
    assert crossed(0, 1) == [(80, "alice")]  # a user-scoped quota names its user
    assert crossed(80, 0, limit=101) == [] and crossed(80, 1, limit=101) == [(80, "alice")]


def test_retention_deletes_a_prefix_of_notifications_about_ended_periods_and_a_watch_behind_it_is_told(
    dbs, api, admin, watch_channel, admin_token, tenant
):
    """Periods end: the purge runs here on the tenant alone, with its cutoff past one period's end and then
    another's, where the server's Retention task uses the clock (its own test would purge every test's tenant)."""
    from tollgate.services.policy import tables
    from tollgate.services.policy.repository import notifications
    from tollgate.shared.db import create_engine_for, session_factory

    def quota(period, limit, notify_at):
        return pb.QuotaLimit(
            metric=METRIC, period=period, limit=limit, cap=pb.MODE_OBSERVE, kind=pb.LIMIT_KIND_SOFT, notify_at=notify_at
        )

    day, year = quota(pb.QUOTA_PERIOD_DAY, 100, (50, 100)), quota(pb.QUOTA_PERIOD_YEAR, 900, (10,))
    ps.build_world(admin, tenant, metrics=(METRIC,), quotas=(day, year))
    call = watch(watch_channel, admin_token, tenant)
    for amount in (50, 40, 10):  # the day's 50 %, the year's 10 % (90 of 900), the day's 100 %
        assert reserve(api, tenant, amount).reserved
    stored = take(call, 3)
    call.cancel()
    assert [(n.period, n.percent) for n in stored] == [
        (pb.QUOTA_PERIOD_DAY, 50),
        (pb.QUOTA_PERIOD_YEAR, 10),
        (pb.QUOTA_PERIOD_DAY, 100),
    ]
    day_end, year_end = stored[0].period_end.ToMicroseconds(), stored[1].period_end.ToMicroseconds()

    engine = create_engine_for(dbs.policy_url, schema=tables.SCHEMA, pool_size=1)
    try:

        def purge(ended_before_us: int) -> int:
            with session_factory(engine).begin() as session:
                return notifications.purge_ended(session, tenant, ended_before_us)

        # The day ended, the year did not: only the prefix before the year's notification goes.
        assert purge(day_end + 1) == 1
        resumed = watch(watch_channel, admin_token, tenant, after=0)
        assert [n.sequence for n in take(resumed, 2)] == [2, 3]
        resumed.cancel()
        resumed = watch(watch_channel, admin_token, tenant, after=1)
        assert [n.sequence for n in take(resumed, 1)] == [2]
        resumed.cancel()

        assert purge(year_end + 1) == 2
        assert purge(year_end + 1) == 0  # nothing left to delete, and the head stays where it was
    finally:
        engine.dispose()
    error = refused(watch_channel, admin_token, tenant, 2)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "up to 3 were deleted" in error.details() and "resume after 3" in error.details()
    for after in (0, 3):  # from every notification kept (none), or after the deleted ones: nothing comes
        with pytest.raises(grpc.RpcError) as waited:
            next(watch(watch_channel, admin_token, tenant, after, timeout=0.5))
        assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert refused(watch_channel, admin_token, tenant, 4).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_retention_task_deletes_at_start_what_ended_before_the_retention_keeps_the_rest_and_stops_when_told(
    dbs, tmp_path
):
    """Retention.run itself, on databases of its own (it purges every tenant): each tenant's notifications about
    periods that ended more than POLICY_NOTIFICATION_RETENTION_DAYS ago go at once, as a prefix of its numbers."""
    from tollgate.services.policy import tables
    from tollgate.services.policy.domain.notifications import Crossing
    from tollgate.services.policy.repository import notifications as stored
    from tollgate.services.policy.service.notifications import Retention
    from tollgate.shared.clock import now_micros
    from tollgate.shared.db import create_engine_for, session_factory

    day_us, now_us = 86_400_000_000, now_micros()

    def crossing(tenant: str, end_us: int) -> Crossing:
        day, soft = pb.QUOTA_PERIOD_DAY, pb.LIMIT_KIND_SOFT
        return Crossing(tenant, METRIC, day, 0, soft, "", 80, 80, 100, 80, 0, end_us - day_us, end_us, "Reserve", "")

    ended = {  # by tenant, the ends of the periods its notifications are about, in the order they were stored
        "old": [now_us - 40 * day_us, now_us - 31 * day_us, now_us - 29 * day_us, now_us + day_us],
        "recent": [now_us - 29 * day_us, now_us - 40 * day_us],  # a prefix goes: the second waits for the first
    }
    with support.fresh_databases(dbs.backend, tmp_path) as fresh:
        engine = create_engine_for(fresh.policy_url, schema=tables.SCHEMA, pool_size=2)
        sessions = session_factory(engine)
        try:
            with sessions.begin() as session:
                for tenant, ends in ended.items():
                    first = stored.lock_head(session, tenant) + 1
                    stored.store(session, [crossing(tenant, end_us) for end_us in ends], first, now_us)

            def heads() -> dict[str, tuple[int, int]]:
                with sessions.begin() as session:
                    return {tenant: stored.head(session, tenant) for tenant in ended}

            stopping = threading.Event()
            task = threading.Thread(target=Retention(sessions, retention_days=30).run, args=(stopping,))
            task.start()
            deadline = time.monotonic() + GUARD_SECONDS
            while heads()["old"] == (4, 0) and time.monotonic() < deadline:
                time.sleep(0.05)
            stopping.set()
            task.join(timeout=GUARD_SECONDS)
            assert not task.is_alive()
            assert heads() == {"old": (4, 2), "recent": (2, 0)}
            with sessions.begin() as session:
                assert [n.sequence for n in stored.after(session, "old", 0, 10)] == [3, 4]
                assert [n.sequence for n in stored.after(session, "recent", 0, 10)] == [1, 2]
        finally:
            engine.dispose()


def test_http_watches_whose_callers_left_free_their_threads_without_a_timeout_or_a_notification(
    dbs, usage, usage_token, admin, admin_token, tenant
):
    """A Policy with 2 HTTP threads, so one watch at a time (POLICY_MAX_WATCHES): watches without Connect-Timeout-Ms
    whose clients close their connections once the stored notifications came, while nothing more happens, must each
    free their thread and their slot, or the next watch would be refused for ever; and the other calls are served."""
    import http.client
    import socket

    world(admin, tenant)
    small = support.build_policy(dbs, usage.port, usage_token=usage_token, workers=2)
    try:
        with support.channel(small.port) as channel:
            api = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token)
            assert reserve(api, tenant, 100).reserved  # 80 % and 100 %: what each watch is sent at once
        body = http_support.envelope(pb.WatchEntitlementsRequest(tenant_id=tenant).SerializeToString())
        headers = {"content-type": "application/connect+proto", "authorization": f"Bearer {admin_token}"}

        def open_watch() -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
            """A watch once the slot is free: the one before it leaves at its next poll."""
            deadline = time.monotonic() + GUARD_SECONDS
            while True:
                watcher = http.client.HTTPConnection("127.0.0.1", small.http_port, timeout=GUARD_SECONDS)
                watcher.request("POST", "/tollgate.policy.v1.PolicyService/WatchEntitlements", body, headers)
                response = watcher.getresponse()
                if response.status != 429 or time.monotonic() > deadline:
                    return watcher, response
                response.read()
                watcher.close()
                time.sleep(0.05)

        for _ in range(3):
            watcher, response = open_watch()
            assert response.status == 200
            assert response.read(5)  # the first notification's envelope: the stream is being served
            watcher.sock.shutdown(socket.SHUT_RDWR)
            watcher.close()
        checked = pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", metric=METRIC)
        reply = http_support.post(
            small.http_port, "/tollgate.policy.v1.PolicyService/CheckEntitlement", checked, token=admin_token
        )
        assert reply.status == 200, reply.body
    finally:
        small.stop(grace=1)


def test_watches_past_the_process_limit_or_half_of_it_for_one_tenant_are_refused_while_other_calls_run(
    dbs, usage, usage_token, api, admin, admin_token
):
    """POLICY_MAX_WATCHES 4 of 6 worker threads: two watches of one tenant, four in all; the next is refused
    RESOURCE_EXHAUSTED naming the limit, the other calls are served, and a cancelled watch gives its slot back."""
    tenants = [support.new_tenant() for _ in range(3)]
    for tenant in tenants:
        world(admin, tenant)
        assert reserve(api, tenant, 90).reserved  # 80 %: a notification each watch is sent at once
    small = support.build_policy(dbs, usage.port, usage_token=usage_token, workers=6, max_watches=4)
    try:
        with support.channel(small.port) as channel:

            def opened(tenant: str):
                call = watch(channel, admin_token, tenant)
                assert [n.percent for n in take(call, 1)] == [80]  # served: it holds its slot
                return call

            first, second = opened(tenants[0]), opened(tenants[0])
            mine = refused(channel, admin_token, tenants[0], 0)
            assert mine.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "half of POLICY_MAX_WATCHES" in mine.details() and support.error_reason(mine) == "TOO_MANY_WATCHES"
            others = [opened(tenants[1]), opened(tenants[1])]
            full = refused(channel, admin_token, tenants[2], 0)
            assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "most open watches (4, POLICY_MAX_WATCHES)" in full.details()
            checked = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token).CheckEntitlement(
                pb.CheckEntitlementRequest(tenant_id=tenants[2], user_id="u1", metric=METRIC)
            )
            assert checked.quotas[0].reserved == 90
            first.cancel()
            deadline = time.monotonic() + GUARD_SECONDS
            while True:  # the cancel reaches the server a moment after the client returns from it
                try:
                    late = opened(tenants[2])
                    break
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                    time.sleep(0.02)
            for call in (second, *others, late):
                call.cancel()
    finally:
        small.stop(grace=1)
