"""Rollups that carry dimensions, over gRPC on SQLite and PostgreSQL: a rolled-up day is answered from its cuboid's
rows, a day marked dirty again from raw events in the hours its mark names and from its rows in the others, and a
rollup (or the narrowing of a busy day's mark) replaces a day's rows; metrics that are not rolled up have none. Raw
events are deleted behind the service's back (a fault injected with SQL) to tell the two sources apart: nothing
else removes a dirty day's events."""

import re

import pytest
from sqlalchemy import delete, func, select

from tests import support
from tests import usage_meters_model as model
from tests.usage.test_usage_meters_query import ai_events, new_meter, rows, send
from tests.usage_support import DAY_US, MINUTE_US, now_us, pass_then, scans_of, tenant_token
from tollgate.services.usage import tables
from tollgate.services.usage.repository.sqlite import rollup_serial
from tollgate.shared.db import create_engine_for, session_factory
from tollgate.usage.v1 import usage_pb2 as u

HOUR_US = 60 * MINUTE_US


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


@pytest.fixture
def sessions(dbs):
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    yield session_factory(engine)
    engine.dispose()


def roll_up(admin_stub, admin_token: str, tenant: str) -> None:
    admin_stub.RunRollup(u.RunRollupRequest(tenant_id=tenant), metadata=support.bearer(admin_token), timeout=60)


def meter_rows(sessions, tenant: str, metric: str, day_us: int | None = None) -> dict[str, int]:
    """The tenant's meter_days rows of the metric (of one day), counted by cuboid."""
    m = tables.meter_days.c
    statement = select(m.cuboid, func.count()).where(m.tenant_id == tenant, m.metric == metric).group_by(m.cuboid)
    if day_us is not None:
        statement = statement.where(m.day_us == day_us)
    with sessions.begin() as session:
        return dict(session.execute(statement).tuples().all())


def delete_raw_day(sessions, tenant: str, metric: str, day_us: int) -> None:
    e = tables.events.c
    with sessions.begin() as session:
        session.execute(
            delete(tables.events).where(
                e.tenant_id == tenant,
                e.metric == metric,
                e.occurred_at_us >= day_us,
                e.occurred_at_us < day_us + DAY_US,
            )
        )


@pytest.mark.parametrize("aggregation", ["SUM", "COUNT", "MIN", "MAX", "LATEST"])
def test_a_rolled_up_day_is_read_from_its_rows_and_a_day_marked_again_from_raw_events_in_its_marked_hours_only(
    usage_stub, usage_admin_stub, admin_token, token, tenant, sessions, aggregation
):
    metric = new_meter(usage_admin_stub, admin_token, aggregation)
    start = (now_us() // HOUR_US - 5 * 24) * HOUR_US
    events = ai_events(start + 13 * MINUTE_US)
    send(usage_stub, token, tenant, metric, events)
    roll_up(usage_admin_stub, admin_token, tenant)
    assert set(meter_rows(sessions, tenant, metric)) == {"", "model", "token_type"}
    end = start + 4 * DAY_US + HOUR_US
    cases = [
        {"window": "DAY", "zone_name": "America/New_York", "group_by": ("model",)},
        {"window": "HOUR", "zone_name": "UTC", "group_by": ("token_type",)},
        {"group_by": ("token_type",), "filters": {"token_type": {"", "prompt"}}},
        {"window": "WEEK", "zone_name": "Europe/Berlin"},
    ]

    def answers() -> list:
        return [
            rows(
                usage_stub,
                token,
                tenant,
                metric,
                start,
                end,
                window=u.Window.Value(f"WINDOW_{case.get('window', 'UNSPECIFIED')}"),
                time_zone=case.get("zone_name", ""),
                group_by=case.get("group_by", ()),
                filters={name: u.DimensionValues(values=sorted(v)) for name, v in case.get("filters", {}).items()},
            )
            for case in cases
        ]

    def expected(kept: list[model.ModelEvent]) -> list:
        return [model.query(kept, aggregation=aggregation, start_us=start, end_us=end, **case) for case in cases]

    day = (start // DAY_US + 2) * DAY_US
    delete_raw_day(sessions, tenant, metric, day)
    assert answers() == expected(events)  # whole hours of clean days: the rows, which still hold the deleted events
    two = {"group_by": ("model", "token_type")}  # two dimensions: raw events, where the deleted day is gone
    without_day = [e for e in events if not day <= e.occurred_at_us < day + DAY_US]
    assert rows(usage_stub, token, tenant, metric, start, end, group_by=two["group_by"]) == model.query(
        without_day, aggregation=aggregation, start_us=start, end_us=end, **two
    )

    late = model.ModelEvent("late-1", 999, day + 7 * HOUR_US + 5 * MINUTE_US, "ann", {"model": "claude"})
    send(usage_stub, token, tenant, metric, [late])
    marked_hour = [e for e in events if not day + 7 * HOUR_US <= e.occurred_at_us < day + 8 * HOUR_US]
    # The day's mark names hour 7 alone: that hour from raw events (its deleted events gone, the late one in), the
    # day's other hours still from its rows, which hold the deleted events.
    assert answers() == expected([*marked_hour, late])

    roll_up(usage_admin_stub, admin_token, tenant)
    kept = [*without_day, late]
    assert meter_rows(sessions, tenant, metric, day) == {"": 1, "model": 1, "token_type": 1}
    assert answers() == expected(kept)


def test_unique_counts_and_sums_without_dimensions_have_no_rows_and_stay_exact(
    usage_stub, usage_admin_stub, admin_token, token, tenant, sessions
):
    unique = new_meter(usage_admin_stub, admin_token, "UNIQUE_COUNT", "model")
    plain = f"plain.{unique}"
    usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(metric=u.Metric(name=plain, classification=u.CLASSIFICATION_BILLABLE, unit="unit")),
        metadata=support.bearer(admin_token),
        timeout=30,
    )
    start = now_us() - 5 * DAY_US - 17 * MINUTE_US
    events = ai_events(start)
    send(usage_stub, token, tenant, unique, events)
    bare = [model.ModelEvent(f"plain-{e.event_id}", e.quantity, e.occurred_at_us) for e in events]
    send(usage_stub, token, tenant, plain, bare)
    roll_up(usage_admin_stub, admin_token, tenant)
    assert meter_rows(sessions, tenant, unique) == {} and meter_rows(sessions, tenant, plain) == {}
    end = start + 4 * DAY_US
    day = dict(window=u.WINDOW_DAY, time_zone="Asia/Kolkata")
    assert rows(usage_stub, token, tenant, unique, start, end, **day) == model.query(
        events,
        aggregation="UNIQUE_COUNT",
        start_us=start,
        end_us=end,
        window="DAY",
        zone_name="Asia/Kolkata",
        unique_of="model",
    )
    assert rows(usage_stub, token, tenant, plain, start, end, **day) == model.query(
        bare,
        aggregation="SUM",
        start_us=start,
        end_us=end,
        window="DAY",
        zone_name="Asia/Kolkata",
    )


def test_a_dimension_declared_after_a_rollup_is_answered_from_raw_events_until_its_days_are_rolled_up_again(
    usage_stub, usage_admin_stub, admin_token, token, tenant, sessions
):
    metric = new_meter(usage_admin_stub, admin_token, "MAX")
    start = (now_us() // HOUR_US - 5 * 24) * HOUR_US
    events = ai_events(start)
    send(usage_stub, token, tenant, metric, events)
    roll_up(usage_admin_stub, admin_token, tenant)
    region = u.Metric(
        name=metric,
        classification=u.CLASSIFICATION_BILLABLE,
        unit="token",
        aggregation=u.AGGREGATION_MAX,
        dimensions=["model", "token_type", "region"],
    )
    usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(metric=region), metadata=support.bearer(admin_token), timeout=30
    )
    late = model.ModelEvent("late-eu", 10**9, start + DAY_US + 30 * MINUTE_US, "", {"model": "claude", "region": "eu"})
    send(usage_stub, token, tenant, metric, [late])
    end = start + 4 * DAY_US
    by_region = dict(window=u.WINDOW_DAY, group_by=["region"])
    expected = model.query(
        [*events, late], aggregation="MAX", start_us=start, end_us=end, window="DAY", group_by=("region",)
    )
    assert rows(usage_stub, token, tenant, metric, start, end, **by_region) == expected
    assert "region" not in meter_rows(sessions, tenant, metric)
    roll_up(usage_admin_stub, admin_token, tenant)
    assert meter_rows(sessions, tenant, metric, (start + DAY_US) // DAY_US * DAY_US)["region"] == 2  # '' and 'eu'
    assert rows(usage_stub, token, tenant, metric, start, end, **by_region) == expected


@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)  # passes and applies apart are PostgreSQL's
@pytest.mark.parametrize("aggregation", ["SUM", "MAX"])
def test_a_day_whose_mark_narrows_twice_is_read_from_the_rows_stored_with_each_narrowing(
    dbs, usage_stub, usage_admin_stub, admin_token, token, tenant, sessions, aggregation
):
    """A busy day: each pass's apply finds its mark changed, stores the day as the pass read it and narrows the mark
    to the hours marked since. Its meter rows are stored with it: after the second narrowing hour 3 is clean, and
    QueryUsage reads its event from the rows, which must be the pass's and not the day's first rollup's."""
    metric = new_meter(usage_admin_stub, admin_token, aggregation)
    day = (now_us() // DAY_US - 3) * DAY_US
    sent = [model.ModelEvent("h1", 10, day + HOUR_US, "ann", {"model": "claude"})]
    send(usage_stub, token, tenant, metric, sent)
    roll_up(usage_admin_stub, admin_token, tenant)
    late = model.ModelEvent("h3", 30, day + 3 * HOUR_US, "bob", {"model": "llama", "token_type": "prompt"})
    send(usage_stub, token, tenant, metric, [late])
    sent.append(late)
    busy = iter(range(1, 100))

    def meanwhile() -> None:
        n = next(busy)
        one = model.ModelEvent(f"h7-{n}", 70 + n, day + 7 * HOUR_US + n * MINUTE_US, "cy", {"model": "claude"})
        send(usage_stub, token, tenant, metric, [one])
        sent.append(one)

    def answers() -> list:
        return [
            rows(usage_stub, token, tenant, metric, day, day + DAY_US, window=u.WINDOW_HOUR, group_by=("model",)),
            rows(usage_stub, token, tenant, metric, day - HOUR_US, day + DAY_US, group_by=("token_type",)),
        ]

    def expected() -> list:
        return [
            model.query(
                sent, aggregation=aggregation, start_us=day, end_us=day + DAY_US, window="HOUR", group_by=("model",)
            ),
            model.query(
                sent, aggregation=aggregation, start_us=day - HOUR_US, end_us=day + DAY_US, group_by=("token_type",)
            ),
        ]

    for _ in range(2):
        assert pass_then(dbs, tenant, meanwhile)[1] == 3  # the day, its week and its month: stored, marked still
        assert answers() == expected()
    marks = tables.dirty_buckets.c
    with sessions.begin() as session:
        hours = session.execute(
            select(marks.dirty_hours).where(marks.tenant_id == tenant, marks.metric == metric, marks.period == 2)
        ).scalar_one()
    assert hours == 1 << 7  # hour 3 is clean: read from the rows of the second narrowing
    roll_up(usage_admin_stub, admin_token, tenant)
    assert answers() == expected()


@pytest.mark.parametrize("dbs", ["sqlite"], indirect=True)  # SQLite's steps stop at a budget inside a day
def test_a_sqlite_step_that_leaves_some_of_a_days_hours_drops_its_rows_until_the_day_is_done(
    usage_stub, usage_admin_stub, admin_token, token, tenant, sessions
):
    """The step narrows the day's mark to the hours it left, so the rows, which lack the late events of the hours it
    did, would be read for those: they go, and the day is read from raw events until its last step stores them."""
    metric = new_meter(usage_admin_stub, admin_token, "SUM")
    day = (now_us() // DAY_US - 3) * DAY_US
    sent = [
        model.ModelEvent(f"e{h}", 10 + h, day + h * HOUR_US, "ann", {"model": ["claude", "llama"][h % 2]})
        for h in range(6)
    ]
    send(usage_stub, token, tenant, metric, sent)
    roll_up(usage_admin_stub, admin_token, tenant)
    late = [
        model.ModelEvent(f"late{h}-{k}", 100 + k, day + h * HOUR_US + k * MINUTE_US, "bob", {"model": "claude"})
        for h in (1, 4)
        for k in range(20)
    ]
    send(usage_stub, token, tenant, metric, late)
    sent += late

    def answer() -> list:
        return rows(usage_stub, token, tenant, metric, day, day + DAY_US, window=u.WINDOW_HOUR, group_by=("model",))

    expected = model.query(
        sent, aggregation="SUM", start_us=day, end_us=day + DAY_US, window="HOUR", group_by=("model",)
    )
    with sessions.begin() as session:  # hour 1's 21 events pass the budget: hour 4 is left for the next step
        step = rollup_serial.roll_up_step(session, tenant, None, budget=10, max_buckets=0, now_us=now_us())
    assert (step.done, step.finished) == (0, False)
    assert meter_rows(sessions, tenant, metric, day) == {}
    assert answer() == expected
    after = step.after
    while not step.finished:
        with sessions.begin() as session:
            step = rollup_serial.roll_up_step(session, tenant, after, budget=10, max_buckets=0, now_us=now_us())
        after = step.after
    assert meter_rows(sessions, tenant, metric, day) == {"": 1, "model": 2, "token_type": 1}
    assert answer() == expected


@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)  # a PostgreSQL plan
@pytest.mark.parametrize("aggregation", ["SUM", "MAX"])  # the running sums, the hours' cells
def test_each_rolled_up_day_is_read_by_its_own_index_probe_even_before_the_table_has_statistics(
    dbs, usage_stub, usage_admin_stub, admin_token, token, tenant, aggregation
):
    """A new database's planner knows nothing of meter_days (a fault injected on purpose: its statistics removed in
    a transaction rolled back). It used to walk every row of the tenant's cuboid once per piece of a window; each
    piece's day is read by an index probe of its own (meter_rollup_reads._DaySumsFirst), whatever it believes."""
    from psycopg import RawCursor

    from tollgate.services.usage.domain import meters as meter_rules
    from tollgate.services.usage.domain import windows
    from tollgate.services.usage.domain.meters import MeterQuery
    from tollgate.services.usage.domain.windows import Window
    from tollgate.services.usage.repository import meters as meters_sql
    from tollgate.services.usage.repository.postgres.meters import PIECES
    from tollgate.services.usage.service.meters import _read

    metric = new_meter(usage_admin_stub, admin_token, aggregation)
    start = (now_us() // HOUR_US - 5 * 24) * HOUR_US
    send(usage_stub, token, tenant, metric, ai_events(start + 13 * MINUTE_US))
    roll_up(usage_admin_stub, admin_token, tenant)
    zone = "America/New_York"
    query = MeterQuery(tenant, metric, start, start + 4 * DAY_US, Window.DAY, zone, ("model",))
    spans = windows.windows(query.window, query.start_us, query.end_us, windows.zone(zone))
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    try:
        with engine.connect() as connection:
            read = _read(connection, metric)
            plan = meter_rules.plan(query, read.metric, spans, 0)
            statement, values = meters_sql.statement_of(
                PIECES, plan, connection.dialect, cells=read.cells, after=None, limit=100
            )
            connection.exec_driver_sql("DELETE FROM pg_statistic WHERE starelid = 'usage.meter_days'::regclass")
            connection.exec_driver_sql(
                "UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid = 'usage.meter_days'::regclass"
            )
            cursor = RawCursor(connection.connection.driver_connection)
            [[explained]] = cursor.execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.sql}", statement.values(values)
            ).fetchall()
            connection.rollback()
    finally:
        engine.dispose()
    pieces = values["pc_k"].strip("{}").split(",").count("1")  # the day pieces of the windows
    read_rows = [s for s in scans_of(explained[0]["Plan"], "meter_days") if s["Alias"] == "md"]
    assert read_rows, "no read of the rolled-up rows"
    for scan in read_rows:
        assert re.search(r"day_us = (pc|mp)(_\d+)?\.day", scan.get("Index Cond", "")), scan  # by its day, not after
        assert scan["Actual Loops"] <= pieces, scan  # once per piece at most, never per row of the cuboid
