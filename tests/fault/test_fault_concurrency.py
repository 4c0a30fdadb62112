"""A duplicate storm (8 senders resending overlapping batches of the same events) while 8 admins
write to Policy, and (once RunRollup exists) rollups run concurrently: totals exact, each event
accepted exactly once, the audit chain unbroken and holding exactly one record per write."""

import random
import threading

import grpc
import pytest

from tests import fault_support as fs
from tests import support
from tests.policy_support import Client, build_world
from tests.usage_support import DAY_US, MINUTE_US, now_us, tenant_token, totals, ts
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.usage.v1 import usage_pb2 as u

pytestmark = pytest.mark.parametrize("dbs", ["postgres"], indirect=True)

SENDERS, BATCHES, BATCH_SIZE, SENDS_PER_BATCH = 8, 16, 250, 2
WRITERS, WRITES_PER_WRITER = 8, 10


def storm(stub, token: str, requests, seed: int, answers: list, errors: list) -> None:
    """Send every batch SENDS_PER_BATCH times, in a sender-specific shuffled order."""
    order = [i for i in range(len(requests)) for _ in range(SENDS_PER_BATCH)]
    random.Random(seed).shuffle(order)
    for index in order:
        try:
            answers.append(stub.RecordEvents(requests[index], metadata=support.bearer(token), timeout=60))
        except grpc.RpcError as error:
            errors.append(error.code())


def admin_writes(admin: Client, world, writer: int, errors: list) -> None:
    """Each writer binds new users and flips its own role's override: every write is a change."""
    role = list(world.roles)[writer]
    for n in range(WRITES_PER_WRITER):
        try:
            admin.BindRole(pb.BindRoleRequest(tenant_id=world.tenant, user_id=f"w{writer}-u{n}", role_id=role))
            admin.SetOverride(
                pb.SetOverrideRequest(
                    tenant_id=world.tenant,
                    role_id=role,
                    feature_id=world.feature,
                    cap=pb.MODE_SUGGEST if n % 2 else pb.MODE_OBSERVE,
                    reason=f"writer {writer} write {n}",
                )
            )
        except grpc.RpcError as error:
            errors.append(error.code())


def run_all(targets) -> None:
    threads = [threading.Thread(target=target, args=args) for target, args in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)


def audit_count(admin: Client, tenant: str) -> int:
    count, token = 0, ""
    for _ in range(100):
        page = admin.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=tenant, page_size=100, page_token=token))
        count += len(page.records)
        token = page.next_page_token
        if not token:
            return count
    raise AssertionError("audit listing did not end")


@pytest.mark.slow
def test_a_duplicate_storm_beside_concurrent_admin_writes_counts_once_and_keeps_the_audit_chain_whole(
    dbs, usage_stub, policy_admin_stub, admin_token, tenant
):
    token = tenant_token(dbs, tenant)
    admin = Client(policy_admin_stub, admin_token)
    world = build_world(admin, tenant, role_caps={f"R{w}": pb.MODE_AUTONOMOUS for w in range(WRITERS)})
    requests = [fs.batch(tenant, f"storm{b}", BATCH_SIZE) for b in range(BATCHES)]
    records_before = audit_count(admin, tenant)
    answers, errors = [], []
    run_all(
        [(storm, (usage_stub, token, requests, s, answers, errors)) for s in range(SENDERS)]
        + [(admin_writes, (admin, world, w, errors)) for w in range(WRITERS)]
    )

    assert errors == []
    verdicts = {}
    for response in answers:
        for result in response.results:
            verdicts.setdefault(result.event_id, []).append(result.verdict)
    assert len(answers) == SENDERS * BATCHES * SENDS_PER_BATCH
    assert len(verdicts) == BATCHES * BATCH_SIZE
    # Each event: exactly one ACCEPTED among its 16 sends, every other send DUPLICATE, never CONFLICT.
    assert all(
        sorted(v) == [u.VERDICT_ACCEPTED] + [u.VERDICT_DUPLICATE] * (SENDERS * SENDS_PER_BATCH - 1)
        for v in verdicts.values()
    )
    expected = fs.expected_totals(requests)
    assert totals(usage_stub, token, tenant) == expected
    assert fs.stored_rows(dbs.usage_url, tenant) == expected

    verified = admin.VerifyAudit(pb.VerifyAuditRequest())
    assert verified.ok and verified.first_broken_sequence == 0, verified.problem
    assert audit_count(admin, tenant) - records_before == WRITERS * WRITES_PER_WRITER * 2
    print(
        f"\nconcurrency: {len(answers)} batch sends of {BATCH_SIZE} ({len(verdicts)} distinct events, each sent "
        f"{SENDERS * SENDS_PER_BATCH}x) beside {WRITERS * WRITES_PER_WRITER * 2} admin writes; "
        f"audit records checked {verified.records_checked}"
    )
    bindings = admin.ListBindings(pb.ListBindingsRequest(tenant_id=tenant, page_size=1000)).bindings
    assert {b.user_id for b in bindings} >= {f"w{w}-u{n}" for w in range(WRITERS) for n in range(WRITES_PER_WRITER)}


@pytest.mark.slow
def test_concurrent_rollups_during_a_duplicate_storm_leave_aggregates_equal_to_the_raw_totals(
    dbs, usage_stub, usage_admin_stub, admin_token, tenant
):
    assert run_rollup(usage_admin_stub, admin_token, tenant) == grpc.StatusCode.OK
    token = tenant_token(dbs, tenant)
    requests = [fs.batch(tenant, f"roll{b}", BATCH_SIZE) for b in range(BATCHES // 2)]
    answers, errors, stop = [], [], threading.Event()

    def roll():
        for _ in range(200):  # bounded; ends when the storm does
            if stop.is_set():
                return
            code = run_rollup(usage_admin_stub, admin_token, tenant)
            if code != grpc.StatusCode.OK:
                errors.append(code)

    rollers = [threading.Thread(target=roll) for _ in range(4)]
    for roller in rollers:
        roller.start()
    try:
        run_all([(storm, (usage_stub, token, requests, s, answers, errors)) for s in range(SENDERS)])
    finally:
        stop.set()
        for roller in rollers:
            roller.join(timeout=60)
    assert errors == []
    assert run_rollup(usage_admin_stub, admin_token, tenant) == grpc.StatusCode.OK
    expected = fs.expected_totals(requests)
    assert totals(usage_stub, token, tenant) == expected
    for metric, (quantity, count) in expected.items():
        aggregates = day_aggregates(usage_stub, admin_token, tenant, metric)
        assert (sum(a.total_quantity for a in aggregates), sum(a.event_count for a in aggregates)) == (quantity, count)
        assert not any(a.dirty for a in aggregates)


def run_rollup(stub, token: str, tenant: str) -> grpc.StatusCode:
    code, _ = fs.timed_code(
        lambda: stub.RunRollup(u.RunRollupRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=60)
    )
    return code


def day_aggregates(stub, token: str, tenant: str, metric: str) -> list:
    """Every DAY aggregate of the metric over the last 40 days, following page tokens (bounded)."""
    found, page_token = [], ""
    for _ in range(100):
        page = stub.ListAggregates(
            u.ListAggregatesRequest(
                tenant_id=tenant,
                metric=metric,
                period=u.PERIOD_DAY,
                start_time=ts(now_us() - 40 * DAY_US),
                end_time=ts(now_us() + 60 * MINUTE_US),
                page_size=100,
                page_token=page_token,
            ),
            metadata=support.bearer(token),
            timeout=30,
        )
        found.extend(page.aggregates)
        page_token = page.next_page_token
        if not page_token:
            return found
    raise AssertionError("aggregate listing did not end")
