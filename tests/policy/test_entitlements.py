"""Entitlements through real servers on both backends (docs/entitlements.md): grants, CheckEntitlement,
Reserve/Commit/Release, billing anchors, and modes that agree with balances."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import http_support, support
from tests import policy_support as ps
from tests.conftest import status_of
from tests.usage_support import list_all, totals
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc

METRIC = "api.requests"
HARD, SOFT = pb.LIMIT_KIND_HARD, pb.LIMIT_KIND_SOFT


@pytest.fixture(scope="module")
def ent_policy(dbs, usage):
    """A Policy whose token may also record usage (Commit's events), reading usage fresh on every call."""
    token = support.make_token(dbs, tenant=None, scopes=["usage:read", "usage:write"], service="usage")
    running = support.build_policy(
        dbs,
        usage.port,
        usage_token=token,
        quota_cache_seconds=0,
        balance_usage_seconds=0,
        outbox_interval_seconds=0.05,
    )
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def ent_channel(ent_policy):
    with support.channel(ent_policy.port) as channel:
        yield channel


@pytest.fixture
def admin(ent_channel, admin_token):
    return ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(ent_channel), admin_token)


@pytest.fixture
def api(ent_channel, admin_token):
    return ps.Client(policy_pb2_grpc.PolicyServiceStub(ent_channel), admin_token)


def quota(limit: int, *, kind=HARD, period=pb.QUOTA_PERIOD_MONTH, cap=pb.MODE_OBSERVE, scope=0) -> pb.QuotaLimit:
    return pb.QuotaLimit(metric=METRIC, period=period, limit=limit, cap=cap, kind=kind, scope=scope)


def world(admin, tenant, *quotas: pb.QuotaLimit) -> ps.World:
    return ps.build_world(admin, tenant, metrics=(METRIC,), quotas=quotas or (quota(100),))


def reserve(api, tenant, amount, key=None, user="u1", ttl: float = 60):
    return api.Reserve(
        pb.ReserveRequest(
            tenant_id=tenant,
            user_id=user,
            metric=METRIC,
            amount=amount,
            idempotency_key=key or ps.suffix(),
            ttl=Duration(seconds=int(ttl), nanos=int(ttl % 1 * 1e9)),
        )
    )


def commit(api, tenant, reservation_id, amount):
    return api.Commit(pb.CommitRequest(tenant_id=tenant, reservation_id=reservation_id, amount=amount))


def check(api, tenant, feature="", user="u1") -> pb.CheckEntitlementResponse:
    return api.CheckEntitlement(
        pb.CheckEntitlementRequest(tenant_id=tenant, user_id=user, feature_id=feature, metric="" if feature else METRIC)
    )


def usage_total(usage_stub, admin_token, tenant) -> int:
    return totals(usage_stub, admin_token, tenant).get(METRIC, (0, 0))[0]


def record_directly(usage_stub, admin_token, tenant, quantity):
    from tests.policy.test_active_features import record

    record(usage_stub, admin_token, tenant, METRIC, quantity)


def grant(admin, tenant, amount, **fields) -> pb.Grant:
    return admin.CreateGrant(
        pb.CreateGrantRequest(grant=pb.Grant(tenant_id=tenant, metric=METRIC, amount=amount, **fields))
    ).grant


# Grants


def test_grants_are_created_listed_and_voided_as_audited_writes(admin, tenant):
    world(admin, tenant)
    first = grant(admin, tenant, 50, priority=1, reason="promo")
    second = grant(admin, tenant, 20)
    listed = admin.ListGrants(pb.ListGrantsRequest(tenant_id=tenant)).grants
    assert sorted(g.grant_id for g in listed) == sorted([first.grant_id, second.grant_id])
    voided = admin.VoidGrant(pb.VoidGrantRequest(tenant_id=tenant, grant_id=first.grant_id))
    assert voided.grant.HasField("void_time")
    again = admin.VoidGrant(pb.VoidGrantRequest(tenant_id=tenant, grant_id=first.grant_id))
    assert again.policy_version == voided.policy_version  # voiding twice changes nothing
    actions = [r.action for r in admin.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=tenant)).records]
    assert actions[-3:] == ["CreateGrant", "CreateGrant", "VoidGrant"]
    assert admin.VerifyAudit(pb.VerifyAuditRequest()).ok


def test_bad_grants_are_invalid_arguments_naming_each_field_and_store_nothing(admin, tenant):
    world(admin, tenant)
    past, now = Timestamp(seconds=1_000), Timestamp(seconds=2_000)
    with pytest.raises(grpc.RpcError) as error:
        admin.CreateGrant(
            pb.CreateGrantRequest(
                grant=pb.Grant(
                    tenant_id=tenant, metric="", amount=0, effective_time=now, expire_time=past, user_id="u" * 129
                )
            )
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(support.field_violations(error.value)) == {
        "grant.metric",
        "grant.amount",
        "grant.expire_time",
        "grant.user_id",
    }
    assert list(admin.ListGrants(pb.ListGrantsRequest(tenant_id=tenant)).grants) == []


def test_grants_of_unknown_tenants_or_ids_are_not_found_and_a_tenant_may_not_grant_itself(
    dbs, admin, ent_channel, tenant
):
    world(admin, tenant)
    assert status_of(lambda: grant(admin, "nobody-" + ps.suffix(), 5)) == grpc.StatusCode.NOT_FOUND
    assert (
        status_of(lambda: admin.VoidGrant(pb.VoidGrantRequest(tenant_id=tenant, grant_id="gr_missing")))
        == grpc.StatusCode.NOT_FOUND
    )
    own = support.make_token(dbs, tenant=tenant, scopes=["policy:admin", "policy:read"])
    tenant_admin = ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(ent_channel), own)
    assert status_of(lambda: grant(tenant_admin, tenant, 5)) == grpc.StatusCode.PERMISSION_DENIED
    assert list(tenant_admin.ListGrants(pb.ListGrantsRequest(tenant_id=tenant)).grants) == []


# CheckEntitlement


def test_check_entitlement_reports_allowance_grants_usage_reservations_balance_and_the_period(
    admin, api, usage_stub, admin_token, tenant
):
    w = world(admin, tenant, quota(100))
    grant(admin, tenant, 50)
    record_directly(usage_stub, admin_token, tenant, 30)  # usage recorded straight into Usage counts too
    reserve(api, tenant, 40)
    answer = check(api, tenant, w.feature)
    [q] = answer.quotas
    assert (q.limit, q.granted, q.usage, q.reserved, q.balance, q.overage) == (100, 50, 30, 40, 80, 0)
    assert (q.exhausted, q.decides, q.kind) == (False, True, HARD)
    assert q.period_start.ToSeconds() <= time.time() < q.period_end.ToSeconds()
    assert q.period_start.ToDatetime().day == 1  # no anchor: the calendar month in UTC
    assert answer.has_access and answer.resolution.effective_mode == pb.MODE_AUTONOMOUS
    assert [(g.amount, g.remaining) for g in q.grants] == [(50, 50)]  # the allowance burns first


def test_an_exhausted_quota_caps_the_mode_alike_in_check_entitlement_resolve_mode_and_active_features(
    admin, api, usage_stub, admin_token, tenant
):
    w = world(admin, tenant, quota(10, kind=SOFT, cap=pb.MODE_OBSERVE))
    grant(admin, tenant, 5)
    record_directly(usage_stub, admin_token, tenant, 15)
    answer = check(api, tenant, w.feature)
    resolved = api.ResolveMode(pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=w.feature))
    active = api.ListActiveFeatures(pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id="u1"))
    assert answer.quotas[0].exhausted and answer.quotas[0].overage == 0 and answer.quotas[0].balance == 0
    assert answer.resolution.effective_mode == resolved.resolution.effective_mode == pb.MODE_OBSERVE
    assert [f.effective_mode for f in active.features] == [pb.MODE_OBSERVE]
    entry = [e for e in resolved.resolution.basis if e.source == pb.CAP_SOURCE_QUOTA][0]
    assert entry.binding and entry.detail == f"quota {METRIC} 10/month reached: 15 used of 15 allowed (10 + 5 granted)"
    assert [e.detail for e in answer.resolution.basis] == [e.detail for e in resolved.resolution.basis]
    assert answer.has_access  # soft: the mode is capped, not the access


def test_a_spent_hard_quota_denies_access(admin, api, usage_stub, admin_token, tenant):
    w = world(admin, tenant, quota(10, cap=pb.MODE_SUGGEST))
    record_directly(usage_stub, admin_token, tenant, 10)
    answer = check(api, tenant, w.feature)
    assert not answer.has_access and answer.resolution.effective_mode == pb.MODE_SUGGEST


def test_check_entitlement_refuses_bad_requests_precisely(admin, api, tenant):
    w = world(admin, tenant)
    with pytest.raises(grpc.RpcError) as error:
        api.CheckEntitlement(pb.CheckEntitlementRequest(tenant_id=tenant))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(support.field_violations(error.value)) == {"user_id", "feature_id"}
    unknown = pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", feature_id="nope")
    assert status_of(lambda: api.CheckEntitlement(unknown)) == grpc.StatusCode.NOT_FOUND
    assert check(api, tenant, w.feature).quotas  # the same tenant answers once asked well


# Reserve, Commit, Release


def test_a_hard_quota_refuses_what_the_balance_cannot_hold_and_names_the_quota(admin, api, tenant):
    world(admin, tenant, quota(100))
    taken = reserve(api, tenant, 70)
    refused = reserve(api, tenant, 31)
    fits = reserve(api, tenant, 30)
    assert taken.reserved and fits.reserved and not refused.reserved
    assert refused.refusal == f"quota {METRIC} 100/month hard: 0 used of 100 allowed: 31 asked, 30 left"
    assert not refused.HasField("reservation")
    assert [q.balance for q in fits.quotas] == [0]


def test_a_soft_quota_takes_any_reservation(admin, api, tenant):
    world(admin, tenant, quota(10, kind=SOFT))
    assert reserve(api, tenant, 50).reserved


def test_a_reserve_retried_with_its_key_answers_the_same_reservation_and_a_reused_key_is_refused(admin, api, tenant):
    world(admin, tenant, quota(100))
    first = reserve(api, tenant, 60, key="k1").reservation
    again = reserve(api, tenant, 60, key="k1").reservation
    assert again.reservation_id == first.reservation_id
    assert check(api, tenant).quotas[0].reserved == 60  # held once
    assert status_of(lambda: reserve(api, tenant, 61, key="k1")) == grpc.StatusCode.FAILED_PRECONDITION


# What came before, as (operation, user, amount): the open reservation a commit or release finishes is the oldest.
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "reserve", "commit", "release"]), st.sampled_from(["ann", "bo"]), st.integers(1, 5)
    ),
    min_size=6,
    max_size=24,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_STEPS)
def test_each_reserve_holds_exactly_when_every_hard_quota_can_take_it_and_answers_the_balances_after(admin, api, steps):
    """A tenant's hard quota of 12 with a grant of 3 and a user's hard quota of 7: each Reserve holds exactly when
    usage (committed amounts) + open reservations + the amount stays within both, and its answer's balances are what
    is left after it, whichever way it is decided (on PostgreSQL a lone Reserve of a metric seen before is one
    message, entitlements.reserve_if_room, and a refusal is decided again the usual way)."""
    tenant = support.new_tenant()
    world(admin, tenant, quota(12), quota(7, scope=pb.QUOTA_SCOPE_USER))
    grant(admin, tenant, 3)
    consumed = {"": 0, "ann": 0, "bo": 0}
    open_: list[tuple[str, str, int]] = []
    for operation, user, amount in steps:
        if operation == "reserve":
            fits = consumed[""] + amount <= 15 and consumed[user] + amount <= 7
            answer = reserve(api, tenant, amount, user=user)
            assert answer.reserved == fits, (operation, user, amount, consumed, answer.refusal)
            if not fits:
                assert "hard" in answer.refusal
                continue
            consumed[""] += amount
            consumed[user] += amount
            open_.append((answer.reservation.reservation_id, user, amount))
            balances = {q.scope: q.balance for q in answer.quotas}
            assert balances == {pb.QUOTA_SCOPE_TENANT: 15 - consumed[""], pb.QUOTA_SCOPE_USER: 7 - consumed[user]}
        elif open_:
            reservation_id, owner, held = open_.pop(0)
            if operation == "commit":
                commit(api, tenant, reservation_id, min(amount, held))
                freed = held - min(amount, held)
            else:
                api.Release(pb.ReleaseRequest(tenant_id=tenant, reservation_id=reservation_id))
                freed = held
            consumed[""] -= freed
            consumed[owner] -= freed


def test_commit_records_the_usage_event_once_however_often_it_is_retried_and_frees_the_rest(
    admin, api, usage_stub, admin_token, tenant
):
    world(admin, tenant, quota(100))
    reservation = reserve(api, tenant, 40).reservation
    answers = [commit(api, tenant, reservation.reservation_id, 25) for _ in range(10)]
    assert {a.reservation.state for a in answers} == {pb.RESERVATION_STATE_COMMITTED}
    assert answers[0].reservation.recorded_in_usage and answers[0].reservation.committed_amount == 25
    events = list_all(usage_stub, admin_token, tenant)
    assert [(e.event.event_id, e.event.quantity, e.event.actor_id) for e in events] == [
        (answers[0].reservation.usage_event_id, 25, "u1")
    ]
    [q] = check(api, tenant).quotas
    assert (q.usage, q.reserved, q.balance) == (25, 0, 75)
    other = pb.CommitRequest(tenant_id=tenant, reservation_id=reservation.reservation_id, amount=24)
    assert status_of(lambda: api.Commit(other)) == grpc.StatusCode.FAILED_PRECONDITION


def test_concurrent_commits_of_two_metrics_each_commit_once_answer_alike_and_reach_usage_once(
    admin, api, usage_stub, admin_token, tenant
):
    """A tenant's Commits arriving together are decided in one transaction and sent in one call: each
    reservation is committed once, its concurrent retries answer that commit, a wrong amount is refused alone."""
    from concurrent.futures import ThreadPoolExecutor

    other = "leads.processed"
    ps.build_world(
        admin,
        tenant,
        metrics=(METRIC, other),
        quotas=(
            quota(1_000),
            pb.QuotaLimit(metric=other, period=pb.QUOTA_PERIOD_MONTH, limit=1_000, cap=pb.MODE_OBSERVE, kind=HARD),
        ),
    )
    reservations = []
    for n in range(12):
        request = pb.ReserveRequest(
            tenant_id=tenant, user_id="u1", metric=(METRIC, other)[n % 2], amount=10, idempotency_key=ps.suffix()
        )
        reservations.append(api.Reserve(request).reservation)
    asks = [(r, 1 + n % 5) for n, r in enumerate(reservations) for _ in range(3)]  # each one three times at once
    asks.append((reservations[0], 9))  # another amount for the first: refused, whichever order it lands in

    def attempt(ask):
        reservation, amount = ask
        try:
            return commit(api, tenant, reservation.reservation_id, amount).reservation
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(len(asks)) as pool:
        answers = list(pool.map(attempt, asks))
    refused = [n for n, answer in enumerate(answers) if answer == grpc.StatusCode.FAILED_PRECONDITION]
    assert refused in ([len(asks) - 1], [0, 1, 2])  # the odd amount, or the three that came after it
    commits = {
        (r.reservation_id, a.usage_event_id, a.committed_amount)
        for (r, _), a in zip(asks, answers)
        if a not in (grpc.StatusCode.FAILED_PRECONDITION,)
    }
    assert sorted(rid for rid, _, _ in commits) == sorted(r.reservation_id for r in reservations)  # one answer each
    deadline = time.monotonic() + 10
    while True:  # a send that missed its call's deadline is the outbox loop's
        events = list_all(usage_stub, admin_token, tenant)
        if len(events) >= len(commits) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sorted((e.event.event_id, e.event.quantity) for e in events) == sorted((e, a) for _, e, a in commits)
    metric_of = {r.reservation_id: r.metric for r in reservations}
    assert totals(usage_stub, admin_token, tenant) == {
        metric: (sum(a for rid, _, a in commits if metric_of[rid] == metric), 6) for metric in (METRIC, other)
    }


def test_a_reused_usage_answer_still_counts_every_commit_at_once_and_direct_usage_once_reread(
    dbs, usage, admin, usage_stub, admin_token, tenant
):
    """POLICY_BALANCE_USAGE_SECONDS: Usage's answer behind a balance is reused, yet what flows through Commit counts
    the moment it is committed (delivered or not), and usage recorded straight into Usage once Usage is asked again."""
    world(admin, tenant, quota(100))
    reusing = support.build_policy(dbs, usage.port, quota_cache_seconds=0, balance_usage_seconds=60)
    try:
        with support.channel(reusing.port) as channel:
            api = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token)
            assert check(api, tenant).quotas[0].usage == 0  # Usage asked: its answer is now reused
            held = reserve(api, tenant, 40).reservation
            assert commit(api, tenant, held.reservation_id, 25).reservation.recorded_in_usage
            assert totals(usage_stub, admin_token, tenant)[METRIC] == (
                25,
                1,
            )  # Usage has it; the reused answer does not
            [q] = check(api, tenant).quotas
            assert (q.usage, q.reserved, q.balance) == (25, 0, 75)
            assert not reserve(api, tenant, 76).reserved and reserve(api, tenant, 75).reserved
            record_directly(usage_stub, admin_token, tenant, 30)
            assert check(api, tenant).quotas[0].usage == 25  # not asked again within the 60 s
        fresh = support.build_policy(dbs, usage.port, quota_cache_seconds=0, balance_usage_seconds=0)
        try:
            with support.channel(fresh.port) as channel:
                api = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token)
                [q] = check(api, tenant).quotas
                assert (q.usage, q.reserved, q.balance) == (55, 75, 0)
        finally:
            fresh.stop(grace=1)
    finally:
        reusing.stop(grace=1)


def test_a_check_asked_again_is_answered_alike_until_what_it_holds_the_policy_or_a_grants_end_changes_it(
    dbs, usage, admin, admin_token, tenant
):
    """With Usage's answer reused, a CheckEntitlement asked again is given the answer kept of it (over gRPC and HTTP
    alike) while the policy, what Policy holds and the instant before a grant's end are the same; each change shows
    at once."""
    feature = world(admin, tenant, quota(100)).feature
    brief = grant(admin, tenant, 20, expire_time=Timestamp(seconds=int(time.time()) + 4))
    reusing = support.build_policy(dbs, usage.port, quota_cache_seconds=0, balance_usage_seconds=60)
    try:
        with support.channel(reusing.port) as channel:
            api = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token)
            first = check(api, tenant, feature=feature)
            assert [(q.granted, q.reserved, q.balance) for q in first.quotas] == [(20, 0, 120)]
            request = pb.CheckEntitlementRequest(tenant_id=tenant, user_id="u1", feature_id=feature)
            path = "/tollgate.policy.v1.PolicyService/CheckEntitlement"
            for _ in range(3):  # made, then given as kept, then its encoding kept
                assert check(api, tenant, feature=feature) == first
                over_http = http_support.post(reusing.http_port, path, request, token=admin_token)
                assert over_http.status == 200 and over_http.message(pb.CheckEntitlementResponse) == first
            assert reserve(api, tenant, 30).reserved
            [q] = check(api, tenant, feature=feature).quotas
            assert (q.granted, q.reserved, q.balance) == (20, 30, 90)
            grant(admin, tenant, 5)  # a new policy version, which this Policy sees at its next poll
            seen_by = time.time() + 10
            while check(api, tenant, feature=feature).quotas[0].granted != 25 and time.time() < seen_by:
                time.sleep(0.05)
            assert check(api, tenant, feature=feature).quotas[0].granted == 25
            while time.time() < brief.expire_time.seconds:
                time.sleep(0.05)
            [q] = check(api, tenant, feature=feature).quotas  # nothing changed but the instant: the grant ended
            assert (q.granted, q.reserved, q.balance) == (5, 30, 75)
    finally:
        reusing.stop(grace=1)


def test_a_check_kept_while_usages_numbers_stay_shows_usage_recorded_straight_into_usage_when_asked_again(
    admin, api, usage_stub, admin_token, tenant
):
    """The module's Policy asks Usage at every call: an answer is kept while Usage's numbers are the same, and made
    anew, with them, once they differ."""
    world(admin, tenant, quota(100))
    first = check(api, tenant)
    assert check(api, tenant) == first and first.quotas[0].usage == 0  # Usage asked anew, the same numbers: kept
    record_directly(usage_stub, admin_token, tenant, 30)
    [q] = check(api, tenant).quotas
    assert (q.usage, q.balance) == (30, 70)


def test_commit_refuses_more_than_reserved_and_release_frees_it_all(admin, api, usage_stub, admin_token, tenant):
    world(admin, tenant, quota(100))
    reservation = reserve(api, tenant, 40).reservation
    with pytest.raises(grpc.RpcError) as error:
        commit(api, tenant, reservation.reservation_id, 41)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert support.field_violations(error.value) == ["amount"]
    released = api.Release(pb.ReleaseRequest(tenant_id=tenant, reservation_id=reservation.reservation_id))
    assert released.reservation.state == pb.RESERVATION_STATE_RELEASED
    assert check(api, tenant).quotas[0].balance == 100
    assert status_of(lambda: commit(api, tenant, reservation.reservation_id, 1)) == grpc.StatusCode.FAILED_PRECONDITION
    assert usage_total(usage_stub, admin_token, tenant) == 0


def test_an_expired_reservation_frees_its_amount_and_cannot_be_committed(admin, api, tenant):
    world(admin, tenant, quota(100))
    reservation = reserve(api, tenant, 90, ttl=0.3).reservation
    assert not reserve(api, tenant, 20).reserved
    while time.time() < reservation.expire_time.ToMicroseconds() / 1e6:
        time.sleep(0.05)
    assert reserve(api, tenant, 20).reserved
    with pytest.raises(grpc.RpcError) as error:
        commit(api, tenant, reservation.reservation_id, 10)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in error.value.details()


def test_reserve_commit_and_release_refuse_bad_or_unknown_input_precisely(admin, api, tenant):
    world(admin, tenant, quota(100))
    with pytest.raises(grpc.RpcError) as error:
        api.Reserve(pb.ReserveRequest(tenant_id=tenant, metric=METRIC, amount=0, ttl=Duration(seconds=-1)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(support.field_violations(error.value)) == {"user_id", "amount", "ttl", "idempotency_key"}
    other = pb.ReserveRequest(tenant_id=tenant, user_id="u", metric="other.metric", amount=1, idempotency_key="k")
    assert status_of(lambda: api.Reserve(other)) == grpc.StatusCode.FAILED_PRECONDITION
    missing = pb.CommitRequest(tenant_id=tenant, reservation_id="rsv_missing", amount=1)
    assert status_of(lambda: api.Commit(missing)) == grpc.StatusCode.NOT_FOUND
    gone = pb.ReleaseRequest(tenant_id=tenant, reservation_id="rsv_missing")
    assert status_of(lambda: api.Release(gone)) == grpc.StatusCode.NOT_FOUND
    assert check(api, tenant).quotas[0].reserved == 0


def test_a_tenant_cannot_touch_another_tenants_reservation(dbs, admin, api, ent_channel, tenant):
    world(admin, tenant, quota(100))
    reservation = reserve(api, tenant, 10).reservation
    stranger = support.new_tenant()
    token = support.make_token(dbs, tenant=stranger, scopes=["policy:write", "policy:read"])
    theirs = ps.Client(policy_pb2_grpc.PolicyServiceStub(ent_channel), token)
    cross = pb.CommitRequest(tenant_id=tenant, reservation_id=reservation.reservation_id, amount=1)
    assert status_of(lambda: theirs.Commit(cross)) == grpc.StatusCode.PERMISSION_DENIED
    own = pb.CommitRequest(tenant_id=stranger, reservation_id=reservation.reservation_id, amount=1)
    assert status_of(lambda: theirs.Commit(own)) == grpc.StatusCode.NOT_FOUND
    assert check(api, tenant).quotas[0].reserved == 10


def test_a_user_scoped_quota_counts_each_users_own_usage_and_reservations(admin, api, tenant):
    world(admin, tenant, quota(10, period=pb.QUOTA_PERIOD_DAY, scope=pb.QUOTA_SCOPE_USER))
    assert reserve(api, tenant, 10, user="alice").reserved
    assert not reserve(api, tenant, 1, user="alice").reserved
    assert reserve(api, tenant, 10, user="bob").reserved
    [q] = check(api, tenant, user="alice").quotas
    assert (q.scope, q.reserved, q.balance) == (pb.QUOTA_SCOPE_USER, 10, 0)


def test_a_grant_for_one_user_adds_to_that_users_user_scoped_quotas_only(admin, api, tenant):
    world(admin, tenant, quota(10, period=pb.QUOTA_PERIOD_DAY, scope=pb.QUOTA_SCOPE_USER), quota(100))
    given = grant(admin, tenant, 5, user_id="alice")
    shared = grant(admin, tenant, 7)
    listed = admin.ListGrants(pb.ListGrantsRequest(tenant_id=tenant)).grants
    assert {(g.grant_id, g.user_id) for g in listed} == {(given.grant_id, "alice"), (shared.grant_id, "")}
    alices = admin.ListGrants(pb.ListGrantsRequest(tenant_id=tenant, user_id="alice")).grants
    assert [g.grant_id for g in alices] == [given.grant_id]
    bad = lambda: admin.ListGrants(pb.ListGrantsRequest(tenant_id=tenant, user_id="u" * 129))  # noqa: E731
    assert status_of(bad) == grpc.StatusCode.INVALID_ARGUMENT

    def granted(user: str) -> dict[str, tuple[int, int, list[str]]]:
        return {
            "user" if q.scope == pb.QUOTA_SCOPE_USER else "tenant": (
                q.granted,
                q.balance,
                [g.grant_id for g in q.grants],
            )
            for q in check(api, tenant, user=user).quotas
        }

    assert granted("alice") == {"user": (5, 15, [given.grant_id]), "tenant": (7, 107, [shared.grant_id])}
    assert granted("bob") == {"user": (0, 10, []), "tenant": (7, 107, [shared.grant_id])}
    assert reserve(api, tenant, 15, user="alice").reserved  # her allowance and her grant
    assert not reserve(api, tenant, 11, user="bob").reserved  # alice's grant is not his
    assert reserve(api, tenant, 10, user="bob").reserved
    assert granted("alice")["user"] == (5, 0, [given.grant_id])


def test_a_users_grant_opens_a_per_user_quota_of_0_to_that_user_alone_and_modes_agree(admin, api, tenant):
    zero = quota(0, period=pb.QUOTA_PERIOD_DAY, scope=pb.QUOTA_SCOPE_USER, cap=pb.MODE_OFF)
    w = world(admin, tenant, zero)
    grant(admin, tenant, 3, user_id="alice")
    for user, allowed in (("alice", True), ("bob", False)):
        answer = check(api, tenant, feature=w.feature, user=user)
        resolved = api.ResolveMode(pb.ResolveModeRequest(tenant_id=tenant, user_id=user, feature_id=w.feature))
        active = api.ListActiveFeatures(pb.ListActiveFeaturesRequest(tenant_id=tenant, user_id=user))
        assert answer.has_access is allowed and answer.quotas[0].balance == (3 if allowed else 0)
        assert answer.resolution.effective_mode == resolved.resolution.effective_mode
        assert (resolved.resolution.effective_mode > pb.MODE_OFF) is allowed
        assert [f.feature_id for f in active.features] == ([w.feature] if allowed else [])


# Billing anchors


def test_a_billing_anchor_in_a_zone_sets_the_period_and_a_bad_zone_is_refused(admin, api, tenant):
    w = world(admin, tenant, quota(100))
    anchor = Timestamp(seconds=1_769_850_000)  # 2026-01-31 09:00 UTC
    subscription = pb.Subscription(
        tenant_id=tenant,
        plan_id=w.plan,
        status=pb.SUBSCRIPTION_STATUS_ACTIVE,
        billing_anchor=anchor,
        time_zone="Europe/Paris",
    )
    stored = admin.SetSubscription(pb.SetSubscriptionRequest(subscription=subscription)).subscription
    assert (stored.billing_anchor, stored.time_zone) == (anchor, "Europe/Paris")
    [q] = check(api, tenant).quotas
    start = q.period_start.ToDatetime()
    assert start.day in (28, 29, 30, 31) and (start.hour, start.minute) in ((9, 0), (8, 0))  # 10:00 in Paris
    bad = pb.Subscription(tenant_id=tenant, plan_id=w.plan, status=1, billing_anchor=anchor, time_zone="Mars/Olympus")
    with pytest.raises(grpc.RpcError) as error:
        admin.SetSubscription(pb.SetSubscriptionRequest(subscription=bad))
    assert support.field_violations(error.value) == ["subscription.time_zone"]
    assert admin.GetSubscription(pb.GetSubscriptionRequest(tenant_id=tenant)).subscription.time_zone == "Europe/Paris"


def test_a_policy_token_without_usage_write_keeps_commits_in_the_outbox_and_quota_reads_working(
    dbs, usage, usage_stub, api, admin_token, tenant
):
    # A Policy of its own holding a usage:read token only: Usage refuses its RecordEvents (a configuration to fix).
    # Stopped at the end, so its outbox does not keep calling the shared Usage server for the rest of the session.
    read_only = support.make_token(dbs, tenant=None, scopes=["usage:read"], service="usage")
    running = support.build_policy(dbs, usage.port, usage_token=read_only, quota_cache_seconds=0)
    try:
        with support.channel(running.port) as channel:
            reader_admin = ps.Client(policy_pb2_grpc.PolicyAdminServiceStub(channel), admin_token)
            reader = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token)
            w = world(reader_admin, tenant, quota(100))
            reservation = reserve(reader, tenant, 10).reservation
            committed = commit(reader, tenant, reservation.reservation_id, 10).reservation
            assert committed.state == pb.RESERVATION_STATE_COMMITTED and not committed.recorded_in_usage
            resolved = reader.ResolveMode(pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=w.feature))
            entry = [e for e in resolved.resolution.basis if e.source == pb.CAP_SOURCE_QUOTA][0]
            # The circuit is shut: the quota read Usage (0 used, or 10 once this module's Policy, whose token may
            # write, has delivered the commit from the shared outbox: its loop may run first on a slow machine).
            assert entry.detail in {
                f"quota {METRIC} 100/month not reached: {used} used of 100 allowed" for used in (0, 10)
            }
            # Counted while in the outbox.
            [q] = check(reader, tenant).quotas
            assert (q.usage, q.balance) == (10, 90)
    finally:
        running.stop(grace=1)
    # This module's Policy, whose token may write, reads the same outbox and delivers the event, once; waiting for
    # it here also leaves no delivery due to land in a later test's window on the shared Usage server.
    deadline = time.monotonic() + 30
    while usage_total(usage_stub, admin_token, tenant) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert usage_total(usage_stub, admin_token, tenant) == 10
    [q] = check(api, tenant).quotas
    assert (q.usage, q.balance) == (10, 90)


def test_grants_that_start_later_expire_or_are_voided_mid_period_count_only_while_active(admin, api, tenant):
    world(admin, tenant, quota(100))
    now = time.time()
    later = grant(admin, tenant, 7, effective_time=Timestamp(seconds=int(now) + 3600))
    brief = grant(admin, tenant, 20, expire_time=Timestamp(seconds=int(now) + 2))
    voided = grant(admin, tenant, 40)
    assert check(api, tenant).quotas[0].granted == 60  # the later one does not count yet
    admin.VoidGrant(pb.VoidGrantRequest(tenant_id=tenant, grant_id=voided.grant_id))
    assert check(api, tenant).quotas[0].granted == 20
    while time.time() < brief.expire_time.seconds:
        time.sleep(0.05)
    [q] = check(api, tenant).quotas
    assert (q.granted, q.balance, [g.grant_id for g in q.grants]) == (0, 100, [])
    assert later.grant_id in [g.grant_id for g in admin.ListGrants(pb.ListGrantsRequest(tenant_id=tenant)).grants]


def test_with_a_daily_hard_and_a_monthly_soft_quota_the_daily_one_refuses_and_decides(admin, api, tenant):
    world(admin, tenant, quota(10, period=pb.QUOTA_PERIOD_DAY), quota(100, kind=SOFT))
    refused = reserve(api, tenant, 11)
    assert not refused.reserved
    assert refused.refusal.startswith(f"quota {METRIC} 10/day hard:")
    assert [(q.period, q.decides) for q in refused.quotas] == [
        (pb.QUOTA_PERIOD_DAY, True),
        (pb.QUOTA_PERIOD_MONTH, False),
    ]
    taken = reserve(api, tenant, 10)
    assert [q.balance for q in taken.quotas] == [0, 90]


def test_the_sweep_marks_expired_reservations_in_storage(dbs, admin, api, tenant):
    from sqlalchemy import select

    from tollgate.services.policy import tables
    from tollgate.shared.db import create_engine_for

    world(admin, tenant, quota(100))
    reservation = reserve(api, tenant, 5, ttl=0.2).reservation
    engine = create_engine_for(dbs.policy_url, schema=tables.SCHEMA, pool_size=1)
    query = select(tables.reservations.c.state).where(
        tables.reservations.c.reservation_id == reservation.reservation_id
    )
    try:
        state = None
        for _ in range(200):  # bounded: the outbox loop runs every 0.05 s here
            with engine.connect() as connection:
                state = connection.execute(query).scalar()
            if state == pb.RESERVATION_STATE_EXPIRED:
                break
            time.sleep(0.05)
    finally:
        engine.dispose()
    assert state == pb.RESERVATION_STATE_EXPIRED
    released = api.Release(pb.ReleaseRequest(tenant_id=tenant, reservation_id=reservation.reservation_id))
    assert released.reservation.state == pb.RESERVATION_STATE_EXPIRED  # releasing it changes nothing


def test_a_commit_delivered_at_once_is_never_due_for_the_outbox_loop_again(dbs, admin, api, tenant):
    from tollgate.services.policy import tables
    from tollgate.services.policy.repository import entitlements
    from tollgate.shared.db import create_engine_for

    world(admin, tenant, quota(100))
    reservation = reserve(api, tenant, 5).reservation
    committed = commit(api, tenant, reservation.reservation_id, 4).reservation
    assert committed.recorded_in_usage
    engine = create_engine_for(dbs.policy_url, schema=tables.SCHEMA, pool_size=1)
    try:
        with engine.connect() as connection:  # the pass's own statements, rolled back: nothing else is touched
            far_ahead_us = (int(time.time()) + 86_400) * 1_000_000
            due = entitlements.outbox_pass(connection, far_ahead_us, 0, 1_000_000)
            connection.rollback()
    finally:
        engine.dispose()
    assert committed.usage_event_id not in {event.event_id for event in due}


def test_the_outbox_pass_forgets_delivered_rows_past_the_horizon_but_the_latest(dbs, admin, api, tenant):
    from sqlalchemy import select

    from tollgate.services.policy import tables
    from tollgate.services.policy.repository import entitlements
    from tollgate.shared.db import create_engine_for

    world(admin, tenant, quota(100))
    events = []
    for amount in (3, 4):  # two commits, delivered one after the other: two delivery numbers
        reservation = reserve(api, tenant, amount).reservation
        events.append(commit(api, tenant, reservation.reservation_id, amount).reservation.usage_event_id)
    outbox = tables.usage_outbox
    mine = select(outbox.c.event_id).where(outbox.c.tenant_id == tenant)
    engine = create_engine_for(dbs.policy_url, schema=tables.SCHEMA, pool_size=1)
    try:
        with engine.connect() as connection:  # rolled back: other tests' rows stay as they were
            assert set(connection.execute(mine).scalars()) == set(events)
            far_ahead_us = (int(time.time()) + 86_400) * 1_000_000
            entitlements.outbox_pass(connection, far_ahead_us, far_ahead_us, 1_000)
            kept = set(connection.execute(mine).scalars())
            connection.rollback()
    finally:
        engine.dispose()
    assert kept == {events[1]}  # the latest delivery stays, so numbering never restarts


def test_every_reserve_is_counted_in_exactly_one_batch_and_a_lone_call_is_a_batch_of_one(admin, api, tenant):
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client import REGISTRY

    def batches() -> tuple[float, float]:
        """(transactions, calls decided in them) so far, in this process's Policy servers."""
        count = REGISTRY.get_sample_value("tollgate_policy_reserve_batch_calls_count") or 0.0
        return count, REGISTRY.get_sample_value("tollgate_policy_reserve_batch_calls_sum") or 0.0

    world(admin, tenant, quota(1_000))
    before = batches()
    for _ in range(3):
        assert reserve(api, tenant, 1).reserved
    assert batches() == (before[0] + 3, before[1] + 3)
    before = batches()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: reserve(api, tenant, 1), range(16)))
    assert all(answer.reserved for answer in answers)
    count, calls = batches()
    assert calls == before[1] + 16 and before[0] < count <= before[0] + 16
