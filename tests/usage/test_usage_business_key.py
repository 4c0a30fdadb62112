"""The business key (correlation_id, metric, occurred_at): on by default, off per metric, on SQLite and PostgreSQL;
and migration usage_0013, which makes it a per-event rule."""

import uuid

import pytest
import sqlalchemy as sa

from tests import support
from tests.usage_support import event, list_all, now_us, record, tenant_token, totals, verdicts
from tollgate.shared import migrate
from tollgate.shared.db import create_engine_for
from tollgate.usage.v1 import usage_pb2 as u


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


def new_metric(stub, admin_token: str, **fields) -> str:
    """A fresh billable catalog metric (the catalog is global: each test makes its own)."""
    name = f"units.{uuid.uuid4().hex[:10]}"
    stub.UpsertMetric(
        u.UpsertMetricRequest(
            metric=u.Metric(name=name, classification=u.CLASSIFICATION_BILLABLE, unit="unit", **fields)
        ),
        metadata=support.bearer(admin_token),
        timeout=30,
    )
    return name


def units(metric: str, ids, at_us: int, **fields) -> list[u.UsageEvent]:
    """Distinct units of one request: own event ids, one correlation_id, one instant."""
    return [event(event_id, metric=metric, at_us=at_us, correlation_id="request-42", **fields) for event_id in ids]


def test_by_default_units_sharing_a_correlation_id_and_instant_are_merged_into_the_first(
    usage_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_metric(usage_admin_stub, admin_token)
    at = now_us() - 3_600_000_000
    results = record(
        usage_stub, token, tenant, units(metric, ["u1", "u2"], at) + units(metric, ["u3"], at, actor_id="other")
    )
    assert verdicts(results) == ["ACCEPTED", "DUPLICATE", "CONFLICT"]
    assert [(r.dedup_key, r.existing_event_id) for r in results[1:]] == [(u.DEDUP_KEY_CORRELATION, "u1")] * 2
    assert totals(usage_stub, token, tenant) == {metric: (1, 1)}


def test_a_metric_without_the_business_key_counts_every_unit_and_event_ids_still_deduplicate(
    usage_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_metric(usage_admin_stub, admin_token, business_key=False)
    at = now_us() - 3_600_000_000
    first = record(usage_stub, token, tenant, units(metric, ["u1", "u2", "u3"], at))
    later = record(
        usage_stub,
        token,
        tenant,
        units(metric, ["u4", "u1"], at)
        + [event("k2", metric=metric, at_us=at, correlation_id="request-42", idempotency_key="k")],
    )
    again = record(
        usage_stub,
        token,
        tenant,
        [event("k3", metric=metric, at_us=at, correlation_id="request-42", idempotency_key="k")],
    )
    assert verdicts(first) == ["ACCEPTED"] * 3
    assert verdicts(later) == ["ACCEPTED", "DUPLICATE", "ACCEPTED"]
    assert (later[1].dedup_key, later[1].existing_event_id) == (u.DEDUP_KEY_EVENT_ID, "u1")
    assert (verdicts(again), again[0].dedup_key) == (["DUPLICATE"], u.DEDUP_KEY_IDEMPOTENCY_KEY)
    assert totals(usage_stub, token, tenant) == {metric: (5, 5)}
    assert {s.event.correlation_id for s in list_all(usage_stub, token, tenant)} == {"request-42"}


def test_each_event_keeps_the_rule_it_was_stored_under(usage_stub, usage_admin_stub, admin_token, token, tenant):
    metric = new_metric(usage_admin_stub, admin_token, business_key=False)
    at = now_us() - 3_600_000_000
    while_off = record(usage_stub, token, tenant, units(metric, ["u1", "u2"], at))
    usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(
            metric=u.Metric(name=metric, classification=u.CLASSIFICATION_BILLABLE, unit="unit", business_key=True)
        ),
        metadata=support.bearer(admin_token),
        timeout=30,
    )
    while_on = record(usage_stub, token, tenant, units(metric, ["u3", "u4"], at))
    assert verdicts(while_off) == ["ACCEPTED", "ACCEPTED"]
    # The events stored with the key off do not hold it; the first stored with it on does.
    assert verdicts(while_on) == ["ACCEPTED", "DUPLICATE"] and while_on[1].existing_event_id == "u3"
    assert totals(usage_stub, token, tenant) == {metric: (3, 3)}


def test_the_catalog_shows_the_business_key_and_an_upsert_without_it_means_on(
    usage_stub, usage_admin_stub, admin_token
):
    off = new_metric(usage_admin_stub, admin_token, business_key=False)
    on = new_metric(usage_admin_stub, admin_token)
    answer = usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(metric=u.Metric(name=off, classification=u.CLASSIFICATION_BILLABLE, unit="unit")),
        metadata=support.bearer(admin_token),
        timeout=30,
    )
    listed = {
        m.name: m
        for m in usage_stub.ListMetrics(
            u.ListMetricsRequest(page_size=1000), metadata=support.bearer(admin_token), timeout=30
        ).metrics
    }
    assert (answer.created, answer.metric.business_key) == (False, True)
    assert listed[on].HasField("business_key") and listed[on].business_key is True
    assert listed[off].business_key is True
    assert listed["api.requests"].business_key is True


KEY = ("tenant_id", "correlation_id", "metric", "occurred_at_us")


def _event_row(event_id: str, **changes) -> dict:
    return dict(
        tenant_id="t",
        event_id=event_id,
        metric="api.requests",
        quantity=1,
        occurred_at_us=0,
        actor_id="a",
        source_service="s",
        correlation_id="c",
        classification="BILLABLE",
        content_hash="h" * 64,
        received_at_us=0,
        **changes,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_usage_0013_keeps_the_key_for_stored_events_and_a_downgrade_refuses_to_merge_units(tmp_path, backend):
    with support.fresh_databases(backend, tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0012")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        schema = None if backend == "sqlite" else "usage"  # lightweight tables are not translated
        old_events = sa.table("events", *[sa.column(name) for name in _event_row("x")], schema=schema)
        with engine.begin() as connection:
            connection.execute(old_events.insert(), [_event_row("before")])
        migrate.upgrade("usage", dbs.usage_url)
        events = sa.table("events", *[sa.column(name) for name in [*_event_row("x"), "business_key"]], schema=schema)
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(events.insert(), [_event_row("same-key")])
        with engine.begin() as connection:
            connection.execute(events.insert(), [_event_row("key-off", business_key=False)])
        with pytest.raises(RuntimeError, match="1 business keys are shared"):
            migrate.downgrade("usage", dbs.usage_url, "usage_0012")
        with engine.begin() as connection:
            connection.execute(events.delete().where(events.c.event_id == "key-off"))
        migrate.downgrade("usage", dbs.usage_url, "usage_0012")
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(old_events.insert(), [_event_row("same-key")])
        with engine.connect() as connection:
            columns = {
                table: {c["name"] for c in sa.inspect(connection).get_columns(table, schema=schema)}
                for table in ("events", "metrics")
            }
        engine.dispose()
    assert "business_key" not in columns["events"] | columns["metrics"]
