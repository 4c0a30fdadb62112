"""GetUsage, ListEvents, ListMetrics and UpsertMetric through a real channel, on SQLite and PostgreSQL."""

import json

import grpc
import pytest
from psycopg import RawCursor
from sqlalchemy.dialects import postgresql

from tests import support
from tests.conftest import status_of
from tests.usage_support import (
    DAY_US,
    MINUTE_US,
    event,
    list_all,
    now_us,
    record,
    scans_of,
    tenant_token,
    totals,
    ts,
)
from tollgate.services.usage.domain import read_plan
from tollgate.services.usage.domain.catalog import DEFAULT_CATALOG
from tollgate.services.usage.domain.queries import UsageQuery
from tollgate.services.usage.repository import totals as totals_sql
from tollgate.services.usage.repository.postgres import totals as pg_totals
from tollgate.shared.db import INDEXED_PLANS, create_engine_for
from tollgate.usage.v1 import usage_pb2 as u

POSTGRES_ONLY = pytest.mark.parametrize("dbs", ["postgres"], indirect=True)


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


@pytest.fixture
def base():
    """An instant two hours ago, on a whole minute."""
    return now_us() - 120 * MINUTE_US


@pytest.fixture
def recorded(usage_stub, token, tenant, base):
    """Six events of two metrics and two actors, one minute apart from `base`."""
    events = [
        event("e0", metric="api.requests", quantity=1, actor_id="alice", at_us=base),
        event("e1", metric="api.requests", quantity=2, actor_id="bob", at_us=base + MINUTE_US),
        event("e2", metric="leads.routed", quantity=4, actor_id="alice", at_us=base + 2 * MINUTE_US),
        event(
            "e3",
            metric="api.requests",
            quantity=8,
            actor_id="alice",
            at_us=base + 3 * MINUTE_US,
            source_service="billing",
            correlation_id="job-1",
        ),
        event("e4", metric="sla.timers.started", quantity=16, at_us=base + 4 * MINUTE_US),
        event("e5", metric="api.requests", quantity=32, actor_id="bob", at_us=base + 5 * MINUTE_US),
    ]
    assert set(r.verdict for r in record(usage_stub, token, tenant, events)) == {u.VERDICT_ACCEPTED}
    return events


def test_totals_are_exact_per_metric_over_a_half_open_range(usage_stub, token, tenant, base, recorded):
    window = totals(usage_stub, token, tenant, start_us=base + MINUTE_US, end_us=base + 5 * MINUTE_US)
    assert window == {"api.requests": (10, 2), "leads.routed": (4, 1), "sla.timers.started": (16, 1)}


def test_totals_carry_the_catalog_classification_and_come_ordered_by_metric(usage_stub, token, tenant, recorded):
    response = usage_stub.GetUsage(
        u.GetUsageRequest(tenant_id=tenant, start_time=ts(1), end_time=ts(now_us())),
        metadata=support.bearer(token),
        timeout=30,
    )
    assert [(t.metric, t.classification) for t in response.totals] == [
        ("api.requests", u.CLASSIFICATION_BILLABLE),
        ("leads.routed", u.CLASSIFICATION_BILLABLE),
        ("sla.timers.started", u.CLASSIFICATION_NON_BILLABLE),
    ]


def test_totals_for_one_actor_and_grouped_by_actor(usage_stub, token, tenant, recorded):
    assert totals(usage_stub, token, tenant, actor_id="alice") == {
        ("api.requests", "alice"): (9, 2),
        ("leads.routed", "alice"): (4, 1),
    }
    grouped = totals(usage_stub, token, tenant, group_by_actor=True, metrics=["api.requests", "sla.timers.started"])
    assert grouped == {
        ("api.requests", "alice"): (9, 2),
        ("api.requests", "bob"): (34, 2),
        ("sla.timers.started", ""): (16, 1),
    }


def test_an_actors_totals_come_with_the_tenants_in_one_call_when_asked(usage_stub, token, tenant, recorded):
    response = usage_stub.GetUsage(
        u.GetUsageRequest(
            tenant_id=tenant, start_time=ts(1), end_time=ts(now_us()), actor_id="bob", include_tenant_totals=True
        ),
        metadata=support.bearer(token),
        timeout=30,
    )
    assert [(t.metric, t.actor_id, t.quantity, t.event_count) for t in response.totals] == [
        ("api.requests", "", 43, 4),
        ("api.requests", "bob", 34, 2),
        ("leads.routed", "", 4, 1),
        ("sla.timers.started", "", 16, 1),
    ]


@pytest.mark.parametrize("shape", [{}, {"actor_id": "bob", "group_by_actor": True}, {"group_by_actor": True}])
def test_tenant_totals_beside_an_actors_need_exactly_one_named_actor(usage_stub, token, tenant, shape):
    request = u.GetUsageRequest(
        tenant_id=tenant, start_time=ts(1), end_time=ts(now_us()), include_tenant_totals=True, **shape
    )
    with pytest.raises(grpc.RpcError) as raised:
        usage_stub.GetUsage(request, metadata=support.bearer(token), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "include_tenant_totals" in raised.value.details()


def test_a_total_read_after_an_acknowledged_write_includes_it(usage_stub, token, tenant):
    for n in range(5):
        record(usage_stub, token, tenant, [event(f"e{n}", quantity=n + 1)])
        assert totals(usage_stub, token, tenant) == {"api.requests": (sum(range(1, n + 2)), n + 1)}


@pytest.mark.parametrize("start,end", [(None, 10), (10, None), (10, 10), (20, 10), (-(10**13), 10)])
def test_a_missing_or_empty_range_is_invalid(usage_stub, token, tenant, start, end):
    request = u.GetUsageRequest(tenant_id=tenant)
    if start is not None:
        request.start_time.CopyFrom(ts(start * 1_000_000))
    if end is not None:
        request.end_time.CopyFrom(ts(end * 1_000_000))
    assert (
        status_of(lambda: usage_stub.GetUsage(request, metadata=support.bearer(token), timeout=30))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_listing_pages_through_every_event_in_order_with_filters(usage_stub, token, tenant, base, recorded):
    listed = list_all(usage_stub, token, tenant, page_size=2)
    assert [s.event for s in listed] == recorded
    assert all(s.tenant_id == tenant and s.received_at.seconds > 0 for s in listed)
    assert [
        s.event.event_id
        for s in list_all(usage_stub, token, tenant, page_size=1, metric="api.requests", actor_id="bob")
    ] == ["e1", "e5"]
    assert [
        s.event.event_id for s in list_all(usage_stub, token, tenant, source_service="billing", correlation_id="job-1")
    ] == ["e3"]
    window = list_all(usage_stub, token, tenant, start_time=ts(base + MINUTE_US), end_time=ts(base + 3 * MINUTE_US))
    assert [s.event.event_id for s in window] == ["e1", "e2"]


def test_a_page_token_reused_with_another_filter_or_tenant_is_invalid(
    dbs, usage_stub, admin_token, token, tenant, recorded
):
    first = usage_stub.ListEvents(u.ListEventsRequest(tenant_id=tenant, page_size=2), metadata=support.bearer(token))
    assert first.next_page_token
    other_filter = u.ListEventsRequest(
        tenant_id=tenant, page_size=2, metric="leads.routed", page_token=first.next_page_token
    )
    other_tenant = u.ListEventsRequest(tenant_id=support.new_tenant(), page_size=2, page_token=first.next_page_token)
    garbage = u.ListEventsRequest(tenant_id=tenant, page_token="not-a-token")
    for request in (other_filter, other_tenant, garbage):
        assert (
            status_of(lambda request=request: usage_stub.ListEvents(request, metadata=support.bearer(admin_token)))
            == grpc.StatusCode.INVALID_ARGUMENT
        )


def test_no_answer_for_one_tenant_holds_another_tenants_rows(dbs, usage_stub, admin_token, token, tenant, recorded):
    other = support.new_tenant()
    record(usage_stub, admin_token, other, [event("e0", quantity=1000, actor_id="alice")])
    assert totals(usage_stub, token, tenant)["api.requests"] == (43, 4)
    assert {s.tenant_id for s in list_all(usage_stub, token, tenant)} == {tenant}
    assert status_of(lambda: totals(usage_stub, token, other)) == grpc.StatusCode.PERMISSION_DENIED


def test_the_default_catalog_ships_with_the_service_and_lists_in_pages(usage_stub, token):
    listed, page_token = [], ""
    for _ in range(100):
        page = usage_stub.ListMetrics(
            u.ListMetricsRequest(page_size=5, page_token=page_token), metadata=support.bearer(token)
        )
        listed.extend(page.metrics)
        page_token = page.next_page_token
        if not page_token:
            break
    names = [m.name for m in listed]
    assert names == sorted(names)
    by_name = {m.name: u.Classification.Name(m.classification).removeprefix("CLASSIFICATION_") for m in listed}
    assert {m.name: m.classification.name for m in DEFAULT_CATALOG}.items() <= by_name.items()


def test_an_upserted_metric_is_created_then_updated_and_classifies_new_events(
    dbs, usage_stub, usage_admin_stub, admin_token, token, tenant
):
    name = f"custom.{tenant}"
    metric = u.Metric(name=name, classification=u.CLASSIFICATION_INFO, unit="thing", description="Things.")
    created = usage_admin_stub.UpsertMetric(u.UpsertMetricRequest(metric=metric), metadata=support.bearer(admin_token))
    metric.classification = u.CLASSIFICATION_BILLABLE
    updated = usage_admin_stub.UpsertMetric(u.UpsertMetricRequest(metric=metric), metadata=support.bearer(admin_token))
    assert (created.created, updated.created) == (True, False)
    metric.business_key = True  # not sent: the default, which the answer states
    metric.aggregation = u.AGGREGATION_SUM  # likewise
    assert updated.metric == metric
    record(usage_stub, token, tenant, [event("e1", metric=name)])
    assert list_all(usage_stub, token, tenant)[0].classification == u.CLASSIFICATION_BILLABLE


@pytest.mark.parametrize(
    "name,classification",
    [("Bad Name", u.CLASSIFICATION_INFO), ("", u.CLASSIFICATION_INFO), ("ok.name", u.CLASSIFICATION_UNSPECIFIED)],
)
def test_a_bad_metric_is_invalid_and_a_tenant_may_not_change_the_catalog(
    dbs, usage_admin_stub, admin_token, tenant, name, classification
):
    bad = u.UpsertMetricRequest(metric=u.Metric(name=name, classification=classification))
    assert (
        status_of(lambda: usage_admin_stub.UpsertMetric(bad, metadata=support.bearer(admin_token)))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    tenant_admin = support.make_token(dbs, tenant=tenant, scopes=["usage:admin"])
    good = u.UpsertMetricRequest(metric=u.Metric(name="tenant.metric", classification=u.CLASSIFICATION_INFO))
    assert (
        status_of(lambda: usage_admin_stub.UpsertMetric(good, metadata=support.bearer(tenant_admin)))
        == grpc.StatusCode.PERMISSION_DENIED
    )


@POSTGRES_ONLY  # PostgreSQL settings
def test_the_read_pool_never_jit_compiles_a_plan_forced_past_its_disabled_sequential_scan(dbs):
    """Its connections plan with enable_seqscan = off; a plan left with a sequential scan then costs over
    jit_above_cost, and JIT would compile it again at every execution (0.5 s a call)."""
    engine = create_engine_for(dbs.usage_url, schema="usage", settings=INDEXED_PLANS, autocommit=True)
    try:
        with engine.connect() as connection:
            [[plan]] = connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT name FROM usage.metrics WHERE description LIKE '%%x%%'"
            ).all()
    finally:
        engine.dispose()
    assert plan[0]["Plan"]["Node Type"] == "Seq Scan" and plan[0]["Plan"]["Total Cost"] > 100_000
    assert "JIT" not in plan[0]


@POSTGRES_ONLY  # a PostgreSQL plan
def test_each_dirty_hour_is_read_from_events_on_its_own_whatever_the_planner_prefers(dbs, usage_stub, token, tenant):
    """GetUsage reads each dirty hour of a marked day from events on its own, one index scan per hour
    (totals._HoursFirst). The planner is kept off nested loops here, as a new database's planner without statistics
    kept itself: the statement used to merge-join every event of the tenant to the 24 hours of the day then."""
    day = (now_us() // DAY_US - 1) * DAY_US
    record(usage_stub, token, tenant, [event(f"e{n}", at_us=day + (n % 5) * 3_600_000_000) for n in range(40)])
    query = UsageQuery(tenant, day - DAY_US + 1, now_us())
    plan = read_plan.plan(query.start_us, query.end_us)
    assert plan.days and plan.raw  # whole days from rows, ends raw: the statement's every part
    statement = pg_totals._driver_statement(totals_sql.shape(query, plan), postgresql.psycopg.dialect())
    engine = create_engine_for(dbs.usage_url, schema="usage", autocommit=True)
    try:
        with engine.connect() as connection, connection.begin():
            connection.exec_driver_sql("SET LOCAL enable_nestloop = off")
            cursor = RawCursor(connection.connection.driver_connection)
            [[explained]] = cursor.execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.sql}", statement.values(totals_sql.parameters(query, plan))
            ).fetchall()
    finally:
        engine.dispose()
    hours = [scan for scan in scans_of(explained[0]["Plan"], "events") if "dm" in json.dumps(scan)]
    assert len(hours) == 1, "no scan of events takes its range from the dirty marks' hours"
    [scan] = hours
    assert (scan["Actual Loops"], scan["Actual Rows"] * scan["Actual Loops"]) == (5, 40)  # once per dirty hour
