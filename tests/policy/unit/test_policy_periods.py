"""Quota periods, pure (domain/periods.py): calendar UTC without an anchor; with one, the anchor's phase in its
zone, checked against a brute-force model over every period kind, zones with DST and odd offsets, anchors on
the 29th to 31st, leap years."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.policy.domain.periods import DAY, MONTH, PERIODS, WEEK, YEAR, bounds, from_us, to_us

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "America/St_Johns"]


def us(*args, zone: str = "UTC") -> int:
    return to_us(datetime(*args, tzinfo=ZoneInfo(zone)))


def utc(micros: int) -> datetime:
    return from_us(micros)


def test_without_an_anchor_periods_are_calendar_ones_in_utc():
    now = us(2026, 3, 18, 13, 45, 10, 5)  # a Wednesday
    assert bounds(DAY, now) == (us(2026, 3, 18), us(2026, 3, 19))
    assert bounds(WEEK, now) == (us(2026, 3, 16), us(2026, 3, 23))
    assert bounds(MONTH, now) == (us(2026, 3, 1), us(2026, 4, 1))
    assert bounds(YEAR, now) == (us(2026, 1, 1), us(2027, 1, 1))
    assert bounds(DAY, us(2026, 3, 18)) == (us(2026, 3, 18), us(2026, 3, 19))  # the start belongs to its period


def test_a_month_anchored_on_the_31st_starts_on_the_last_day_of_shorter_months():
    anchor = us(2026, 1, 31, 9, 0, zone="Europe/Paris")
    starts = []
    moment = us(2026, 2, 1)
    for _ in range(6):
        start, end = bounds(MONTH, moment, anchor, "Europe/Paris")
        starts.append(utc(start).astimezone(ZoneInfo("Europe/Paris")).replace(tzinfo=None))
        moment = end
    assert starts == [
        datetime(2026, 1, 31, 9),
        datetime(2026, 2, 28, 9),
        datetime(2026, 3, 31, 9),  # back on the 31st, and 09:00 Paris after the DST change
        datetime(2026, 4, 30, 9),
        datetime(2026, 5, 31, 9),
        datetime(2026, 6, 30, 9),
    ]
    assert bounds(MONTH, us(2028, 2, 15), anchor, "Europe/Paris")[0] == us(2028, 1, 31, 9, zone="Europe/Paris")
    assert bounds(MONTH, us(2028, 3, 1), anchor, "Europe/Paris")[0] == us(2028, 2, 29, 9, zone="Europe/Paris")


def test_a_day_keeps_the_anchors_wall_clock_time_across_dst_so_it_lasts_23_or_25_hours():
    anchor = us(2026, 1, 10, 6, 0, zone="Europe/Paris")
    # The clocks change at 02:00 and 03:00 on the 29th and the 25th: inside the days that start on the eve.
    spring = bounds(DAY, us(2026, 3, 28, 12, zone="Europe/Paris"), anchor, "Europe/Paris")
    autumn = bounds(DAY, us(2026, 10, 24, 12, zone="Europe/Paris"), anchor, "Europe/Paris")
    assert spring == (us(2026, 3, 28, 6, zone="Europe/Paris"), us(2026, 3, 29, 6, zone="Europe/Paris"))
    assert spring[1] - spring[0] == 23 * 3600 * 10**6
    assert autumn[1] - autumn[0] == 25 * 3600 * 10**6


def test_a_start_in_a_skipped_hour_moves_past_the_gap_and_one_in_a_repeated_hour_is_its_first_occurrence():
    anchor = us(2026, 1, 10, 2, 30, zone="Europe/Paris")  # 02:30 does not exist on 2026-03-29 in Paris
    start, _ = bounds(DAY, us(2026, 3, 29, 12, zone="Europe/Paris"), anchor, "Europe/Paris")
    assert utc(start) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    start, end = bounds(DAY, us(2026, 10, 25, 12, zone="Europe/Paris"), anchor, "Europe/Paris")
    assert utc(start) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first of the two
    assert utc(end) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_a_year_over_a_leap_day_lasts_366_days_and_a_february_29th_anchor_falls_on_the_28th_in_common_years():
    anchor = us(2024, 2, 29, 0, 0)
    leap = bounds(YEAR, us(2024, 6, 1), anchor, "UTC")
    assert leap == (us(2024, 2, 29), us(2025, 2, 28))
    assert bounds(YEAR, us(2025, 6, 1), anchor, "UTC") == (us(2025, 2, 28), us(2026, 2, 28))
    calendar_year = bounds(YEAR, us(2028, 6, 1))
    assert calendar_year[1] - calendar_year[0] == 366 * 86400 * 10**6
    over_leap_day = bounds(YEAR, us(2027, 6, 1), us(2020, 6, 1), "UTC")
    assert over_leap_day[1] - over_leap_day[0] == 366 * 86400 * 10**6  # 2027-06-01 .. 2028-06-01


def test_a_week_starts_on_the_anchors_weekday_and_time():
    anchor = us(2026, 1, 8, 17, 0, zone="America/New_York")  # a Thursday
    start, end = bounds(WEEK, us(2026, 3, 10, 12, zone="America/New_York"), anchor, "America/New_York")
    assert utc(start).astimezone(ZoneInfo("America/New_York")).replace(tzinfo=None) == datetime(2026, 3, 5, 17)
    assert end - start == (7 * 24 - 1) * 3600 * 10**6  # the week holding the March DST change


def _model_starts(period: int, anchor: datetime, zone: ZoneInfo, around: date) -> list[datetime]:
    """Every period start within a few years of `around`, built naively from the rule's words."""
    local = anchor.astimezone(zone)
    clock = local.timetz().replace(tzinfo=None)

    def at(day: date) -> datetime:
        return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)

    def clamped(year: int, month: int, day: int) -> date:
        while True:
            try:
                return date(year, month, day)
            except ValueError:
                day -= 1

    starts = []
    if period == DAY:
        starts = [at(around + timedelta(days=n)) for n in range(-3, 4)]
    elif period == WEEK:
        first = around - timedelta(days=(around.weekday() - local.weekday()) % 7)
        starts = [at(first + timedelta(weeks=n)) for n in range(-2, 3)]
    elif period == MONTH:
        for n in range(-3, 4):
            index = around.year * 12 + around.month - 1 + n
            starts.append(at(clamped(index // 12, index % 12 + 1, local.day)))
    else:
        starts = [at(clamped(around.year + n, local.month, local.day)) for n in range(-2, 3)]
    return starts


@settings(max_examples=400, deadline=None)
@given(
    period=st.sampled_from(PERIODS),
    zone=st.sampled_from(ZONES),
    anchor=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
    now=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2039, 1, 1)),
)
def test_the_period_holding_now_matches_the_brute_force_model(period, zone, anchor, now):
    anchor_us, now_us = to_us(anchor.replace(tzinfo=UTC)), to_us(now.replace(tzinfo=UTC))
    start, end = bounds(period, now_us, anchor_us, zone)
    assert start <= now_us < end
    local_today = utc(now_us).astimezone(ZoneInfo(zone)).date()
    starts = sorted({to_us(s) for s in _model_starts(period, utc(anchor_us), ZoneInfo(zone), local_today)})
    expected_start = max(s for s in starts if s <= now_us)
    expected_end = min(s for s in starts if s > now_us)
    assert (start, end) == (expected_start, expected_end)
    assert bounds(period, end, anchor_us, zone)[0] == end  # periods tile time: the next one starts at the end
