"""Aggregations (domain/aggregations.py): each kind's value, exact integers, and parts that combine into their union
exactly, against the brute-force model of tests/usage_meters_model.py."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tests import usage_meters_model as model
from tollgate.services.usage.domain.aggregations import Aggregation, Partial, Sample, partial, value

EVENTS = [
    Sample(300, "b", 7, "alice"),
    Sample(100, "a", 2, "bob"),
    Sample(300, "a", 11, "alice"),
    Sample(200, "c", 10**12, ""),
]


def test_each_aggregation_has_its_value():
    assert {kind: value(kind, EVENTS) for kind in Aggregation} == {
        Aggregation.SUM: 10**12 + 20,
        Aggregation.COUNT: 4,
        Aggregation.MIN: 2,
        Aggregation.MAX: 10**12,
        Aggregation.LATEST: 7,  # two events at 300: the larger event_id, "b", is the latest
        Aggregation.UNIQUE_COUNT: 2,  # an event without a value is not a value
    }


def test_sums_stay_exact_beyond_int64():
    assert value(Aggregation.SUM, [Sample(0, str(i), 10**12) for i in range(10_000)]) == 10**16
    assert value(Aggregation.SUM, [Sample(0, "a", 2**62), Sample(0, "b", 2**62)]) == 2**63


def test_latest_ties_are_broken_by_event_id_in_code_point_order():
    samples = [Sample(5, "\u00e9", 1), Sample(5, "z", 2), Sample(5, "Z", 3)]
    assert value(Aggregation.LATEST, samples) == 1  # "é" (U+00E9) sorts after "z" in code point order


def test_no_events_is_zero_of_every_kind():
    assert {value(kind, []) for kind in Aggregation} == {0}


samples = st.lists(
    st.builds(
        Sample,
        st.integers(-(10**9), 10**9),
        st.text("abcé", min_size=1, max_size=3),
        st.integers(1, 10**12),
        st.sampled_from(["", "u1", "u2", "u3"]),
    ),
    max_size=30,
    unique_by=lambda s: s.event_id,
)


@settings(max_examples=300, deadline=None)
@given(events=samples, cut=st.integers(0, 30), kind=st.sampled_from(list(Aggregation)))
def test_two_parts_combine_into_the_value_of_their_union(events, cut, kind):
    whole = partial(events)
    parts = partial(events[:cut]).merged(partial(events[cut:]))
    assert parts == whole
    assert parts.value(kind) == value(kind, list(reversed(events)))
    if events:
        as_model = [model.ModelEvent(s.event_id, s.quantity, s.occurred_at_us, actor_id=s.unique) for s in events]
        assert whole.value(kind) == model.value(kind.name, as_model, "actor_id")


def test_the_empty_partial_is_the_identity():
    state = partial(EVENTS)
    assert state.merged(Partial()) == state == Partial().merged(state)
