"""Quota periods (docs/entitlements.md, "Billing periods"): which [start, end) holds an instant. Pure.

Without a billing anchor a period is a calendar one in UTC (the day from 00:00, the week from Monday, the
month from the 1st, the year from January 1st), which is what quotas meant before anchors existed. With an
anchor, periods repeat the anchor's wall-clock phase in the subscription's IANA zone: a MONTH anchored on
the 31st starts on the last day of shorter months (and on the 31st again where there is one); a YEAR
anchored on February 29th starts on February 28th in common years; a DAY keeps the anchor's time of day
across DST changes, so a period is 23 or 25 hours long on those days. A start that falls in a skipped hour
moves forward by the gap (the zone's own rule for such wall times); a start in a repeated hour takes its
first occurrence. The anchor is a phase, not a start: periods before it follow the same rule.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MICROS = 1_000_000
DAY, MONTH, WEEK, YEAR = 1, 2, 3, 4  # QuotaPeriod values of the proto
PERIODS = (DAY, MONTH, WEEK, YEAR)
NAMES = {DAY: "day", MONTH: "month", WEEK: "week", YEAR: "year"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def zone_of(name: str) -> ZoneInfo | None:
    """The IANA zone named (UTC for ''); None when there is no such zone."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return None


def to_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * MICROS + delta.microseconds


def from_us(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _clamped(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _add_months(year: int, month: int, count: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + count
    return index // 12, index % 12 + 1


class _Phase:
    """The wall-clock phase of an anchor in a zone; `start(n)` is the n-th period's start relative to `now`'s."""

    def __init__(self, period: int, anchor: datetime, zone: ZoneInfo):
        self.period, self.anchor, self.zone = period, anchor, zone
        self.clock = time(anchor.hour, anchor.minute, anchor.second, anchor.microsecond)

    def local_start(self, around: date, shift: int) -> date:
        """The start date of the period `shift` periods after the one whose natural start is near `around`."""
        if self.period == DAY:
            return around + timedelta(days=shift)
        if self.period == WEEK:
            back = (around.weekday() - self.anchor.weekday()) % 7
            return around - timedelta(days=back) + timedelta(days=7 * shift)
        if self.period == MONTH:
            year, month = _add_months(around.year, around.month, shift)
            return _clamped(year, month, self.anchor.day)
        return _clamped(around.year + shift, self.anchor.month, self.anchor.day)

    def instant(self, day: date) -> datetime:
        # fold=0: a repeated wall time is its first occurrence; a skipped one resolves past the gap.
        local = datetime.combine(day, self.clock, tzinfo=self.zone)
        return local.astimezone(UTC)


def bounds(period: int, now_us: int, anchor_us: int | None = None, zone_name: str = "") -> tuple[int, int]:
    """[start_us, end_us) of the period of kind `period` holding the instant `now_us`."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period}")
    zone = zone_of(zone_name) if anchor_us is not None else ZoneInfo("UTC")
    if zone is None:
        raise ValueError(f"unknown time zone {zone_name!r}")
    if anchor_us is None:
        anchor = datetime(1970, 1, 5, tzinfo=UTC)  # a Monday, January 1st's month day, at 00:00 UTC
        anchor = anchor.replace(day=1) if period in (MONTH, YEAR) else anchor
    else:
        anchor = from_us(anchor_us).astimezone(zone)
    phase = _Phase(period, anchor, zone)
    now = from_us(now_us)
    local_today = now.astimezone(zone).date()
    shift = 0
    # The natural start near today may lie after now (an anchor later in the month, day or year): step back.
    while phase.instant(phase.local_start(local_today, shift)) > now:
        shift -= 1
    while phase.instant(phase.local_start(local_today, shift + 1)) <= now:
        shift += 1
    start = phase.instant(phase.local_start(local_today, shift))
    end = phase.instant(phase.local_start(local_today, shift + 1))
    return to_us(start), to_us(end)
