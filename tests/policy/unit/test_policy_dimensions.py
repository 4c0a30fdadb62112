"""Dimension filters on quotas and the dimension values of reservations (domain/dimensions.py): which usage a
filter counts, the stored forms, and the shape rules checked before any catalog is asked."""

from __future__ import annotations

import pytest

from tests.policy.unit.test_policy_validation import fields
from tollgate.services.policy import validation
from tollgate.services.policy.domain.dimensions import canonical, describe, filters_of, matches
from tollgate.services.policy.domain.model import Plan, QuotaLimit
from tollgate.services.policy.domain.modes import Mode

GPT = filters_of({"model": ["gpt-4o", "gpt-4o-mini"]})


@pytest.mark.parametrize(
    ("values", "counted"),
    [
        ({"model": "gpt-4o"}, True),
        ({"model": "gpt-4o-mini", "region": "eu"}, True),
        ({"model": "claude"}, False),
        ({"region": "eu"}, False),  # no model: the empty value, which the filter does not allow
        ({}, False),
    ],
)
def test_a_filter_counts_only_the_values_it_allows(values, counted):
    assert matches(GPT, canonical(values)) is counted


def test_allowing_the_empty_value_counts_usage_without_the_dimension_and_no_filter_counts_everything():
    unlabelled = filters_of({"model": ["", "gpt-4o"]})
    assert matches(unlabelled, canonical({})) and matches(unlabelled, canonical({"region": "eu"}))
    assert not matches(unlabelled, canonical({"model": "claude"}))
    assert matches((), canonical({"model": "claude"})) and matches((), "")


def test_every_filtered_dimension_must_allow_the_usage():
    both = filters_of({"model": ["gpt-4o"], "region": ["eu", "us"]})
    assert matches(both, canonical({"model": "gpt-4o", "region": "us"}))
    assert not matches(both, canonical({"model": "gpt-4o", "region": "ap"}))


def test_stored_forms_are_canonical_so_equal_values_are_equal_text():
    assert canonical({"b": "2", "a": "1"}) == canonical({"a": "1", "b": "2"}) == '{"a":"1","b":"2"}'
    assert canonical({}) == ""
    assert filters_of({"model": ["b", "a", "b"]}) == (("model", ("a", "b")),)
    assert describe(filters_of({"region": ["eu"], "model": ["a", "b"]})) == "{model=a|b, region=eu}"


def test_a_plans_filters_name_every_bad_dimension_and_value_list():
    bad = filters_of({"Model": ["x"], "region": [], "tier": ["t" * 129], "model": ["", "gpt-4o"]})
    quota = QuotaLimit("m", 4, 1, Mode.OFF, filters=bad)
    assert fields(lambda: validation.plan(Plan("P", "", {}, quotas=(quota,)), [])) == [
        "plan.quotas[0].filters[Model]",
        "plan.quotas[0].filters[region]",
        "plan.quotas[0].filters[tier]",
    ]
    nine = filters_of({f"d{n}": ["v"] for n in range(9)})
    wide = QuotaLimit("m", 4, 1, Mode.OFF, filters=nine)
    assert fields(lambda: validation.plan(Plan("P", "", {}, quotas=(wide,)), [])) == ["plan.quotas[0].filters"]
    good = QuotaLimit("m", 4, 1, Mode.OFF, filters=GPT)
    assert validation.plan(Plan("P", "", {}, quotas=(good,)), []).quotas[0].filters == GPT
