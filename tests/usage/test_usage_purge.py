"""PurgeEvents on SQLite and PostgreSQL: totals stay exact, unanswerable ranges are refused, dirty
buckets keep their events, and the purged era is closed to late events."""

import threading
import time

import grpc
import pytest
from sqlalchemy import select

from tests import support
from tests.usage_support import DAY_US, MINUTE_US, event, list_all, now_us, record, totals, ts
from tollgate.services.usage import tables
from tollgate.services.usage.domain.buckets import HOUR_US, Period, start_of
from tollgate.services.usage.server import storage_for
from tollgate.services.usage.service import purge
from tollgate.shared.db import create_engine_for, session_factory
from tollgate.usage.v1 import usage_pb2 as u


@pytest.fixture
def history(usage_stub, usage_admin_stub, admin_token, tenant):
    """40 events, 7 hours apart, from a Monday three weeks ago; rolled up unless a test says otherwise."""
    base = start_of(Period.WEEK, now_us() - 21 * DAY_US)
    instants = [base + k * 7 * HOUR_US + 5 * MINUTE_US for k in range(40)]
    sent = [event(f"e{k}", quantity=k + 1, at_us=at, actor_id=f"a{k % 3}") for k, at in enumerate(instants)]
    assert {r.verdict for r in record(usage_stub, admin_token, tenant, sent)} == {u.VERDICT_ACCEPTED}
    return base, instants


def _purge(admin_stub, token, tenant, before_us, dry_run=False):
    return admin_stub.PurgeEvents(
        u.PurgeEventsRequest(tenant_id=tenant, before_time=ts(before_us), dry_run=dry_run),
        metadata=support.bearer(token),
        timeout=60,
    )


def _roll_up(admin_stub, token, tenant):
    admin_stub.RunRollup(u.RunRollupRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=60)


def _refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_purge_keeps_aligned_totals_exact_and_refuses_ranges_that_need_purged_rows(
    usage_stub, usage_admin_stub, admin_token, tenant, history
):
    base, instants = history
    _roll_up(usage_admin_stub, admin_token, tenant)
    end = now_us()
    before = totals(usage_stub, admin_token, tenant, start_us=base, end_us=end)
    cutoff = base + 5 * DAY_US + 5 * HOUR_US + 30 * MINUTE_US
    purged = sum(1 for at in instants if at < cutoff)

    report = _purge(usage_admin_stub, admin_token, tenant, cutoff)

    assert (report.events_deleted, report.events_kept, report.dry_run) == (purged, 0, False)
    assert report.purged_before == ts(cutoff)
    assert len(list_all(usage_stub, admin_token, tenant)) == 40 - purged
    assert totals(usage_stub, admin_token, tenant, start_us=base, end_us=end) == before
    after_cutoff = {"api.requests": (sum(k + 1 for k, at in enumerate(instants) if at >= cutoff), 40 - purged)}
    assert totals(usage_stub, admin_token, tenant, start_us=cutoff, end_us=end) == after_cutoff
    for start, fields in [(base + 30 * MINUTE_US, {}), (base, {"actor_id": "a1"}), (base, {"group_by_actor": True})]:
        error = _refused(
            lambda start=start, fields=fields: totals(
                usage_stub, admin_token, tenant, start_us=start, end_us=end, **fields
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ts(cutoff).ToJsonString() in error.details()
    assert totals(usage_stub, admin_token, tenant, start_us=cutoff, end_us=end, actor_id="a1") == {
        ("api.requests", "a1"): (
            sum(k + 1 for k, at in enumerate(instants) if at >= cutoff and k % 3 == 1),
            sum(1 for k, at in enumerate(instants) if at >= cutoff and k % 3 == 1),
        )
    }


def test_a_dry_run_reports_the_same_counts_and_changes_nothing(
    usage_stub, usage_admin_stub, admin_token, tenant, history
):
    base, instants = history
    _roll_up(usage_admin_stub, admin_token, tenant)
    cutoff = base + 3 * DAY_US + 30 * MINUTE_US
    dry = _purge(usage_admin_stub, admin_token, tenant, cutoff, dry_run=True)
    assert dry.dry_run and dry.events_deleted == sum(1 for at in instants if at < cutoff) and dry.events_kept == 0
    assert len(list_all(usage_stub, admin_token, tenant)) == 40
    # No horizon was recorded: a range with raw edges before the cutoff still answers.
    assert totals(usage_stub, admin_token, tenant, start_us=base + 30 * MINUTE_US, end_us=now_us())
    real = _purge(usage_admin_stub, admin_token, tenant, cutoff)
    assert (real.events_deleted, real.events_kept) == (dry.events_deleted, dry.events_kept)


def test_a_dry_run_answers_the_horizon_in_force_not_its_cutoff(usage_admin_stub, admin_token, tenant, history):
    base, _ = history
    _roll_up(usage_admin_stub, admin_token, tenant)
    first, later = base + 2 * DAY_US, base + 4 * DAY_US
    never_purged = _purge(usage_admin_stub, admin_token, tenant, first, dry_run=True)
    assert not never_purged.HasField("purged_before")
    assert _purge(usage_admin_stub, admin_token, tenant, first).purged_before == ts(first)
    assert _purge(usage_admin_stub, admin_token, tenant, later, dry_run=True).purged_before == ts(first)
    every_tenant = _purge(usage_admin_stub, admin_token, "", later, dry_run=True)
    assert every_tenant.dry_run and not every_tenant.HasField("purged_before")


def test_events_in_dirty_buckets_are_kept_until_rolled_up(usage_stub, usage_admin_stub, admin_token, tenant, history):
    base, instants = history
    end = now_us()
    before = totals(usage_stub, admin_token, tenant, start_us=base, end_us=end)
    cutoff = base + 2 * DAY_US
    older = sum(1 for at in instants if at < cutoff)

    unrolled = _purge(usage_admin_stub, admin_token, tenant, cutoff)

    assert (unrolled.events_deleted, unrolled.events_kept) == (0, older)
    assert totals(usage_stub, admin_token, tenant, start_us=base, end_us=end) == before
    _roll_up(usage_admin_stub, admin_token, tenant)
    rolled = _purge(usage_admin_stub, admin_token, tenant, cutoff)
    assert (rolled.events_deleted, rolled.events_kept) == (older, 0)
    assert totals(usage_stub, admin_token, tenant, start_us=base, end_us=end) == before


def test_the_purged_era_is_closed_to_late_events(usage_stub, usage_admin_stub, admin_token, tenant, history):
    base, _ = history
    _roll_up(usage_admin_stub, admin_token, tenant)
    cutoff = base + 2 * DAY_US
    _purge(usage_admin_stub, admin_token, tenant, cutoff)
    before = totals(usage_stub, admin_token, tenant, start_us=base, end_us=now_us())
    # Before the horizon, and after it but in a week that started before it: both would change a
    # bucket whose raw events are gone.
    late = [event("late-1", at_us=cutoff - HOUR_US), event("late-2", at_us=cutoff + HOUR_US)]
    results = record(usage_stub, admin_token, tenant, late)
    assert [(r.verdict, r.reason) for r in results] == [(u.VERDICT_REJECTED, u.REJECT_REASON_TOO_OLD)] * 2
    assert "purged" in results[0].message
    assert totals(usage_stub, admin_token, tenant, start_us=base, end_us=now_us()) == before


def test_a_purge_of_one_tenant_leaves_the_others_alone(usage_stub, usage_admin_stub, admin_token, tenant, history):
    base, _ = history
    other = support.new_tenant()
    record(usage_stub, admin_token, other, [event("o1", at_us=base + HOUR_US)])
    _roll_up(usage_admin_stub, admin_token, tenant)
    _roll_up(usage_admin_stub, admin_token, other)
    _purge(usage_admin_stub, admin_token, tenant, base + 10 * DAY_US)
    assert [e.event.event_id for e in list_all(usage_stub, admin_token, other)] == ["o1"]
    assert totals(usage_stub, admin_token, other, start_us=base + 30 * MINUTE_US, end_us=now_us()) == {
        "api.requests": (1, 1)
    }


def test_a_purge_needs_a_past_cutoff(usage_admin_stub, admin_token, tenant):
    for before in [None, now_us() + DAY_US]:
        request = u.PurgeEventsRequest(tenant_id=tenant)
        if before is not None:
            request.before_time.CopyFrom(ts(before))
        error = _refused(
            lambda request=request: usage_admin_stub.PurgeEvents(
                request, metadata=support.bearer(admin_token), timeout=30
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert support.field_violations(error) == ["before_time"]


@pytest.fixture
def own_usage_url(dbs, tmp_path):
    """A database of this backend for this test alone: the retention job purges every tenant."""
    with support.fresh_databases(dbs.backend, tmp_path) as own:
        yield own.usage_url


def test_the_retention_job_purges_what_is_older_than_the_retention(own_usage_url):
    engine = create_engine_for(own_usage_url, schema=tables.SCHEMA, pool_size=1)
    instants = [now_us() - days * DAY_US for days in (30, 20, 15, 13, 1)]
    with engine.begin() as connection:
        connection.execute(
            tables.events.insert(),
            [
                dict(
                    tenant_id=tenant,
                    event_id=f"e{n}",
                    metric="api.requests",
                    quantity=1,
                    occurred_at_us=at,
                    actor_id="",
                    source_service="crm",
                    classification="BILLABLE",
                    content_hash="-",
                    received_at_us=at,
                )
                for tenant in ("t1", "t2")
                for n, at in enumerate(instants)
            ],
        )
    stopping = threading.Event()
    worker = threading.Thread(
        target=purge.retention_job(
            session_factory(engine), retention_days=14, every_seconds=0.05, storage=storage_for(engine)
        ),
        args=(stopping,),
    )
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while _event_ids(engine) != {("t1", "e3"), ("t1", "e4"), ("t2", "e3"), ("t2", "e4")}:
            assert time.monotonic() < deadline, f"still stored: {_event_ids(engine)}"
            time.sleep(0.05)
    finally:
        stopping.set()
        worker.join()
        engine.dispose()
    assert purge.retention_job(None, retention_days=0, every_seconds=1, storage=storage_for(engine)) is None


def _event_ids(engine) -> set[tuple[str, str]]:
    with engine.connect() as connection:
        return set(connection.execute(select(tables.events.c.tenant_id, tables.events.c.event_id)).all())
