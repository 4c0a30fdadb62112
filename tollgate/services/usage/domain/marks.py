"""Dirty marks (docs/usage.md, "Dirty marks and rollups"): the buckets accepted events make stale, and the hours
of a day a rollup recomputes. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from tollgate.services.usage.domain.buckets import ALL_HOURS, DAY_US, HOUR_US, Period, marked_buckets_of
from tollgate.services.usage.domain.model import Event

Mark = tuple[str, Period, int]  # (metric, period, period start)


def day_hours(events: Iterable[Event]) -> dict[tuple[str, int], int]:
    """(metric, day start) -> the bits of the day's hours holding any of the events."""
    hours: dict[tuple[str, int], int] = {}
    for event in events:
        at = event.occurred_at_us
        assert at is not None  # only admitted events are stored
        day = at - at % DAY_US
        key = (event.metric, day)
        hours[key] = hours.get(key, 0) | 1 << (at - day) // HOUR_US
    return hours


def dirty_marks(events: Iterable[Event]) -> dict[Mark, int]:
    """The marks newly stored events leave: each bucket holding one (a day, its ISO week, its month) with its dirty
    hours. A day's mark names the hours that gained events; a week's or a month's every hour, as it is folded from
    whole days."""
    marks: dict[Mark, int] = {}
    # A day lies in one ISO week and one month: the buckets of its start are those of every instant in it, and a
    # batch has far fewer distinct days than events.
    for (metric, day), bits in day_hours(events).items():
        for period, start in marked_buckets_of(day):
            marks[(metric, period, start)] = bits if period is Period.DAY else ALL_HOURS
    return marks


def recomputed_hours(dirty_hours: int, *, has_row: bool) -> int:
    """The hours of a day mark a rollup reads from raw events: the dirty ones, or all 24 when the day has no stored
    row yet to keep the others from."""
    return dirty_hours if has_row else ALL_HOURS
