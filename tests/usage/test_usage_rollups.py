"""Rollups: dirty buckets, RunRollup, GetRollupStatus and ListAggregates, on SQLite and PostgreSQL."""

import threading
import time
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import select, text

from tests import support
from tests.conftest import status_of
from tests.usage_support import DAY_US, MINUTE_US, event, now_us, pass_then, record, totals, ts
from tollgate.services.usage import tables
from tollgate.services.usage.domain.buckets import Period, buckets_of, marked_buckets_of, next_start, start_of
from tollgate.services.usage.repository import postgres, sqlite
from tollgate.services.usage.repository.sqlite.source_hash import pg_hash_text
from tollgate.services.usage.server import storage_for
from tollgate.services.usage.service import rollups
from tollgate.shared.db import create_engine_for, session_factory
from tollgate.usage.v1 import usage_pb2 as u

HOUR_US = 60 * MINUTE_US


POSTGRES_ONLY = pytest.mark.parametrize("dbs", ["postgres"], indirect=True)


def _us(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1_000_000


@pytest.fixture
def token(dbs, tenant):
    return support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read", "usage:admin"])


@pytest.fixture
def week():
    """Wednesday 10:00 UTC of the ISO week two weeks ago: whole week in the past, inside the backfill window."""
    return start_of(Period.WEEK, now_us() - 14 * DAY_US) + 2 * DAY_US + 10 * HOUR_US


def _run(admin_stub, token, tenant="", max_buckets=0):
    return admin_stub.RunRollup(
        u.RunRollupRequest(tenant_id=tenant, max_buckets=max_buckets), metadata=support.bearer(token), timeout=60
    )


def _aggregates(stub, token, tenant, metric, period, page_size=1000, **range_):
    found, page_token = [], ""
    while True:
        page = stub.ListAggregates(
            u.ListAggregatesRequest(
                tenant_id=tenant, metric=metric, period=period, page_size=page_size, page_token=page_token, **range_
            ),
            metadata=support.bearer(token),
            timeout=30,
        )
        found.extend(page.aggregates)
        page_token = page.next_page_token
        if not page_token:
            return found


def _bucket(stub, token, tenant, metric, period, start_us):
    rows = [
        a for a in _aggregates(stub, token, tenant, metric, period) if a.period_start.seconds * 1_000_000 == start_us
    ]
    return rows[0] if rows else None


def _assert_aggregates_match_raw(stub, token, tenant, metric):
    """Every aggregate of every period is clean and equals the raw events of its range."""
    checked = 0
    for period in Period:
        for a in _aggregates(stub, token, tenant, metric, int(period)):
            start = a.period_start.seconds * 1_000_000
            raw = totals(stub, token, tenant, start_us=start, end_us=next_start(period, start), metrics=[metric])
            assert (a.total_quantity, a.event_count) == raw.get(metric, (0, 0))
            assert not a.dirty
            checked += 1
    return checked


def _mark_every_bucket_dirty(dbs, tenant):
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    try:
        with engine.begin() as connection:
            rows = connection.execute(select(tables.aggregates).where(tables.aggregates.c.tenant_id == tenant))
            connection.execute(
                tables.dirty_buckets.insert(),
                [
                    dict(
                        tenant_id=r.tenant_id,
                        metric=r.metric,
                        period=r.period,
                        period_start_us=r.period_start_us,
                        marked_at_us=1,
                    )
                    for r in rows
                ],
            )
    finally:
        engine.dispose()


def test_bucket_starts_are_utc_hours_days_iso_weeks_and_months():
    instant = _us(2024, 2, 29, 13, 45)
    assert start_of(Period.HOUR, instant) == _us(2024, 2, 29, 13)
    assert start_of(Period.DAY, instant) == _us(2024, 2, 29)
    assert start_of(Period.WEEK, instant) == _us(2024, 2, 26)  # a Monday
    assert start_of(Period.MONTH, instant) == _us(2024, 2, 1)
    assert next_start(Period.MONTH, _us(2024, 12, 1)) == _us(2025, 1, 1)
    assert next_start(Period.WEEK, _us(2024, 12, 30)) == _us(2025, 1, 6)
    assert start_of(Period.WEEK, _us(1969, 12, 31, 5)) == _us(1969, 12, 29)
    assert [p for p, _ in buckets_of(instant)] == list(Period)


def test_a_late_event_into_a_rolled_up_week_repairs_its_hour_day_week_and_month(
    usage_stub, usage_admin_stub, token, tenant, week
):
    record(usage_stub, token, tenant, [event("a", quantity=3, at_us=week), event("b", quantity=4, at_us=week + DAY_US)])
    _run(usage_admin_stub, token, tenant)
    before = {p: _bucket(usage_stub, token, tenant, "api.requests", int(p), start_of(p, week)) for p in Period}
    assert before[Period.WEEK].total_quantity == 7 and before[Period.HOUR].total_quantity == 3

    record(usage_stub, token, tenant, [event("late", quantity=5, at_us=week + 10 * MINUTE_US)])
    assert _bucket(usage_stub, token, tenant, "api.requests", int(Period.WEEK), start_of(Period.WEEK, week)).dirty
    _run(usage_admin_stub, token, tenant)

    for period in Period:
        after = _bucket(usage_stub, token, tenant, "api.requests", int(period), start_of(period, week))
        assert after.total_quantity == before[period].total_quantity + 5
        assert after.event_count == before[period].event_count + 1
        assert after.source_hash != before[period].source_hash and not after.dirty
    _assert_aggregates_match_raw(usage_stub, token, tenant, "api.requests")


def test_a_late_event_marks_only_its_hour_of_a_rolled_up_day_and_the_other_hours_are_kept(
    dbs, usage_stub, usage_admin_stub, token, tenant, week
):
    """A day's mark names its changed hours; reads and the rollup take the others from the day's row."""
    record(usage_stub, token, tenant, [event(f"e{h}", quantity=h + 1, at_us=week + h * HOUR_US) for h in (1, 2, 7)])
    _run(usage_admin_stub, token, tenant)
    record(
        usage_stub,
        token,
        tenant,
        [
            event("late-a", quantity=10, at_us=week + 2 * HOUR_US + MINUTE_US),
            event("late-b", quantity=20, at_us=week + 5 * HOUR_US),
        ],
    )
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    try:
        with engine.connect() as connection:
            marks = dict(
                connection.execute(
                    select(tables.dirty_buckets.c.period, tables.dirty_buckets.c.dirty_hours).where(
                        tables.dirty_buckets.c.tenant_id == tenant
                    )
                ).all()
            )
    finally:
        engine.dispose()
    hour0 = (week - start_of(Period.DAY, week)) // HOUR_US
    assert marks[int(Period.DAY)] == (1 << hour0 + 2) | (1 << hour0 + 5)
    # Exact before the rollup: hours 1 and 7 from the day's row, 2 and 5 from raw events.
    assert totals(usage_stub, token, tenant, start_us=week, end_us=week + 8 * HOUR_US) == {"api.requests": (43, 5)}
    stored = {
        a.period_start.seconds * 1_000_000 - week: a.dirty
        for a in _aggregates(usage_stub, token, tenant, "api.requests", u.PERIOD_HOUR)
    }
    assert stored == {HOUR_US: False, 2 * HOUR_US: True, 7 * HOUR_US: False}  # hour 5 has no stored row yet
    _run(usage_admin_stub, token, tenant)
    hours = {
        a.period_start.seconds * 1_000_000 - week: (a.total_quantity, a.event_count)
        for a in _aggregates(usage_stub, token, tenant, "api.requests", u.PERIOD_HOUR)
    }
    assert hours == {HOUR_US: (2, 1), 2 * HOUR_US: (13, 2), 5 * HOUR_US: (20, 1), 7 * HOUR_US: (8, 1)}
    _assert_aggregates_match_raw(usage_stub, token, tenant, "api.requests")


def test_running_a_rollup_again_changes_nothing(dbs, usage_stub, usage_admin_stub, token, tenant, week):
    record(usage_stub, token, tenant, [event(f"e{i}", quantity=i + 1, at_us=week + i * 7 * HOUR_US) for i in range(6)])
    _run(usage_admin_stub, token, tenant)
    first = {
        p: [
            (a.period_start.seconds, a.total_quantity, a.event_count, a.source_hash)
            for a in _aggregates(usage_stub, token, tenant, "api.requests", int(p))
        ]
        for p in Period
    }
    assert _run(usage_admin_stub, token, tenant).buckets_recomputed == 0
    # A duplicate marks nothing dirty; marking every bucket dirty by hand recomputes them all from the same events.
    record(usage_stub, token, tenant, [event("e0", quantity=1, at_us=week)])
    _mark_every_bucket_dirty(dbs, tenant)
    # Hours are stored in their day's row, recomputed with it.
    assert _run(usage_admin_stub, token, tenant).buckets_recomputed == sum(
        len(rows) for period, rows in first.items() if period is not Period.HOUR
    )
    again = {
        p: [
            (a.period_start.seconds, a.total_quantity, a.event_count, a.source_hash)
            for a in _aggregates(usage_stub, token, tenant, "api.requests", int(p))
        ]
        for p in Period
    }
    assert again == first


def test_aggregates_equal_raw_sums_after_a_rollup(usage_stub, usage_admin_stub, token, tenant, week):
    events = [
        event(
            f"e{i}",
            metric=("api.requests", "leads.routed")[i % 2],
            quantity=i + 1,
            at_us=week - 3 * DAY_US + i * 5 * HOUR_US + i * MINUTE_US,
        )
        for i in range(40)
    ]
    record(usage_stub, token, tenant, events)
    report = _run(usage_admin_stub, token, tenant)
    assert report.buckets_recomputed > 0 and report.buckets_remaining == 0
    for metric in ("api.requests", "leads.routed"):
        assert _assert_aggregates_match_raw(usage_stub, token, tenant, metric) > 8


def test_list_aggregates_pages_and_refuses_another_tenants_token(
    dbs, usage_stub, usage_admin_stub, token, tenant, week
):
    record(usage_stub, token, tenant, [event(f"e{i}", at_us=week + i * HOUR_US) for i in range(5)])
    _run(usage_admin_stub, token, tenant)
    hours = _aggregates(usage_stub, token, tenant, "api.requests", u.PERIOD_HOUR, page_size=2)
    assert [a.period_start.seconds * 1_000_000 for a in hours] == [week + i * HOUR_US for i in range(5)]
    ranged = _aggregates(
        usage_stub,
        token,
        tenant,
        "api.requests",
        u.PERIOD_HOUR,
        page_size=2,
        start_time=ts(week + HOUR_US),
        end_time=ts(week + 3 * HOUR_US),
    )
    assert len(ranged) == 2

    first = usage_stub.ListAggregates(
        u.ListAggregatesRequest(tenant_id=tenant, metric="api.requests", period=u.PERIOD_HOUR, page_size=2),
        metadata=support.bearer(token),
        timeout=30,
    )
    other = support.new_tenant()
    other_token = support.make_token(dbs, tenant=other, scopes=["usage:read"])
    assert (
        status_of(
            lambda: usage_stub.ListAggregates(
                u.ListAggregatesRequest(
                    tenant_id=other, metric="api.requests", period=u.PERIOD_HOUR, page_token=first.next_page_token
                ),
                metadata=support.bearer(other_token),
                timeout=30,
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        status_of(
            lambda: usage_stub.ListAggregates(
                u.ListAggregatesRequest(tenant_id=tenant, metric="api.requests", period=u.PERIOD_HOUR),
                metadata=support.bearer(other_token),
                timeout=30,
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        status_of(
            lambda: usage_stub.ListAggregates(
                u.ListAggregatesRequest(tenant_id=tenant, metric="api.requests"),
                metadata=support.bearer(token),
                timeout=30,
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_rollup_status_counts_dirty_buckets_before_a_run_and_none_after(
    usage_stub, usage_admin_stub, token, tenant, week
):
    record(
        usage_stub,
        token,
        tenant,
        [event("a", at_us=week), event("b", at_us=week + 10 * MINUTE_US), event("c", at_us=week + DAY_US)],
    )
    status = usage_admin_stub.GetRollupStatus(
        u.GetRollupStatusRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=30
    )
    assert status.dirty_buckets == 2 + 1 + 1  # two days (a day's mark covers its hours), one week, one month
    assert status.HasField("oldest_dirty_time")
    _run(usage_admin_stub, token, tenant, max_buckets=2)
    status = usage_admin_stub.GetRollupStatus(
        u.GetRollupStatusRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=30
    )
    assert status.dirty_buckets == 2 and status.last_run_buckets == 2
    _run(usage_admin_stub, token, tenant)
    status = usage_admin_stub.GetRollupStatus(
        u.GetRollupStatusRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=30
    )
    assert status.dirty_buckets == 0 and not status.HasField("oldest_dirty_time")
    assert status.HasField("last_run_time")


def test_a_rollup_of_every_tenant_needs_a_platform_credential(usage_admin_stub, token, admin_token):
    assert status_of(lambda: _run(usage_admin_stub, token)) == grpc.StatusCode.PERMISSION_DENIED
    assert (
        status_of(
            lambda: usage_admin_stub.GetRollupStatus(
                u.GetRollupStatusRequest(), metadata=support.bearer(token), timeout=30
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        status_of(
            lambda: usage_admin_stub.GetRollupStatus(
                u.GetRollupStatusRequest(), metadata=support.bearer(admin_token), timeout=30
            )
        )
        == grpc.StatusCode.OK
    )


@POSTGRES_ONLY  # concurrent workers matter on PostgreSQL; SQLite serialises writers
def test_three_concurrent_rollup_workers_leave_aggregates_equal_to_raw_sums(
    dbs, usage_stub, usage_admin_stub, token, tenant, week
):
    record(
        usage_stub,
        token,
        tenant,
        [event(f"e{i}", quantity=i + 1, at_us=week - 5 * DAY_US + i * 3 * HOUR_US) for i in range(60)],
    )
    errors, recomputed = [], []

    def worker(n):
        try:
            for _ in range(3):
                recomputed.append(_run(usage_admin_stub, token, tenant, max_buckets=7).buckets_recomputed)
                if n == 0:
                    record(usage_stub, token, tenant, [event(f"late{_}", quantity=100, at_us=week + _ * HOUR_US)])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    support.in_threads(worker, 3, timeout=60)
    assert not errors and sum(recomputed) > 0
    _run(usage_admin_stub, token, tenant)
    _assert_aggregates_match_raw(usage_stub, token, tenant, "api.requests")


def test_the_scheduled_job_rolls_up_dirty_buckets_until_stopped(dbs, usage_stub, usage_admin_stub, token, tenant, week):
    record(usage_stub, token, tenant, [event("a", at_us=week)])
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    stopping = threading.Event()
    job = threading.Thread(
        target=rollups.scheduled_job(session_factory(engine), 0.05, storage=storage_for(engine)), args=(stopping,)
    )
    job.start()
    try:
        for _ in range(100):
            status = usage_admin_stub.GetRollupStatus(
                u.GetRollupStatusRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=30
            )
            if status.dirty_buckets == 0:
                break
            time.sleep(0.05)
        assert status.dirty_buckets == 0
    finally:
        stopping.set()
        job.join(10)
        engine.dispose()
    assert not job.is_alive() and rollups.scheduled_job(None, 0, storage=storage_for(engine)) is None


# PostgreSQL reads a day with no stored row whole (one index range, or a backlog with one scan when the
# visibility map lags), and the dirty hours of a stored day one by one.
_DAYS = pytest.mark.parametrize(
    "late, scan",
    [(False, False), (True, False), (False, True)],
    ids=["new-days", "late-into-stored-days", "new-days-by-scan"],
)


# Only PostgreSQL reads a backlog by scan; SQLite reads a day hour by hour, so its scan case is not generated.
@pytest.mark.parametrize(
    "dbs, late, scan",
    [
        pytest.param(backend, late, scan, id=f"{backend}-{name}")
        for late, scan, name in [
            (False, False, "new-days"),
            (True, False, "late-into-stored-days"),
            (False, True, "new-days-by-scan"),
        ]
        for backend in ("sqlite", "postgres")
        if backend == "postgres" or not scan
    ],
    indirect=["dbs"],
)
def test_a_rollup_split_into_many_passes_and_claims_leaves_aggregates_equal_to_raw_sums(
    dbs, usage_stub, usage_admin_stub, token, tenant, week, monkeypatch, late, scan
):
    monkeypatch.setattr(postgres, "CLAIM_SIZE", 3)
    monkeypatch.setattr(sqlite, "SERIAL_ROWS", 3)
    monkeypatch.setattr(postgres, "PASS_SIZE", 7)
    monkeypatch.setattr(postgres, "SCAN_FROM", 1 if scan else 10**9)
    monkeypatch.setattr(postgres, "VISIBLE_ENOUGH", 2.0)  # never reached: the share is at most 1
    for batch in ["early", "late"] if late else ["new"]:
        if batch == "late":
            _run(usage_admin_stub, token, tenant)
        record(
            usage_stub,
            token,
            tenant,
            [
                event(
                    f"{batch}-{i}",
                    metric=("api.requests", "leads.routed")[i % 2],
                    quantity=i + 1,
                    at_us=week - 4 * DAY_US + i * 7 * HOUR_US + len(batch) * MINUTE_US,
                )
                for i in range(30)
            ],
        )
    dirty = usage_admin_stub.GetRollupStatus(
        u.GetRollupStatusRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=30
    ).dirty_buckets
    assert dirty > 2 * 7

    first = _run(usage_admin_stub, token, tenant, max_buckets=10)  # a pass of 7, then one of 3
    assert (first.buckets_recomputed, first.buckets_remaining) == (10, dirty - 10)
    rest = _run(usage_admin_stub, token, tenant)
    assert (rest.buckets_recomputed, rest.buckets_remaining) == (dirty - 10, 0)
    for metric in ("api.requests", "leads.routed"):
        _assert_aggregates_match_raw(usage_stub, token, tenant, metric)


def test_source_hash_is_the_documented_sum_of_event_hashes(dbs, usage_stub, usage_admin_stub, token, tenant, week):
    instants = [week, week + 5 * MINUTE_US, week + DAY_US, week + 3 * DAY_US]
    record(
        usage_stub,
        token,
        tenant,
        [
            event("plain", quantity=2, at_us=instants[0]),
            event("ünïcødé-✓", quantity=3, at_us=instants[1]),
            event("x" * 128, at_us=instants[2], metadata={"k": "v"}),
            event("later-that-week", at_us=instants[3]),
        ],
    )
    _run(usage_admin_stub, token, tenant)
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                select(tables.events.c.event_id, tables.events.c.content_hash, tables.events.c.occurred_at_us).where(
                    tables.events.c.tenant_id == tenant
                )
            ).all()
            if dbs.backend == "postgres":
                samples = ["", "a", "é", "日本語", "e:" + "f" * 64] + ["k" * n for n in range(1, 40)]
                pg = connection.execute(
                    text(
                        "SELECT hashtextextended(s, 0) FROM unnest(CAST(:s AS text[])) "
                        "WITH ORDINALITY AS u (s, n) ORDER BY n"
                    ),
                    {"s": samples},
                ).scalars()
                assert [h % 2**64 for h in pg] == [pg_hash_text(s.encode()) for s in samples]
    finally:
        engine.dispose()
    checked = 0
    for period in Period:
        for a in _aggregates(usage_stub, token, tenant, "api.requests", int(period)):
            start = a.period_start.seconds * 1_000_000
            digest = sum(
                pg_hash_text(f"{event_id}:{content}".encode())
                for event_id, content, at in stored
                if start <= at < next_start(period, start)
            )
            assert a.source_hash == format(digest % 2**64, "016x")
            checked += 1
    assert checked == len({bucket for at in instants for bucket in buckets_of(at)})


def _marks(dbs, tenant, column: str = "dirty_hours") -> dict[tuple[int, int], int]:
    """The tenant's dirty marks of api.requests: {(period, start): their `column`}."""
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    try:
        with engine.connect() as connection:
            marks = tables.dirty_buckets.c
            found = connection.execute(
                select(marks.period, marks.period_start_us, marks[column]).where(
                    marks.tenant_id == tenant, marks.metric == "api.requests"
                )
            )
            return {(period, start): value for period, start, value in found}
    finally:
        engine.dispose()


@POSTGRES_ONLY  # passes and applies are PostgreSQL's; SQLite serialises a claim and its recompute
@_DAYS
def test_an_event_recorded_between_a_pass_and_its_apply_on_another_connection_leaves_its_buckets_dirty(
    dbs, usage_stub, usage_admin_stub, token, tenant, week, late, scan
):
    """The event's buckets are stored all the same, as the pass read them, and keep their marks, the day's narrowed
    to the event's hour."""
    if late:
        record(usage_stub, token, tenant, [event("early", quantity=4, at_us=week + 2 * HOUR_US)])
        _run(usage_admin_stub, token, tenant)
    record(usage_stub, token, tenant, [event("a", quantity=2, at_us=week), event("b", at_us=week + DAY_US)])

    def meanwhile() -> None:  # committed after the pass read the events: it re-marks the day, week and month of "a"
        record(usage_stub, token, tenant, [event("meanwhile", quantity=5, at_us=week + MINUTE_US)])

    found, applied = pass_then(dbs, tenant, meanwhile, scan=scan)
    assert found == len(set(marked_buckets_of(week)) | set(marked_buckets_of(week + DAY_US)))
    assert applied == found
    status = usage_admin_stub.GetRollupStatus(
        u.GetRollupStatusRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=30
    )
    assert status.dirty_buckets == 3
    assert _marks(dbs, tenant)[(int(Period.DAY), start_of(Period.DAY, week))] == 1 << 10  # "meanwhile": 10:01
    assert _run(usage_admin_stub, token, tenant).buckets_recomputed == 3
    _assert_aggregates_match_raw(usage_stub, token, tenant, "api.requests")
    assert _bucket(usage_stub, token, tenant, "api.requests", int(Period.HOUR), week).total_quantity == 7


def _hours(stub, token, tenant, day_us) -> dict[int, int]:
    """{hour offset: quantity} of the stored day row (ListAggregates' hours), dirty or not."""
    return {
        (h.period_start.seconds * 1_000_000 - day_us) // HOUR_US: h.total_quantity
        for h in _aggregates(
            stub, token, tenant, "api.requests", int(Period.HOUR), start_time=ts(day_us), end_time=ts(day_us + DAY_US)
        )
    }


@POSTGRES_ONLY  # SQLite's rollup holds the write lock from its read to its write: no event comes between
def test_a_day_that_keeps_gaining_events_is_stored_and_its_mark_narrows_to_the_hours_still_gaining_them(
    dbs, usage_stub, usage_admin_stub, token, tenant, week
):
    """A busy day: every pass's apply finds its marks changed. Its buckets are stored all the same, and the day's
    mark narrowed to the hours marked since the mark was made or last narrowed, a set that holds every hour with
    events the pass did not read; GetUsage reads those raw and the others from the row. Two passes leave only the
    busy hour."""
    day = start_of(Period.DAY, week)
    record(usage_stub, token, tenant, [event("h1", quantity=2, at_us=day + HOUR_US)])
    _run(usage_admin_stub, token, tenant)
    record(usage_stub, token, tenant, [event("h3", quantity=3, at_us=day + 3 * HOUR_US + MINUTE_US)])
    record(usage_stub, token, tenant, [event("h4", quantity=4, at_us=day + 4 * HOUR_US)])
    assert _marks(dbs, tenant)[(int(Period.DAY), day)] == 1 << 3 | 1 << 4
    sent = iter(range(1, 100))

    def busy() -> None:
        record(usage_stub, token, tenant, [event(f"h7-{next(sent)}", quantity=7, at_us=day + 7 * HOUR_US)])

    first_marked = _marks(dbs, tenant, "marked_at_us")
    before_pass = int(time.time() * 1_000_000)
    assert pass_then(dbs, tenant, busy)[1] == 3  # the day, its week and its month: stored, and marked still
    marks = _marks(dbs, tenant)
    assert marks[(int(Period.DAY), day)] == 1 << 3 | 1 << 4 | 1 << 7
    week_start = start_of(Period.WEEK, day)
    assert (int(Period.WEEK), week_start) in marks
    # Each mark is dated from the pass now: its stored row misses no event older than the pass.
    assert set(_marks(dbs, tenant, "marked_at_us")) == set(first_marked)
    assert all(at >= before_pass > first_marked[key] for key, at in _marks(dbs, tenant, "marked_at_us").items())
    assert _hours(usage_stub, token, tenant, day) == {1: 2, 3: 3, 4: 4}  # what the pass read
    stored_week = _bucket(usage_stub, token, tenant, "api.requests", int(Period.WEEK), week_start)
    assert (stored_week.total_quantity, stored_week.event_count, stored_week.dirty) == (9, 3, True)
    assert totals(usage_stub, token, tenant, start_us=day, end_us=day + DAY_US) == {"api.requests": (16, 4)}

    assert pass_then(dbs, tenant, busy)[1] == 3
    assert _marks(dbs, tenant)[(int(Period.DAY), day)] == 1 << 7  # hours 3 and 4 are read from the row now
    assert _hours(usage_stub, token, tenant, day) == {1: 2, 3: 3, 4: 4, 7: 7}
    assert totals(usage_stub, token, tenant, start_us=day, end_us=day + DAY_US) == {"api.requests": (23, 5)}
    assert totals(usage_stub, token, tenant, start_us=day + 3 * HOUR_US, end_us=day + 8 * HOUR_US) == {
        "api.requests": (21, 4)
    }
    _run(usage_admin_stub, token, tenant)
    assert _marks(dbs, tenant) == {}
    _assert_aggregates_match_raw(usage_stub, token, tenant, "api.requests")


@POSTGRES_ONLY
def test_a_pass_whose_day_another_pass_stored_meanwhile_neither_overwrites_it_nor_narrows_its_mark(
    dbs, usage_stub, usage_admin_stub, token, tenant, week
):
    """Two workers overlap: pass A reads the day, pass B reads it later (with more events), stores it and clears
    its mark, and a new event marks the day again. A's apply finds a changed mark and a stored row it did not
    read: storing A's older row and narrowing the mark would leave B's extra events in a clean hour they are not
    in. It leaves both alone."""
    day = start_of(Period.DAY, week)
    record(usage_stub, token, tenant, [event("h1", quantity=1, at_us=day + HOUR_US)])

    def another_pass_then_an_event() -> None:
        record(usage_stub, token, tenant, [event("h2", quantity=2, at_us=day + 2 * HOUR_US)])
        _run(usage_admin_stub, token, tenant)  # pass B: the day with h1 and h2, its mark cleared
        record(usage_stub, token, tenant, [event("h3", quantity=3, at_us=day + 3 * HOUR_US)])

    assert pass_then(dbs, tenant, another_pass_then_an_event)[1] == 0
    assert _marks(dbs, tenant)[(int(Period.DAY), day)] == 1 << 3
    assert _hours(usage_stub, token, tenant, day) == {1: 1, 2: 2}
    assert totals(usage_stub, token, tenant, start_us=day, end_us=day + DAY_US) == {"api.requests": (6, 3)}
    _run(usage_admin_stub, token, tenant)
    _assert_aggregates_match_raw(usage_stub, token, tenant, "api.requests")
