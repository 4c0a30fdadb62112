"""Rollup bucket math in UTC, on epoch microseconds: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import IntEnum

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US
# 1970-01-01 was a Thursday: ISO weeks (Monday 00:00 UTC) are offset by three days from the epoch.
_MONDAY_OFFSET_US = 3 * DAY_US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Period(IntEnum):
    """Bucket lengths, numbered as the proto Period."""

    HOUR = 1
    DAY = 2
    WEEK = 3
    MONTH = 4


def start_of(period: Period, micros: int) -> int:
    """The start of the bucket of `period` holding the instant `micros`."""
    if period is Period.HOUR:
        return micros - micros % HOUR_US
    if period is Period.DAY:
        return micros - micros % DAY_US
    if period is Period.WEEK:
        return micros - (micros + _MONDAY_OFFSET_US) % WEEK_US
    moment = _EPOCH + timedelta(microseconds=micros)
    return _micros(datetime(moment.year, moment.month, 1, tzinfo=UTC))


def next_start(period: Period, start_us: int) -> int:
    """The start of the bucket after the one starting at `start_us`."""
    if period is Period.HOUR:
        return start_us + HOUR_US
    if period is Period.DAY:
        return start_us + DAY_US
    if period is Period.WEEK:
        return start_us + WEEK_US
    moment = _EPOCH + timedelta(microseconds=start_us)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return _micros(datetime(year, month, 1, tzinfo=UTC))


def buckets_of(micros: int) -> list[tuple[Period, int]]:
    """(period, start) of the four buckets holding the instant."""
    return [(period, start_of(period, micros)) for period in Period]


# The buckets a dirty mark names. An hour is stored inside its day's row (see docs/usage.md, "Storage"),
# so a day's mark covers its hours: a late event costs its day's raw events, and a backlog one mark
# and one row per day, not 24.
MARKED = (Period.DAY, Period.WEEK, Period.MONTH)
ALL_HOURS = (1 << 24) - 1  # a day mark's dirty_hours when every hour of the day is to be recomputed
MAX_TOTAL = 2**63 - 1  # the largest total an aggregate (BIGINT) stores, and GetUsage answers (int64)


def marked_buckets_of(micros: int) -> list[tuple[Period, int]]:
    """(period, start) of the day, ISO week and month holding the instant: the buckets ingest marks dirty."""
    return [(period, start_of(period, micros)) for period in MARKED]


def hour_of_day(micros: int) -> int:
    """The hour (0 to 23) of its day holding the instant: its bit in a day mark's dirty_hours."""
    return micros % DAY_US // HOUR_US


def hours_in(mask: int) -> list[int]:
    """The hours of a day whose bits are set in `mask`, in order."""
    return [hour for hour in range(24) if mask >> hour & 1]


def holds_hour(mask: int, hour: int) -> bool:
    """Whether the hour's bit is set in `mask`."""
    return bool(mask >> hour & 1)


def _micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
