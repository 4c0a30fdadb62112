"""A brute-force model of QueryUsage for the tests: windows found by walking a grid of instants and reading the
local clock, values computed from the events one by one. Slow and obvious on purpose; the product computes the
same answers another way (domain/windows.py, one SQL statement).

Every window boundary of the zones and years the tests use falls on a multiple of 15 minutes UTC (all their offsets
and transitions do, after 1970), so the grid's step is 15 minutes.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

STEP_US = 15 * 60 * 1_000_000


@dataclass(frozen=True)
class ModelEvent:
    event_id: str
    quantity: int
    occurred_at_us: int
    actor_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRow:
    window_start_us: int
    window_end_us: int
    group: tuple[tuple[str, str], ...]  # (name, value) in group_by order
    value: int
    event_count: int


@functools.lru_cache(maxsize=200_000)
def key(kind: str, at_us: int, zone_name: str) -> tuple:
    """What names the window of an instant: the local unit it falls in (an hour also by its UTC offset)."""
    tz = zoneinfo.ZoneInfo(zone_name) if zone_name else UTC
    local = datetime.fromtimestamp(at_us / 1_000_000, UTC).astimezone(tz)
    if kind == "HOUR":
        return (local.date(), local.hour, local.utcoffset())
    if kind == "DAY":
        return (local.date(),)
    if kind == "WEEK":
        return tuple(local.isocalendar()[:2])
    if kind == "MONTH":
        return (local.year, local.month)
    return ()


def windows(kind: str, start_us: int, end_us: int, zone_name: str) -> list[tuple[int, int]]:
    """The windows of [start, end): wherever the key of the grid's instants changes, clipped to the range."""
    if kind == "NONE":
        return [(start_us, end_us)]
    starts = [start_us]
    point = start_us - start_us % STEP_US + STEP_US
    previous = key(kind, start_us, zone_name)
    while point < end_us:
        current = key(kind, point, zone_name)
        if current != previous:
            starts.append(point)
        previous, point = current, point + STEP_US
    return list(zip(starts, starts[1:] + [end_us]))


def value(aggregation: str, events: list[ModelEvent], unique_of: str) -> int:
    if aggregation == "SUM":
        return sum(e.quantity for e in events)
    if aggregation == "COUNT":
        return len(events)
    if aggregation == "MIN":
        return min(e.quantity for e in events)
    if aggregation == "MAX":
        return max(e.quantity for e in events)
    if aggregation == "LATEST":
        return max(events, key=lambda e: (e.occurred_at_us, e.event_id)).quantity
    assert aggregation == "UNIQUE_COUNT"
    return len({u for e in events if (u := _of(e, unique_of))})


def _of(event: ModelEvent, name: str) -> str:
    return event.actor_id if name == "actor_id" else event.dimensions.get(name, "")


def query(
    events: Iterable[ModelEvent],
    *,
    aggregation: str,
    start_us: int,
    end_us: int,
    window: str = "NONE",
    zone_name: str = "",
    group_by: tuple[str, ...] = (),
    filters: dict[str, set[str]] | None = None,
    actor_ids: set[str] | None = None,
    unique_of: str = "",
) -> list[ModelRow]:
    """QueryUsage's rows over the stored events of one metric, ordered by window then group."""
    spans = windows(window, start_us, end_us, zone_name)
    cells: dict[tuple, list[ModelEvent]] = {}
    for e in events:
        if not start_us <= e.occurred_at_us < end_us:
            continue
        if actor_ids and e.actor_id not in actor_ids:
            continue
        if any(_of(e, name) not in allowed for name, allowed in (filters or {}).items()):
            continue
        span = next(s for s in spans if s[0] <= e.occurred_at_us < s[1])
        group = tuple((name, _of(e, name)) for name in group_by)
        cells.setdefault((span, group), []).append(e)
    rows = [
        ModelRow(span[0], span[1], group, value(aggregation, found, unique_of), len(found))
        for (span, group), found in cells.items()
    ]
    return sorted(rows, key=lambda r: (r.window_start_us, [v.encode() for _, v in r.group]))
