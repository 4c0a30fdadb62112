"""The windows of a usage series (QueryUsage): HOUR, DAY, WEEK (ISO, from Monday) and MONTH aligned in an IANA
time zone, clipped to the range, as UTC epoch microseconds. Pure; the one place that knows about zones
(docs/usage.md, "Meters").

A DAY, WEEK or MONTH window starts at the first instant of its local day, week or month: local midnight when it
exists (the earlier one when the clock repeats it), else the instant the clock jumps over it (America/Sao_Paulo
went from 23:59:59 to 01:00 on DST days until 2019: its day started at that 01:00). So a New York DAY lasts 23
or 25 hours on DST changes and a Kolkata MONTH starts at 18:30 UTC. An HOUR window is one local clock hour at
one UTC offset: a repeated hour (DST ending) is two windows, and a change of offset always starts a window.
"""

from __future__ import annotations

import enum
import functools
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from importlib import resources

from tollgate.shared.errors import FieldViolation, InvalidArgument

MAX_WINDOWS = 10_000  # an hourly series over a year fits; a longer one is asked for in parts
_SECOND = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Span = tuple[int, int]  # [start, end) in epoch microseconds


class Window(enum.Enum):
    """The length of a series' windows; NONE is the whole range as one window."""

    NONE = 0
    HOUR = 1
    DAY = 2
    WEEK = 3
    MONTH = 4


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset((resources.files("tzdata") / "zones").read_text().split())


@functools.cache
def _load(name: str) -> tzinfo:
    # From the pinned tzdata package, not the OS's copy: every host draws the same windows for the same request.
    with (resources.files("tzdata.zoneinfo") / name).open("rb") as data:
        return zoneinfo.ZoneInfo.from_file(data, key=name)


def zone(name: str, field: str = "time_zone") -> tzinfo:
    """The IANA zone named `name` (empty: UTC); INVALID_ARGUMENT naming `field` for any other name.

    Only names of the IANA database (the pinned tzdata package) count: a path or a file of the OS that the zoneinfo
    loader would also open (`localtime`) is no zone.
    """
    if not name:
        return UTC
    if name not in _zone_names():
        raise InvalidArgument(
            FieldViolation(field, f"{name[:64]!r} is not an IANA time zone name (for example 'America/New_York')")
        )
    return _load(name)


def windows(kind: Window, start_us: int, end_us: int, tz: tzinfo) -> list[Span]:
    """The windows of [start, end) in order, the first and last clipped to the range.

    INVALID_ARGUMENT (naming `window`) when there would be more than MAX_WINDOWS.
    """
    if kind is Window.NONE:
        return [(start_us, end_us)]
    spans: list[Span] = []
    at = start_us
    while at < end_us:
        following = next_start(kind, at, tz)
        spans.append((at, min(following, end_us)))
        if len(spans) > MAX_WINDOWS:
            raise InvalidArgument(
                FieldViolation(
                    "window",
                    f"makes more than {MAX_WINDOWS} windows of this range; ask for a longer window or a shorter range",
                )
            )
        at = following
    return spans


# Every window after a series' first starts on a boundary, and series in one zone share their boundaries: kept.
@functools.lru_cache(maxsize=16_384)
def next_start(kind: Window, at_us: int, tz: tzinfo) -> int:
    """The start of the window after the one holding the instant `at_us` (beyond the year 9999: past any range)."""
    second = at_us // _SECOND
    try:
        if kind is Window.HOUR:
            return _next_hour(second, tz) * _SECOND
        local = _local(second, tz).date()
        start = _first_instant(datetime.combine(_next_local_start(kind, local), time()), tz)
    except OverflowError:
        return (at_us // _SECOND + 366 * 86_400 * 2) * _SECOND
    return max(start, second + 1) * _SECOND


def _next_local_start(kind: Window, day: date) -> date:
    if kind is Window.DAY:
        return day + timedelta(days=1)
    if kind is Window.WEEK:
        return day + timedelta(days=7 - day.weekday())
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _next_hour(second: int, tz: tzinfo) -> int:
    """The next instant after `second` where the local clock reads a whole hour, or its offset changes."""
    offset = _offset(second, tz)
    candidate = second - (second + offset) % 3600 + 3600
    if _offset(candidate - 1, tz) != offset:
        return _first_change(second, candidate - 1, offset, tz)
    return candidate


def _first_instant(local: datetime, tz: tzinfo) -> int:
    """The first instant (epoch seconds) whose local time is `local`; when the clock skips it, the instant of the
    jump (the first instant after it)."""
    early = _instant(local.replace(tzinfo=tz, fold=0))
    if _local(early, tz).replace(tzinfo=None) == local:
        return early  # it exists; fold=0 is the earlier one where the clock repeats it
    # In a gap: fold=1 reads it with the offset after the jump (an instant before it), fold=0 with the one before
    # (an instant after it); the jump lies between them.
    before = _instant(local.replace(tzinfo=tz, fold=1))
    return _first_change(before, early, _offset(before, tz), tz)


def _first_change(low: int, high: int, offset: int, tz: tzinfo) -> int:
    """The first second in (low, high] whose offset is not `offset`, given that `high`'s is not and `low`'s is."""
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(middle, tz) == offset:
            low = middle
        else:
            high = middle
    return high


def _local(second: int, tz: tzinfo) -> datetime:
    return (_EPOCH + timedelta(seconds=second)).astimezone(tz)


def _instant(local: datetime) -> int:
    return (local - _EPOCH) // timedelta(seconds=1)


def _offset(second: int, tz: tzinfo) -> int:
    offset = _local(second, tz).utcoffset()
    assert offset is not None  # an aware datetime of a zone
    return offset // timedelta(seconds=1)
