"""The metric catalog's rules (domain/catalog.py) and the values of questions (domain/queries.py), pure."""

import pytest

from tollgate.services.usage.domain.catalog import DEFAULT_CATALOG, MAX_DESCRIPTION, MAX_UNIT, Metric, check_metric
from tollgate.services.usage.domain.model import Classification
from tollgate.services.usage.domain.queries import EventFilter, UsageQuery
from tollgate.shared.errors import InvalidArgument


def test_every_metric_of_the_default_catalog_is_valid_and_named_once():
    for metric in DEFAULT_CATALOG:
        check_metric(metric)
    assert len({m.name for m in DEFAULT_CATALOG}) == len(DEFAULT_CATALOG)


@pytest.mark.parametrize(
    "metric, fields",
    [
        (Metric("Bad", Classification.BILLABLE), ["metric.name"]),
        (Metric("9x", Classification.BILLABLE), ["metric.name"]),
        (Metric("a" * 129, Classification.BILLABLE), ["metric.name"]),
        (Metric("ok", None), ["metric.classification"]),
        (
            Metric("ok", Classification.INFO, "u" * (MAX_UNIT + 1), "d" * (MAX_DESCRIPTION + 1)),
            ["metric.unit", "metric.description"],
        ),
        (Metric("", None, "\x00"), ["metric.name", "metric.classification", "metric.unit"]),
    ],
)
def test_a_bad_metric_names_every_bad_field(metric, fields):
    with pytest.raises(InvalidArgument) as raised:
        check_metric(metric)
    assert [v.field for v in raised.value.violations] == fields


def test_a_metric_at_every_bound_is_valid():
    check_metric(Metric("a" + "z.-_9" * 25 + "ab", Classification.INFO, "u" * MAX_UNIT, "d" * MAX_DESCRIPTION))


def test_a_question_naming_an_actor_or_grouping_by_actor_is_answered_per_actor():
    assert not UsageQuery("t", 0, 1).by_actor
    assert UsageQuery("t", 0, 1, actor_id="a").by_actor and UsageQuery("t", 0, 1, group_by_actor=True).by_actor


def test_a_listings_page_token_is_bound_to_the_tenant_and_every_filter():
    base = EventFilter("t")
    changed = [
        EventFilter("u"),
        EventFilter("t", metric="m"),
        EventFilter("t", actor_id="a"),
        EventFilter("t", source_service="s"),
        EventFilter("t", correlation_id="c"),
        EventFilter("t", start_us=0),
        EventFilter("t", end_us=0),
    ]
    assert all(f.scope() != base.scope() for f in changed)
    assert len({repr(f.scope()) for f in changed}) == len(changed)
