"""How GetUsage covers [start, end): raw edges, whole hours, whole days. Pure, no I/O.

The range splits into at most five parts, each read from the cheapest source that is exact:

    start   H1        D1                      D2        H2   end
      |-raw-|--hours--|---------days----------|--hours--|-raw-|

H1 and H2 are the first and last hour boundaries inside the range, D1 and D2 the first and last
day boundaries inside [H1, H2). A part may be empty; each part of hours lies within one day, whose
row holds them (tables.aggregates). Weeks and months are not used: days keep the
plan two levels deep, and a year is only 365 day rows per metric. Which hour and day buckets are
dirty is decided by the database in the same statement (repository/totals.py); this module only
draws the lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Ranges of [start, end) by source; bucket ranges hold bucket starts; each range of hours lies in one day."""

    raw: tuple[tuple[int, int], ...]
    hours: tuple[tuple[int, int], ...]
    days: tuple[int, int] | None

    def whole_hours(self) -> tuple[int, int] | None:
        """[H1, H2): the span read from aggregates (hours and days), or None."""
        spans = list(self.hours) + ([self.days] if self.days else [])
        return (min(low for low, _ in spans), max(high for _, high in spans)) if spans else None

    def hours_by_day(self) -> tuple[tuple[int, int, int], ...]:
        """Each range of hours as (its day's start, its first hour, the hour after its last), hours of that day."""
        days = ((low, high, low - low % DAY_US) for low, high in self.hours)
        return tuple((day, (low - day) // HOUR_US, (high - day) // HOUR_US) for low, high, day in days)


def plan(start_us: int, end_us: int, *, use_aggregates: bool = True) -> ReadPlan:
    """The cover of [start_us, end_us); without aggregates (per-actor questions), all raw."""
    first_hour, last_hour = _ceil(start_us, HOUR_US), _floor(end_us, HOUR_US)
    if not use_aggregates or first_hour >= last_hour:
        return ReadPlan(raw=((start_us, end_us),), hours=(), days=None)
    raw = _nonempty((start_us, first_hour), (last_hour, end_us))
    first_day, last_day = _ceil(first_hour, DAY_US), _floor(last_hour, DAY_US)
    if first_day > last_day:  # no day boundary inside: the hours lie in one day
        return ReadPlan(raw=raw, hours=((first_hour, last_hour),), days=None)
    return ReadPlan(
        raw=raw,
        hours=_nonempty((first_hour, first_day), (last_day, last_hour)),
        days=(first_day, last_day) if first_day < last_day else None,
    )


def _floor(micros: int, step: int) -> int:
    return micros - micros % step


def _ceil(micros: int, step: int) -> int:
    return -_floor(-micros, step)


def _nonempty(*ranges: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple((low, high) for low, high in ranges if low < high)
