"""Dirty marks (domain/marks.py), pure: the marks of a batch against a brute-force model of its buckets."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.buckets import ALL_HOURS, DAY_US, HOUR_US, MARKED, Period, hours_in, start_of
from tollgate.services.usage.domain.marks import day_hours, dirty_marks, recomputed_hours
from tollgate.services.usage.domain.model import Event

BASE = 19_700 * DAY_US  # 2023-12-09: a batch's instants below reach over a month and a year end

events = st.lists(
    st.builds(
        lambda metric, at: Event("e", metric, 1, at),
        st.sampled_from(["a", "b"]),
        st.integers(BASE - 40 * DAY_US, BASE + 40 * DAY_US),
    ),
    max_size=40,
)


def model(batch) -> dict:
    """Each event's day, week and month marked; a day with the bits of its events' hours, the others whole."""
    marks = {}
    for event in batch:
        for period in MARKED:
            key = (event.metric, period, start_of(period, event.occurred_at_us))
            if period is Period.DAY:
                bit = 1 << (event.occurred_at_us - key[2]) // HOUR_US
                marks[key] = marks.get(key, 0) | bit
            else:
                marks[key] = ALL_HOURS
    return marks


@settings(max_examples=100, deadline=None)
@given(events)
def test_a_batch_marks_each_day_week_and_month_of_its_events_with_the_days_hours(batch):
    assert dirty_marks(batch) == model(batch)


@settings(max_examples=100, deadline=None)
@given(events)
def test_a_days_hour_bits_are_exactly_the_hours_holding_its_events(batch):
    for (metric, day), bits in day_hours(batch).items():
        assert day % DAY_US == 0
        held = {
            (e.occurred_at_us - day) // HOUR_US
            for e in batch
            if e.metric == metric and day <= e.occurred_at_us < day + DAY_US
        }
        assert set(hours_in(bits)) == held


def test_two_events_in_one_hour_set_one_bit_and_the_last_microsecond_of_a_day_sets_hour_23():
    day = BASE
    marks = dirty_marks(
        [Event("1", "m", 1, day + 5), Event("2", "m", 1, day + HOUR_US - 1), Event("3", "m", 1, day + DAY_US - 1)]
    )
    assert marks[("m", Period.DAY, day)] == 1 | 1 << 23


def test_an_empty_batch_marks_nothing():
    assert dirty_marks([]) == {}


def test_a_day_without_a_stored_row_is_recomputed_whole_and_one_with_a_row_only_in_its_dirty_hours():
    for mask in (0, 1, 0b1010, ALL_HOURS):
        assert recomputed_hours(mask, has_row=True) == mask
        assert recomputed_hours(mask, has_row=False) == ALL_HOURS
