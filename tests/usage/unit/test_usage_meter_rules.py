"""The catalog's meter rules (domain/catalog.py): aggregations, what UNIQUE_COUNT counts, declared dimensions, and
the changes refused once events exist."""

import pytest

from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.domain.catalog import DEFAULT_CATALOG, Metric, check_change, check_metric
from tollgate.services.usage.domain.model import Classification
from tollgate.shared.errors import FailedPrecondition, InvalidArgument


def meter(**fields) -> Metric:
    return Metric("ai.tokens", Classification.BILLABLE, "token", **fields)


def violations(metric: Metric) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        check_metric(metric)
    return [v.field for v in caught.value.violations]


def test_the_default_catalog_sums_and_declares_no_dimensions():
    assert {(m.aggregation, m.unique_of, m.dimensions) for m in DEFAULT_CATALOG} == {(Aggregation.SUM, "", ())}


def test_every_aggregation_with_its_dimensions_is_a_valid_meter():
    for aggregation in Aggregation:
        unique_of = "model" if aggregation is Aggregation.UNIQUE_COUNT else ""
        check_metric(meter(aggregation=aggregation, unique_of=unique_of, dimensions=("model", "token_type")))
    check_metric(meter(aggregation=Aggregation.UNIQUE_COUNT, unique_of="actor_id"))
    check_metric(meter(dimensions=tuple(f"d{n}" for n in range(8))))


def test_dimension_names_are_checked_one_by_one():
    bad = meter(dimensions=("model", "Model", "9lives", "x" * 33, "actor_id", "model", "ok_2"))
    assert violations(bad) == [f"metric.dimensions[{n}]" for n in (1, 2, 3, 4, 5)]
    assert violations(meter(dimensions=tuple(f"d{n}" for n in range(9)))) == ["metric.dimensions"]


def test_unique_count_needs_actor_id_or_a_declared_dimension_and_other_aggregations_none():
    assert violations(meter(aggregation=Aggregation.UNIQUE_COUNT)) == ["metric.unique_of"]
    assert violations(meter(aggregation=Aggregation.UNIQUE_COUNT, unique_of="region")) == ["metric.unique_of"]
    assert violations(meter(aggregation=Aggregation.MAX, unique_of="actor_id")) == ["metric.unique_of"]


def test_a_new_aggregation_or_unique_of_is_refused_only_once_the_metric_has_events():
    stored = meter(aggregation=Aggregation.UNIQUE_COUNT, unique_of="actor_id", dimensions=("model",))
    for new in (
        meter(dimensions=("model",)),
        meter(aggregation=Aggregation.UNIQUE_COUNT, unique_of="model", dimensions=("model",)),
    ):
        check_change(stored, new, has_events=False, carried=frozenset())
        with pytest.raises(FailedPrecondition) as caught:
            check_change(stored, new, has_events=True, carried=frozenset())
        assert caught.value.reason == "METRIC_HAS_EVENTS"
        assert "UNIQUE_COUNT of actor_id" in caught.value.message


def test_dimensions_may_be_added_always_and_removed_only_when_no_event_carries_them():
    stored = meter(dimensions=("model", "region"))
    check_change(stored, meter(dimensions=("region", "model", "token_type")), has_events=True, carried=frozenset())
    check_change(stored, meter(dimensions=("model",)), has_events=True, carried=frozenset())
    with pytest.raises(FailedPrecondition) as caught:
        check_change(stored, meter(dimensions=("model",)), has_events=True, carried=frozenset({"region"}))
    assert caught.value.reason == "DIMENSION_IN_USE"
    assert "['region']" in caught.value.message
