"""Scheduled jobs (rollup, retention) run on one instance at a time, through a lease in the database."""

import threading
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from tests import support
from tests.usage_support import event, record
from tollgate.services.usage import metrics
from tollgate.services.usage.repository import in_transaction, leases
from tollgate.services.usage.server import storage_for
from tollgate.services.usage.service import rollups, schedule
from tollgate.shared.db import create_engine_for, session_factory
from tollgate.usage.v1 import usage_pb2 as u

SECOND_US = 1_000_000


def now_us() -> int:
    """The service's clock to the microsecond: a lease taken at a whole minute could expire under the next call."""
    return time.time_ns() // 1000


@pytest.fixture
def sessions(dbs):
    engine = create_engine_for(dbs.usage_url, schema="usage")
    yield session_factory(engine)
    engine.dispose()


def _take(sessions, name, holder, *, at_us, ttl_us=60 * SECOND_US) -> bool:
    return in_transaction(
        sessions, lambda s: leases.take(s, name, holder, at_us, ttl_us, storage=storage_for(sessions.kw["bind"]))
    )


def test_a_lease_has_one_holder_until_it_expires_or_is_given_back(sessions):
    name, start = f"job-{uuid.uuid4().hex[:8]}", now_us()
    assert _take(sessions, name, "a", at_us=start)
    assert not _take(sessions, name, "b", at_us=start + SECOND_US)
    assert _take(sessions, name, "a", at_us=start + SECOND_US)  # the holder renews
    assert _take(sessions, name, "b", at_us=start + 2 * SECOND_US + 60 * SECOND_US)  # "a" expired
    assert not _take(sessions, name, "a", at_us=start + 63 * SECOND_US)
    in_transaction(sessions, lambda s: leases.give_back(s, name, "a"))  # not the holder: changes nothing
    assert not _take(sessions, name, "a", at_us=start + 64 * SECOND_US)
    in_transaction(sessions, lambda s: leases.give_back(s, name, "b"))
    assert _take(sessions, name, "a", at_us=start + 65 * SECOND_US)


def test_of_many_instances_taking_a_lease_at_once_exactly_one_gets_it(sessions):
    name, start, won = f"job-{uuid.uuid4().hex[:8]}", now_us(), []
    barrier = threading.Barrier(6)

    def instance(n: int) -> None:
        barrier.wait()
        if _take(sessions, name, f"instance-{n}", at_us=start):
            won.append(n)

    support.in_threads(instance, 6, timeout=30)
    assert len(won) == 1


def test_a_round_is_skipped_while_another_instance_holds_the_lease_and_gives_it_back_after_running(sessions):
    name, runs = f"job-{uuid.uuid4().hex[:8]}", []
    assert _take(sessions, name, "other", at_us=now_us())
    assert not schedule.run_once(
        name, lambda: runs.append(1) or {}, sessions=sessions, storage=storage_for(sessions.kw["bind"]), holder="me"
    )
    in_transaction(sessions, lambda s: leases.give_back(s, name, "other"))
    assert schedule.run_once(
        name, lambda: runs.append(1) or {}, sessions=sessions, storage=storage_for(sessions.kw["bind"]), holder="me"
    )
    assert runs == [1]
    assert _take(sessions, name, "other", at_us=now_us())  # "me" gave it back after its round


def test_the_scheduled_rollup_waits_while_another_instance_holds_its_lease_and_keeps_its_gauges_fresh(
    dbs, sessions, usage_stub, usage_admin_stub, admin_token, tenant
):
    record(usage_stub, admin_token, tenant, [event("a")])
    held = _take(sessions, "rollup", "another instance", at_us=now_us(), ttl_us=3600 * SECOND_US)
    metrics.ROLLUP_DIRTY_BUCKETS.set(-1)  # a value no skipped round may leave in place
    stopping = threading.Event()
    job = threading.Thread(
        target=rollups.scheduled_job(sessions, 0.05, storage=storage_for(sessions.kw["bind"])), args=(stopping,)
    )
    job.start()
    try:
        deadline = time.monotonic() + 10
        while REGISTRY.get_sample_value("tollgate_rollup_dirty_buckets") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # a skipped round refreshes the gauge: at least this tenant's three marks
        assert REGISTRY.get_sample_value("tollgate_rollup_dirty_buckets") >= 3
        time.sleep(0.25)  # a few more rounds, each skipped
        assert held and _dirty(usage_admin_stub, admin_token, tenant) > 0
        in_transaction(sessions, lambda s: leases.give_back(s, "rollup", "another instance"))
        deadline = time.monotonic() + 10
        while _dirty(usage_admin_stub, admin_token, tenant) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _dirty(usage_admin_stub, admin_token, tenant) == 0
    finally:
        in_transaction(sessions, lambda s: leases.give_back(s, "rollup", "another instance"))
        stopping.set()
        job.join(10)


def _dirty(admin_stub, token, tenant) -> int:
    return admin_stub.GetRollupStatus(
        u.GetRollupStatusRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=30
    ).dirty_buckets
