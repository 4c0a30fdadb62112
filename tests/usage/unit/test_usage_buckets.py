"""Bucket math (domain/buckets.py), pure: every day of five years across leap days and year ends against a
calendar model, hypothesis over the whole range of instants, every hour bit."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.buckets import (
    ALL_HOURS,
    DAY_US,
    HOUR_US,
    MARKED,
    MAX_TOTAL,
    Period,
    buckets_of,
    holds_hour,
    hour_of_day,
    hours_in,
    marked_buckets_of,
    next_start,
    start_of,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_US = int((datetime(1, 1, 8, tzinfo=UTC) - EPOCH) / timedelta(microseconds=1))
MAX_US = int((datetime(9999, 11, 30, tzinfo=UTC) - EPOCH) / timedelta(microseconds=1))


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def model_start(period: Period, at: int) -> int:
    """The bucket's start by the calendar: hours, days, ISO weeks (Monday) and months of UTC."""
    moment = EPOCH + timedelta(microseconds=at)
    hour = moment.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    return micros(
        {
            Period.HOUR: hour,
            Period.DAY: day,
            Period.WEEK: day - timedelta(days=day.weekday()),
            Period.MONTH: day.replace(day=1),
        }[period]
    )


def model_next(period: Period, start: int) -> int:
    moment = EPOCH + timedelta(microseconds=start)
    if period is Period.MONTH:
        year, month = divmod(moment.month, 12)
        return micros(moment.replace(year=moment.year + year, month=month + 1))
    return micros(
        moment
        + {Period.HOUR: timedelta(hours=1), Period.DAY: timedelta(days=1), Period.WEEK: timedelta(weeks=1)}[period]
    )


def test_every_instant_of_five_years_across_leap_days_and_year_ends_starts_the_calendars_buckets():
    day = datetime(1999, 12, 1, tzinfo=UTC)
    while day < datetime(2005, 3, 2, tzinfo=UTC):
        for at in (micros(day), micros(day) + 13 * HOUR_US + 1, micros(day) + DAY_US - 1):
            for period in Period:
                assert start_of(period, at) == model_start(period, at), (period, day)
        day += timedelta(days=1)


def test_a_leap_day_lies_in_february_and_its_month_ends_after_29_days():
    leap = micros(datetime(2024, 2, 29, 12, tzinfo=UTC))
    february = start_of(Period.MONTH, leap)
    assert february == micros(datetime(2024, 2, 1, tzinfo=UTC))
    assert next_start(Period.MONTH, february) - february == 29 * DAY_US


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(Period)), st.integers(MIN_US, MAX_US))
def test_each_instant_lies_in_its_bucket_and_the_next_bucket_starts_where_it_ends(period, at):
    start = start_of(period, at)
    assert start == model_start(period, at)
    end = next_start(period, start)
    assert start <= at < end and end == model_next(period, start)
    assert start_of(period, end - 1) == start and start_of(period, end) == end


@settings(max_examples=200, deadline=None)
@given(st.integers(MIN_US, MAX_US))
def test_an_instant_has_four_buckets_and_ingest_marks_its_day_week_and_month(at):
    assert buckets_of(at) == [(period, model_start(period, at)) for period in Period]
    assert marked_buckets_of(at) == [(period, model_start(period, at)) for period in MARKED]
    assert hour_of_day(at) == (EPOCH + timedelta(microseconds=at)).hour


def test_every_single_hour_bit_is_its_hour_and_all_hours_are_the_24():
    for hour in range(24):
        assert hours_in(1 << hour) == [hour]
        assert [h for h in range(24) if holds_hour(1 << hour, h)] == [hour]
    assert hours_in(ALL_HOURS) == list(range(24)) and hours_in(0) == []


@settings(max_examples=150, deadline=None)
@given(st.integers(0, ALL_HOURS))
def test_the_hours_of_a_mask_are_its_set_bits_in_order(mask):
    hours = hours_in(mask)
    assert hours == sorted(hours) and sum(1 << h for h in hours) == mask
    assert hours == [h for h in range(24) if holds_hour(mask, h)]


def test_the_largest_total_is_the_largest_int64():
    assert MAX_TOTAL == 2**63 - 1
