"""Rollups that carry dimensions, over gRPC on SQLite and PostgreSQL: a rolled-up day is answered from its cuboid's
rows, a day marked dirty again from raw events, and a rollup replaces a day's rows; metrics that are not rolled up
have none. Raw events are deleted behind the service's back (a fault injected with SQL) to tell the two sources
apart: nothing else removes a dirty day's events."""

import pytest
from sqlalchemy import delete, func, select

from tests import support
from tests import usage_meters_model as model
from tests.usage.test_usage_meters_query import ai_events, new_meter, rows, send
from tests.usage_support import DAY_US, MINUTE_US, now_us, tenant_token
from tollgate.services.usage import tables
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
def test_a_rolled_up_day_is_read_from_its_rows_and_a_day_marked_again_from_raw_events(
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
    kept = [*without_day, late]
    assert answers() == expected(kept)  # the marked day from raw events: the deleted ones are gone, the late one in

    roll_up(usage_admin_stub, admin_token, tenant)
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
