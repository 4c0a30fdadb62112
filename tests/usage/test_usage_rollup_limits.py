"""Rollups under stress: short SQLite steps, totals beyond int64, and the age of the oldest dirty mark.

Issue 18, Usage items 11 (a rollup on SQLite holds the write lock one short step at a time, and readers
never wait for it), 12 (a bucket whose total does not fit in int64 is left dirty, logged and counted,
and blocks no other bucket; GetUsage answers OUT_OF_RANGE) and 13 (a dirty mark keeps the time its
bucket first became dirty).
"""

import logging

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, select

from tests import support
from tests.usage_support import MINUTE_US, event, now_us, record, totals, ts
from tollgate.services.usage import tables
from tollgate.services.usage.domain.buckets import ALL_HOURS, DAY_US, HOUR_US, Period, marked_buckets_of, start_of
from tollgate.services.usage.repository import rollups as rollups_sql
from tollgate.services.usage.repository.sqlite import rollup_serial
from tollgate.services.usage.server import storage_for
from tollgate.shared import clock
from tollgate.shared.db import create_engine_for, session_factory
from tollgate.usage.v1 import usage_pb2 as u

BIG = 2**62  # two events of this quantity overflow int64: far beyond the per-event bound ingest enforces


@pytest.fixture
def token(dbs, tenant):
    return support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read", "usage:admin"])


@pytest.fixture
def sessions(dbs):
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    yield session_factory(engine)
    engine.dispose()


def _status(admin_stub, token, tenant):
    return admin_stub.GetRollupStatus(
        u.GetRollupStatusRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=30
    )


def _day_mark(sessions, tenant, metric, day_us):
    with sessions.begin() as session:
        return session.execute(
            select(tables.dirty_buckets.c.dirty_hours, tables.dirty_buckets.c.marked_at_us).where(
                tables.dirty_buckets.c.tenant_id == tenant,
                tables.dirty_buckets.c.metric == metric,
                tables.dirty_buckets.c.period == int(Period.DAY),
                tables.dirty_buckets.c.period_start_us == day_us,
            )
        ).first()


# --- item 13: the oldest dirty time is when the bucket first became dirty ------------------------------------------


def test_a_dirty_bucket_that_keeps_receiving_events_keeps_the_time_it_first_became_dirty(
    usage_stub, usage_admin_stub, token, tenant
):
    at = start_of(Period.DAY, now_us() - 2 * DAY_US) + 10 * HOUR_US
    record(usage_stub, token, tenant, [event("first", at_us=at)])
    first = _status(usage_admin_stub, token, tenant).oldest_dirty_time
    for n in range(3):
        record(usage_stub, token, tenant, [event(f"more-{n}", at_us=at + (n + 1) * MINUTE_US)])
        status = _status(usage_admin_stub, token, tenant)
        assert status.oldest_dirty_time == first and status.dirty_buckets == 3
    # The marks still gained the new events' hours, and a rollup clears them.
    record(usage_stub, token, tenant, [event("next-hour", at_us=at + HOUR_US)])
    report = usage_admin_stub.RunRollup(
        u.RunRollupRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=60
    )
    assert report.buckets_remaining == 0
    assert totals(usage_stub, token, tenant)["api.requests"] == (5, 5)


def test_a_day_marked_again_keeps_its_first_time_and_gains_the_new_hour(dbs, sessions, usage_stub, token, tenant):
    day = start_of(Period.DAY, now_us() - 2 * DAY_US)
    record(usage_stub, token, tenant, [event("a", at_us=day + 2 * HOUR_US)])
    bits, first = _day_mark(sessions, tenant, "api.requests", day)
    record(usage_stub, token, tenant, [event("b", at_us=day + 5 * HOUR_US)])
    assert _day_mark(sessions, tenant, "api.requests", day) == (bits | 1 << 5, first)


# --- item 11: SQLite rolls up in short steps; readers never wait for them -------------------------------------------


@pytest.mark.parametrize("dbs", ["sqlite"], indirect=True)
def test_a_sqlite_step_stops_at_its_budget_inside_a_day_and_the_next_goes_on_from_the_same_day(
    dbs, sessions, usage_stub, token, tenant
):
    day = start_of(Period.DAY, now_us() - 3 * DAY_US)
    record(
        usage_stub,
        token,
        tenant,
        [
            event(f"e{h}-{k}", quantity=h + 1, at_us=day + h * HOUR_US + k * MINUTE_US)
            for h in range(10)
            for k in range(20)
        ],
    )
    expected = totals(usage_stub, token, tenant)
    with sessions.begin() as session:  # 1 stored-row probe + 20 events per hour: the third hour passes 50
        step = rollup_serial.roll_up_step(session, tenant, None, budget=50, max_buckets=0, now_us=now_us())
    assert (step.done, step.after, step.finished) == (0, None, False)
    bits, _ = _day_mark(sessions, tenant, "api.requests", day)
    assert bits == ALL_HOURS & ~0b111
    assert totals(usage_stub, token, tenant) == expected  # hours 0-2 from the row, the rest from events
    steps, after = 1, None
    while True:
        with sessions.begin() as session:
            step = rollup_serial.roll_up_step(session, tenant, after, budget=50, max_buckets=0, now_us=now_us())
        steps, after = steps + 1, step.after
        assert totals(usage_stub, token, tenant) == expected
        if step.finished:
            break
    assert steps >= 10 * 20 // 50
    assert _status_count(sessions, tenant) == 0
    with sessions.begin() as session:
        row = session.execute(
            select(tables.aggregates).where(
                tables.aggregates.c.tenant_id == tenant, tables.aggregates.c.period == int(Period.DAY)
            )
        ).one()
    assert (row.total_quantity, row.event_count) == expected["api.requests"]
    assert row.hour_offsets == list(range(10)) and row.hour_counts == [20] * 10


def _status_count(sessions, tenant) -> int:
    with sessions.begin() as session:
        return len(
            session.execute(
                select(tables.dirty_buckets.c.metric).where(tables.dirty_buckets.c.tenant_id == tenant)
            ).all()
        )


def test_usage_is_answered_while_another_transaction_holds_the_write_lock(dbs, sessions, usage_stub, token, tenant):
    """On SQLite the open transaction holds the database's one write lock (BEGIN IMMEDIATE), as a rollup step or
    an ingest does; GetUsage and its token lookup read without it (with the lock, the call would wait for this
    transaction, which waits for the call: the call's deadline would end it)."""
    record(usage_stub, token, tenant, [event("a", quantity=3)])
    reader = support.make_token(dbs, tenant=tenant, scopes=["usage:read"])  # never looked up yet
    with sessions() as session, session.begin():
        rollups_sql.record_run(session, f"lock-{tenant}", now_us(), 0, storage=storage_for(sessions.kw["bind"]))
        assert totals(usage_stub, reader, tenant) == {"api.requests": (3, 1)}
        session.rollback()


# --- item 12: a total beyond int64 ----------------------------------------------------------------------------------


def _inject_overflow(sessions, tenant: str, at_us: int) -> None:
    """Injected fault: two events whose sum overflows int64, written straight into the events table (ingest
    refuses any quantity above 10**12), with the dirty marks ingest would have written for them."""
    rows = [
        dict(
            tenant_id=tenant,
            event_id=f"huge-{n}",
            metric="api.requests",
            quantity=BIG,
            occurred_at_us=at_us + n * MINUTE_US,
            actor_id="robot",
            source_service="fault",
            classification="BILLABLE",
            content_hash=f"{n:064x}",
            received_at_us=at_us,
        )
        for n in range(2)
    ]
    buckets = {
        ("api.requests", int(p), s): (1 << (at_us % DAY_US // HOUR_US) if p is Period.DAY else ALL_HOURS)
        for p, s in marked_buckets_of(at_us)
    }
    with sessions.begin() as session:
        session.execute(tables.events.insert(), rows)
        rollups_sql.mark_dirty(session, tenant, buckets, now_us(), storage=storage_for(sessions.kw["bind"]))


def _remove(sessions, tenant: str) -> None:
    with sessions.begin() as session:
        for table in (tables.events, tables.dirty_buckets, tables.aggregates):
            session.execute(delete(table).where(table.c.tenant_id == tenant))


def _refused(period: str) -> float:
    return REGISTRY.get_sample_value("tollgate_rollup_refused_buckets_total", {"period": period}) or 0.0


def test_a_bucket_whose_total_overflows_is_left_dirty_logged_and_counted_and_every_other_is_rolled_up(
    dbs, sessions, usage_stub, usage_admin_stub, admin_token, caplog
):
    at = start_of(Period.DAY, now_us() - 2 * DAY_US) + 7 * HOUR_US
    huge = "t-0000-" + support.new_tenant()  # sorts before the others: met first, as a rollup goes in key order
    others = [support.new_tenant() for _ in range(2)]
    for other in others:
        record(
            usage_stub,
            admin_token,
            other,
            [event(f"o{k}", quantity=k + 1, at_us=at + k * HOUR_US) for k in range(3)]
            + [event("other-metric", metric="leads.routed", at_us=at)],
        )
    _inject_overflow(sessions, huge, at)
    before = {period: _refused(period) for period in ("DAY", "WEEK", "MONTH")}
    try:
        with caplog.at_level(logging.ERROR, logger="tollgate.usage.rollups"):
            report = usage_admin_stub.RunRollup(u.RunRollupRequest(), metadata=support.bearer(admin_token), timeout=60)
        assert report.buckets_remaining == 3  # the day, week and month of the huge events
        assert {period: _refused(period) - before[period] for period in before} == {"DAY": 1, "WEEK": 1, "MONTH": 1}
        logged = [r for r in caplog.records if r.name == "tollgate.usage.rollups" and r.levelno == logging.ERROR]
        assert {r.fields["period"] for r in logged if r.fields["tenant_id"] == huge} == {"DAY", "WEEK", "MONTH"}
        assert all(
            "int64" in r.getMessage() and r.fields["total_quantity"] == str(2 * BIG)
            for r in logged
            if r.fields["tenant_id"] == huge
        )
        for other in others:
            assert _status(usage_admin_stub, admin_token, other).dirty_buckets == 0
            day = [
                a
                for a in usage_stub.ListAggregates(
                    u.ListAggregatesRequest(tenant_id=other, metric="api.requests", period=u.PERIOD_DAY),
                    metadata=support.bearer(admin_token),
                    timeout=30,
                ).aggregates
            ]
            assert [(a.total_quantity, a.event_count, a.dirty) for a in day] == [(6, 3, False)]
        assert _status(usage_admin_stub, admin_token, huge).dirty_buckets == 3
        # A second round meets it again, and again rolls up the rest.
        record(usage_stub, admin_token, others[0], [event("late", quantity=10, at_us=at)])
        again = usage_admin_stub.RunRollup(u.RunRollupRequest(), metadata=support.bearer(admin_token), timeout=60)
        assert again.buckets_remaining == 3 and _status(usage_admin_stub, admin_token, others[0]).dirty_buckets == 0
        assert totals(usage_stub, admin_token, others[0])["api.requests"] == (16, 4)
    finally:
        _remove(sessions, huge)


@pytest.mark.parametrize("by_actor", [False, True], ids=["totals", "per-actor"])
def test_a_total_beyond_int64_is_answered_out_of_range_naming_the_metric(
    sessions, usage_stub, usage_admin_stub, admin_token, by_actor
):
    at = start_of(Period.DAY, now_us() - 2 * DAY_US) + 7 * HOUR_US
    huge = support.new_tenant()
    _inject_overflow(sessions, huge, at)
    try:
        request = u.GetUsageRequest(
            tenant_id=huge, start_time=ts(at - DAY_US), end_time=ts(at + DAY_US), group_by_actor=by_actor
        )
        with pytest.raises(grpc.RpcError) as raised:
            usage_stub.GetUsage(request, metadata=support.bearer(admin_token), timeout=30)
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "'api.requests'" in raised.value.details() and "int64" in raised.value.details()
        # One of the two events alone fits.
        alone = totals(usage_stub, admin_token, huge, start_us=at, end_us=at + MINUTE_US, group_by_actor=by_actor)
        assert list(alone.values()) == [(BIG, 1)]
    finally:
        _remove(sessions, huge)


def test_a_meter_value_beyond_int64_is_answered_out_of_range_naming_the_metric_and_its_window(
    sessions, usage_stub, admin_token
):
    at = start_of(Period.DAY, now_us() - 2 * DAY_US) + 7 * HOUR_US
    huge = support.new_tenant()
    _inject_overflow(sessions, huge, at)
    try:
        request = u.QueryUsageRequest(
            tenant_id=huge, metric="api.requests", start_time=ts(at - DAY_US), end_time=ts(at + DAY_US)
        )
        with pytest.raises(grpc.RpcError) as raised:
            usage_stub.QueryUsage(request, metadata=support.bearer(admin_token), timeout=30)
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
        details = raised.value.details()
        assert "'api.requests'" in details and "int64" in details and str(2 * BIG) in details
        assert f"from {clock.iso(at - DAY_US)} to {clock.iso(at + DAY_US)}" in details
        # A range holding one of the two events fits.
        request.end_time.CopyFrom(ts(at + MINUTE_US))
        (row,) = usage_stub.QueryUsage(request, metadata=support.bearer(admin_token), timeout=30).rows
        assert (row.value, row.event_count) == (BIG, 1)
    finally:
        _remove(sessions, huge)
