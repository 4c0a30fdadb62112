"""The purge horizon's rules (domain/horizon.py), pure, against brute-force models."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US, Period, next_start, start_of
from tollgate.services.usage.domain.horizon import in_force_after, ingest_refuses, kept_spans, merged, serves
from tollgate.services.usage.domain.read_plan import plan

BASE = 19_700 * DAY_US
near = st.integers(BASE - 70 * DAY_US, BASE + 70 * DAY_US)


@settings(max_examples=100, deadline=None)
@given(near, near)
def test_ingest_refuses_exactly_an_event_with_a_bucket_starting_before_the_horizon(at, horizon):
    assert ingest_refuses(at, horizon) == any(start_of(period, at) < horizon for period in Period)


def test_around_a_horizon_on_a_month_start_the_previous_week_and_month_are_refused():
    horizon = start_of(Period.MONTH, BASE)  # 2023-12-01, a Friday
    assert ingest_refuses(horizon - 1, horizon)
    assert ingest_refuses(horizon + DAY_US, horizon)  # its ISO week began in November
    monday = start_of(Period.WEEK, horizon) + 7 * DAY_US
    assert not ingest_refuses(monday, horizon)


@settings(max_examples=100, deadline=None)
@given(near)
def test_a_tenant_never_purged_has_every_event_accepted_and_every_read_served(at):
    assert not ingest_refuses(at, None)
    assert serves(plan(at, at + DAY_US), None)


@settings(max_examples=100, deadline=None)
@given(near, st.integers(1, 5 * DAY_US), near, st.booleans())
def test_a_read_is_served_exactly_when_no_raw_part_starts_before_the_horizon(start, length, horizon, aggregates):
    cover = plan(start, start + length, use_aggregates=aggregates)
    assert serves(cover, horizon) == all(low >= horizon for low, _ in cover.raw)


def test_a_read_on_whole_hours_needs_no_raw_event_before_the_horizon():
    horizon = BASE + 5 * DAY_US
    assert serves(plan(BASE, BASE + 3 * HOUR_US), horizon)
    assert not serves(plan(BASE + 1, BASE + 3 * HOUR_US), horizon)
    assert not serves(plan(BASE, BASE + 3 * HOUR_US, use_aggregates=False), horizon)


def test_a_horizon_only_moves_up():
    for cutoff in range(5):
        assert in_force_after(cutoff, None) == cutoff
        for in_force in range(5):
            assert in_force_after(cutoff, in_force) == max(cutoff, in_force)


marks = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([2, 3, 4]), st.integers(-40, 40)).map(
        lambda m: (m[0], m[1], start_of(Period(m[1]), BASE + m[2] * DAY_US))
    ),
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(marks, st.integers(-45, 45), st.integers(1, 10))
def test_a_purge_keeps_exactly_the_events_of_dirty_buckets_overlapping_its_slice(found, low_day, days):
    low, high = BASE + low_day * DAY_US, BASE + (low_day + days) * DAY_US
    spans = kept_spans(found, low, high)
    # Every bucket and slice starts on a day: a day's first and last instants stand for all of it.
    for metric in ("a", "b", "c"):
        for at in [instant for day in range(low, high, DAY_US) for instant in (day, day + DAY_US - 1)]:
            dirty = any(m == metric and s <= at < next_start(Period(p), s) for m, p, s in found)
            kept = any(s <= at < e for s, e in spans.get(metric, []))
            assert kept == dirty, (metric, at)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 10)).map(lambda p: (p[0], p[0] + p[1])), max_size=10))
def test_merged_spans_cover_the_same_points_in_order_neither_touching_nor_overlapping(spans):
    joined = merged(spans)
    assert all(end < start for (_, end), (start, _) in zip(joined, joined[1:]))
    assert all(start < end for start, end in joined)
    for point in range(0, 75):
        assert any(s <= point < e for s, e in joined) == any(s <= point < e for s, e in spans)
