"""GetUsage's read plan (domain/read_plan.py), pure: the parts cover the range exactly, each from an exact source."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US
from tollgate.services.usage.domain.read_plan import plan

BASE = 19_700 * DAY_US
instants = st.integers(BASE - 3 * DAY_US, BASE + 3 * DAY_US)


def parts(cover):
    days = [cover.days] if cover.days else []
    return sorted(list(cover.raw) + list(cover.hours) + days)


@settings(max_examples=200, deadline=None)
@given(instants, st.integers(1, 4 * DAY_US), st.booleans())
def test_the_parts_cover_the_range_exactly_once_hours_and_days_on_their_boundaries(start, length, aggregates):
    end = start + length
    cover = plan(start, end, use_aggregates=aggregates)
    found = parts(cover)
    assert found[0][0] == start and found[-1][1] == end
    assert all(high == low for (_, high), (low, _) in zip(found, found[1:]))
    assert all(low < high for low, high in found)
    assert len(cover.raw) <= 2 and len(cover.hours) <= 2
    for low, high in cover.hours:
        assert low % HOUR_US == 0 and high % HOUR_US == 0 and low // DAY_US == (high - 1) // DAY_US
    if cover.days:
        assert cover.days[0] % DAY_US == 0 and cover.days[1] % DAY_US == 0
    if not aggregates:
        assert cover.raw == ((start, end),) and not cover.hours and cover.days is None


@settings(max_examples=150, deadline=None)
@given(instants, st.integers(1, 4 * DAY_US))
def test_each_range_of_hours_is_its_day_and_its_hours_and_the_span_is_from_the_first_to_the_last(start, length):
    cover = plan(start, start + length)
    for (day, first, after), (low, high) in zip(cover.hours_by_day(), cover.hours):
        assert day % DAY_US == 0 and 0 <= first < after <= 24
        assert (day + first * HOUR_US, day + after * HOUR_US) == (low, high)
    aggregated = list(cover.hours) + ([cover.days] if cover.days else [])
    assert cover.whole_hours() == (
        (min(low for low, _ in aggregated), max(high for _, high in aggregated)) if aggregated else None
    )


def test_a_range_inside_one_hour_is_read_raw_and_whole_days_from_day_rows():
    assert plan(BASE + 1, BASE + HOUR_US - 1).raw == ((BASE + 1, BASE + HOUR_US - 1),)
    cover = plan(BASE - HOUR_US, BASE + 2 * DAY_US + 1)
    assert cover.days == (BASE, BASE + 2 * DAY_US)
    assert cover.hours == ((BASE - HOUR_US, BASE),)
    assert cover.raw == ((BASE + 2 * DAY_US, BASE + 2 * DAY_US + 1),)
