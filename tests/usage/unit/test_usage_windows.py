"""QueryUsage's windows (domain/windows.py) in any IANA zone: DST days, half-hour and 45-minute zones, a skipped
midnight, month ends, leap days and clipping, against the brute-force grid of tests/usage_meters_model.py."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import usage_meters_model as model
from tollgate.services.usage.domain.windows import MAX_WINDOWS, Window, windows, zone
from tollgate.shared.errors import InvalidArgument

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Eucla",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]


def us(text: str) -> int:
    """Epoch microseconds of a UTC instant written as ISO 8601 without a zone."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000


def series(kind: Window, start: str, end: str, zone_name: str) -> list[tuple[int, int]]:
    return windows(kind, us(start), us(end), zone(zone_name))


def starts(spans) -> list[int]:
    return [start for start, _ in spans]


def hours(spans) -> list[float]:
    return [(end - start) / HOUR_US for start, end in spans]


def test_new_york_days_last_23_hours_when_dst_starts_and_25_when_it_ends():
    spring = series(Window.DAY, "2026-03-07T05:00", "2026-03-10T04:00", "America/New_York")
    autumn = series(Window.DAY, "2026-10-31T04:00", "2026-11-03T05:00", "America/New_York")
    assert hours(spring) == [24, 23, 24]
    assert spring[1] == (us("2026-03-08T05:00"), us("2026-03-09T04:00"))
    assert hours(autumn) == [24, 25, 24]


def test_the_repeated_new_york_hour_is_two_windows_and_the_skipped_one_none():
    autumn = series(Window.HOUR, "2026-11-01T04:00", "2026-11-01T08:00", "America/New_York")
    spring = series(Window.HOUR, "2026-03-08T05:00", "2026-03-08T09:00", "America/New_York")
    assert hours(autumn) == [1, 1, 1, 1]  # 00:00 EDT, 01:00 EDT, 01:00 EST, 02:00 EST
    assert [s for s, _ in spring] == [
        us("2026-03-08T05:00"),
        us("2026-03-08T06:00"),
        us("2026-03-08T07:00"),
        us("2026-03-08T08:00"),
    ]


def test_kolkata_months_start_at_18_30_utc_the_day_before():
    spans = series(Window.MONTH, "2025-12-31T18:30", "2026-04-30T18:30", "Asia/Kolkata")
    assert [s for s, _ in spans] == [
        us("2025-12-31T18:30"),
        us("2026-01-31T18:30"),
        us("2026-02-28T18:30"),
        us("2026-03-31T18:30"),
    ]
    assert hours(spans) == [31 * 24, 28 * 24, 31 * 24, 30 * 24]


def test_45_minute_zones_align_days_and_hours_on_their_quarter():
    kathmandu = series(Window.DAY, "2026-06-01T00:00", "2026-06-03T00:00", "Asia/Kathmandu")
    eucla = series(Window.HOUR, "2026-06-01T00:00", "2026-06-01T02:00", "Australia/Eucla")
    assert [s for s, _ in kathmandu] == [us("2026-06-01T00:00"), us("2026-06-01T18:15"), us("2026-06-02T18:15")]
    assert [s for s, _ in eucla] == [us("2026-06-01T00:00"), us("2026-06-01T00:15"), us("2026-06-01T01:15")]


def test_a_skipped_midnight_starts_the_day_at_the_jump():
    # America/Sao_Paulo, 2018-11-04: 23:59:59 (-03) was followed by 01:00 (-02).
    spans = series(Window.DAY, "2018-11-03T03:00", "2018-11-06T02:00", "America/Sao_Paulo")
    assert [s for s, _ in spans] == [us("2018-11-03T03:00"), us("2018-11-04T03:00"), us("2018-11-05T02:00")]
    assert hours(spans) == [24, 23, 24]


def test_a_repeated_midnight_starts_the_day_at_its_first_occurrence():
    # America/Sao_Paulo, 2019-02-17: at 00:00 (-02) the clock went back to 23:00 (-03): the 16th lasted 25 hours.
    spans = series(Window.DAY, "2019-02-16T02:00", "2019-02-18T03:00", "America/Sao_Paulo")
    assert [s for s, _ in spans] == [us("2019-02-16T02:00"), us("2019-02-17T03:00")]
    assert hours(spans) == [25, 24]


def test_a_half_hour_dst_shift_makes_a_half_hour_window():
    # Australia/Lord_Howe, 2026-10-04: 02:00 (+10:30) became 02:30 (+11).
    spans = series(Window.HOUR, "2026-10-03T14:30", "2026-10-03T17:00", "Australia/Lord_Howe")
    assert hours(spans) == [1, 0.5, 1]


def test_months_after_the_31st_and_february_of_leap_years():
    spans = series(Window.MONTH, "2028-01-31T00:00", "2028-04-01T00:00", "UTC")
    assert spans == [
        (us("2028-01-31T00:00"), us("2028-02-01T00:00")),
        (us("2028-02-01T00:00"), us("2028-03-01T00:00")),
        (us("2028-03-01T00:00"), us("2028-04-01T00:00")),
    ]
    assert hours(spans)[1] == 29 * 24
    assert hours(series(Window.MONTH, "2027-02-01T00:00", "2027-03-01T00:00", "UTC")) == [28 * 24]
    leap_day = series(Window.DAY, "2028-02-28T12:00", "2028-03-01T12:00", "America/New_York")
    assert [s for s, _ in leap_day] == [us("2028-02-28T12:00"), us("2028-02-29T05:00"), us("2028-03-01T05:00")]


def test_weeks_are_iso_weeks_from_monday():
    spans = series(Window.WEEK, "2026-12-30T00:00", "2027-01-12T00:00", "UTC")
    assert [s for s, _ in spans] == [us("2026-12-30T00:00"), us("2027-01-04T00:00"), us("2027-01-11T00:00")]
    assert all(datetime.fromtimestamp(s / 1e6, UTC).weekday() == 0 for s, _ in spans[1:])


def test_windows_are_clipped_to_the_range_and_none_is_the_whole_range():
    start, end = us("2026-05-10T10:17"), us("2026-05-12T03:41")
    spans = windows(Window.DAY, start, end, zone("Asia/Kolkata"))
    assert spans[0][0] == start and spans[-1][1] == end
    assert windows(Window.NONE, start, end, zone("Asia/Kolkata")) == [(start, end)]
    inside = windows(Window.MONTH, start, end, zone("UTC"))
    assert inside == [(start, end)]


def test_every_new_york_day_of_four_years_lasts_24_hours_but_its_two_dst_days():
    start = us("2024-01-01T05:00")
    spans = windows(Window.DAY, start, start + 1461 * DAY_US, zone("America/New_York"))
    lengths = hours(spans)
    assert len(spans) == 1461
    assert sorted(lengths.count(h) for h in (23, 25)) == [4, 4]
    assert lengths.count(24) == 1461 - 8
    day = date(2024, 1, 1)
    for (window_start, _), offset in zip(spans, range(1461)):
        local = datetime.fromtimestamp(window_start / 1e6, UTC).astimezone(zone("America/New_York"))
        assert (local.date(), local.hour, local.minute) == (day + timedelta(days=offset), 0, 0)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from([Window.HOUR, Window.DAY, Window.WEEK, Window.MONTH]),
    zone_name=st.sampled_from(ZONES),
    start=st.integers(us("1990-01-01T00:00") // 60_000_000, us("2037-12-01T00:00") // 60_000_000),
    length=st.integers(1, 24 * 60 * 70),
    seconds=st.integers(0, 59),
)
def test_windows_match_the_brute_force_grid(kind, zone_name, start, length, seconds):
    if kind is Window.HOUR:
        length = length % (24 * 60 * 4) + 1
    start_us = start * 60_000_000 + seconds * 1_000_000
    end_us = start_us + length * 60_000_000
    assert windows(kind, start_us, end_us, zone(zone_name)) == model.windows(kind.name, start_us, end_us, zone_name)


def test_an_unknown_zone_names_the_field_and_a_path_is_no_zone():
    for name in ("Mars/Olympus", "localtime", "../etc/passwd", "/usr/share/zoneinfo/UTC", "UTC\x00"):
        with pytest.raises(InvalidArgument) as caught:
            zone(name)
        assert [v.field for v in caught.value.violations] == ["time_zone"]
    assert zone("") is UTC


def test_more_windows_than_the_bound_is_refused_naming_the_window():
    start = us("2026-01-01T00:00")
    assert len(windows(Window.HOUR, start, start + MAX_WINDOWS * HOUR_US, zone("UTC"))) == MAX_WINDOWS
    with pytest.raises(InvalidArgument) as caught:
        windows(Window.HOUR, start, start + (MAX_WINDOWS + 1) * HOUR_US, zone("UTC"))
    assert [v.field for v in caught.value.violations] == ["window"]


def test_berlin_days_last_23_hours_on_the_last_sunday_of_march_and_25_on_the_last_of_october():
    spring = series(Window.DAY, "2026-03-28T23:00", "2026-03-30T22:00", "Europe/Berlin")
    autumn = series(Window.DAY, "2026-10-24T22:00", "2026-10-26T23:00", "Europe/Berlin")
    assert spring == [
        (us("2026-03-28T23:00"), us("2026-03-29T22:00")),
        (us("2026-03-29T22:00"), us("2026-03-30T22:00")),
    ]
    assert hours(autumn) == [25, 24]


def test_months_in_a_zone_with_dst_lose_or_gain_the_hour_of_the_change():
    spans = series(Window.MONTH, "2026-01-01T05:00", "2027-01-01T05:00", "America/New_York")
    lengths = dict(zip(range(1, 13), hours(spans)))
    assert len(spans) == 12
    assert lengths[3] == 31 * 24 - 1 and lengths[11] == 30 * 24 + 1
    assert lengths[1] == 31 * 24 and lengths[2] == 28 * 24 and lengths[12] == 31 * 24
    assert spans[2][0] == us("2026-03-01T05:00") and spans[3][0] == us("2026-04-01T04:00")


def test_the_leap_day_is_a_whole_day_in_every_zone_and_in_its_iso_week():
    for zone_name, midnight in (("UTC", "2028-02-29T00:00"), ("Asia/Kolkata", "2028-02-28T18:30")):
        day = windows(Window.DAY, us(midnight), us(midnight) + DAY_US, zone(zone_name))
        assert day == [(us(midnight), us(midnight) + DAY_US)]
    # 2028-02-28 is a Monday: the ISO week holding the leap day is 7 days, from it.
    week = series(Window.WEEK, "2028-02-27T00:00", "2028-03-07T00:00", "UTC")
    assert week[1] == (us("2028-02-28T00:00"), us("2028-03-06T00:00"))
    assert hours(series(Window.MONTH, "2028-01-31T18:30", "2028-02-29T18:30", "Asia/Kolkata")) == [29 * 24]


def test_a_range_inside_one_window_or_ending_on_a_boundary_adds_no_empty_window():
    assert series(Window.HOUR, "2026-05-10T10:17", "2026-05-10T10:41", "UTC") == [
        (us("2026-05-10T10:17"), us("2026-05-10T10:41"))
    ]
    on_boundaries = series(Window.DAY, "2026-05-10T18:30", "2026-05-12T18:30", "Asia/Kolkata")
    assert on_boundaries == [
        (us("2026-05-10T18:30"), us("2026-05-11T18:30")),
        (us("2026-05-11T18:30"), us("2026-05-12T18:30")),
    ]
    # A range starting in the middle of a DST day clips it: the window is what is left of its 23 hours.
    clipped = series(Window.DAY, "2026-03-08T12:00", "2026-03-09T12:00", "America/New_York")
    assert clipped == [
        (us("2026-03-08T12:00"), us("2026-03-09T04:00")),
        (us("2026-03-09T04:00"), us("2026-03-09T12:00")),
    ]
