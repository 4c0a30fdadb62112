"""Meters in the catalog over gRPC (UpsertMetric, ListMetrics): aggregations, unique_of, declared dimensions, and the
changes refused once a metric has events; on SQLite and PostgreSQL."""

import uuid

import grpc
import pytest

from tests import support
from tests.usage_support import event, every_page, record, tenant_token, verdicts
from tollgate.services.usage.domain.catalog import DEFAULT_CATALOG
from tollgate.usage.v1 import usage_pb2 as u


def upsert(stub, admin_token: str, name: str, **fields) -> u.UpsertMetricResponse:
    metric = u.Metric(name=name, classification=u.CLASSIFICATION_BILLABLE, unit="token", **fields)
    return stub.UpsertMetric(u.UpsertMetricRequest(metric=metric), metadata=support.bearer(admin_token), timeout=30)


def new_name() -> str:
    return f"ai.tokens.{uuid.uuid4().hex[:10]}"


def catalog(stub, token: str) -> dict[str, u.Metric]:
    metrics = every_page(
        lambda page_token: stub.ListMetrics(
            u.ListMetricsRequest(page_size=1000, page_token=page_token), metadata=support.bearer(token), timeout=30
        ),
        "metrics",
    )
    return {m.name: m for m in metrics}


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_a_meter_is_stored_and_listed_with_its_aggregation_unique_of_and_dimensions(
    usage_stub, usage_admin_stub, admin_token
):
    name = new_name()
    stored = upsert(
        usage_admin_stub,
        admin_token,
        name,
        aggregation=u.AGGREGATION_UNIQUE_COUNT,
        unique_of="model",
        dimensions=["token_type", "model"],
    )
    listed = catalog(usage_stub, admin_token)[name]
    assert stored.created
    for metric in (stored.metric, listed):
        assert (metric.aggregation, metric.unique_of, list(metric.dimensions)) == (
            u.AGGREGATION_UNIQUE_COUNT,
            "model",
            ["token_type", "model"],
        )


def test_every_metric_of_the_default_catalog_still_sums_without_dimensions(usage_stub, admin_token):
    listed = catalog(usage_stub, admin_token)
    for metric in DEFAULT_CATALOG:
        found = listed[metric.name]
        assert (found.aggregation, found.unique_of, list(found.dimensions)) == (u.AGGREGATION_SUM, "", [])


def test_an_unset_aggregation_is_sum(usage_admin_stub, admin_token):
    assert upsert(usage_admin_stub, admin_token, new_name()).metric.aggregation == u.AGGREGATION_SUM


def test_bad_meter_fields_are_refused_naming_each_field_and_change_nothing(usage_stub, usage_admin_stub, admin_token):
    name = new_name()
    error = refused(
        lambda: upsert(
            usage_admin_stub,
            admin_token,
            name,
            aggregation=u.AGGREGATION_MAX,
            unique_of="actor_id",
            dimensions=["Model"],
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert support.field_violations(error) == ["metric.dimensions[0]", "metric.unique_of"]
    unknown = refused(lambda: upsert(usage_admin_stub, admin_token, name, aggregation=42))
    assert (unknown.code(), support.field_violations(unknown)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["metric.aggregation"],
    )
    assert name not in catalog(usage_stub, admin_token)


def test_the_aggregation_changes_freely_until_the_metric_has_events_and_then_never(
    usage_stub, usage_admin_stub, admin_token, dbs, tenant
):
    name = new_name()
    upsert(usage_admin_stub, admin_token, name, aggregation=u.AGGREGATION_MAX)
    upsert(usage_admin_stub, admin_token, name, aggregation=u.AGGREGATION_LATEST)
    assert verdicts(record(usage_stub, tenant_token(dbs, tenant), tenant, [event("e1", metric=name)])) == ["ACCEPTED"]
    for change in (
        {"aggregation": u.AGGREGATION_SUM},
        {"aggregation": u.AGGREGATION_UNIQUE_COUNT, "unique_of": "actor_id"},
    ):
        error = refused(lambda change=change: upsert(usage_admin_stub, admin_token, name, **change))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "LATEST" in error.details() and "create a new metric" in error.details()
    kept = upsert(usage_admin_stub, admin_token, name, aggregation=u.AGGREGATION_LATEST, description="Latest.")
    assert (kept.metric.aggregation, catalog(usage_stub, admin_token)[name].aggregation) == (u.AGGREGATION_LATEST,) * 2


def test_dimensions_not_carried_by_any_event_may_be_added_and_removed(usage_stub, usage_admin_stub, admin_token):
    name = new_name()
    upsert(usage_admin_stub, admin_token, name, dimensions=["model"])
    upsert(usage_admin_stub, admin_token, name, dimensions=["model", "region"])
    upsert(usage_admin_stub, admin_token, name, dimensions=["region"])
    assert list(catalog(usage_stub, admin_token)[name].dimensions) == ["region"]
