"""Rollups that carry dimensions (docs/usage.md, "Meters"): which metrics have them, the cuboids a day is rolled up
into, which cuboid answers a question, and how a question's windows split into rolled-up day pieces and raw edges.
Pure.

A metric's day is rolled up into cuboids, each a set of rows per (cuboid, dimension values) holding the day's hours
with events: the apex ('': every event in one row) and one per declared dimension (its name: a row per value, ''
for the events without it). A question grouping or filtering by at most one dimension reads its cuboid; one naming
two or more reads raw events: rows of the full combination would be about as many as the events wherever events
per combination and hour are few (docs/usage.md, "Meters").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from tollgate.services.usage.domain.aggregations import ACTOR_ID, Aggregation, Partial, Sample
from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US
from tollgate.services.usage.domain.windows import Span

APEX = ""


def rolled_up(aggregation: Aggregation, dimensions: Iterable[str]) -> bool:
    """Whether a metric's days are rolled up with dimensions. UNIQUE_COUNT is read from raw events (distinct sets do
    not add), and a SUM without dimensions is what GetUsage's aggregates hold already."""
    if aggregation is Aggregation.UNIQUE_COUNT:
        return False
    return aggregation is not Aggregation.SUM or any(True for _ in dimensions)


def cuboids(dimensions: Iterable[str]) -> list[str]:
    """The cuboids a day of a metric declaring `dimensions` is rolled up into."""
    return [APEX, *sorted(dimensions)]


def cuboid_for(
    aggregation: Aggregation, group_by: Iterable[str], filters: Iterable[str], actor_ids: Iterable[str]
) -> str | None:
    """The cuboid answering a question grouping and filtering by these dimensions; None when only raw events can
    (UNIQUE_COUNT, the actor as a group or a filter, or two dimensions or more)."""
    if aggregation is Aggregation.UNIQUE_COUNT or any(True for _ in actor_ids):
        return None
    needed = set(group_by) | set(filters)
    if ACTOR_ID in needed:
        return None
    if not needed:
        return APEX
    if len(needed) == 1:
        return needed.pop()
    return None


def cell(cuboid: str, dimensions: dict[str, str]) -> str:
    """The canonical JSON of an event's row in `cuboid` (its dimension values reduced to the cuboid's)."""
    values = {} if cuboid == APEX else {cuboid: dimensions.get(cuboid, "")}
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class DayPiece(NamedTuple):
    """Whole UTC hours [first_hour, end_hour) of the UTC day starting at day_us, inside window n."""

    n: int
    day_us: int
    first_hour: int
    end_hour: int


class Split(NamedTuple):
    """A question's windows as whole hours of UTC days (rolled up when their day is) and raw spans (n, lo, hi)."""

    pieces: Sequence[DayPiece]
    raw: Sequence[tuple[int, int, int]]


def split(windows: list[Span], first_window: int) -> Split:
    """Windows [first_window:] cut at UTC hours and days: what lies between a window's first and last whole hour
    goes by day pieces, the rest (a start or end off the hour, a window shorter than an hour) is raw."""
    pieces: list[DayPiece] = []
    raw: list[tuple[int, int, int]] = []
    for n in range(first_window, len(windows)):
        lo, hi = windows[n]
        first, last = -(-lo // HOUR_US) * HOUR_US, hi // HOUR_US * HOUR_US
        if first >= last:
            raw.append((n, lo, hi))
            continue
        if lo < first:
            raw.append((n, lo, first))
        day = first // DAY_US * DAY_US
        while day < last:
            low, high = max(first, day), min(last, day + DAY_US)
            pieces.append(DayPiece(n, day, (low - day) // HOUR_US, (high - day) // HOUR_US))
            day += DAY_US
        if last < hi:
            raw.append((n, last, hi))
    return Split(pieces, raw)


class HourCell(NamedTuple):
    """One hour of one row: what each aggregation needs of its events, to combine exactly."""

    offset: int
    quantity: int
    events: int
    low: int
    high: int
    latest: tuple[int, str, int]  # (occurred_at_us, event_id, quantity) of the hour's latest event


def day_rows(
    day_us: int, samples: Iterable[tuple[Sample, dict[str, str]]], names: Iterable[str]
) -> dict[tuple[str, str], list[HourCell]]:
    """The rows of a day (by cuboid and canonical dimension values) of events read as (sample, dimensions), each
    with its hours in order: what a rollup stores (SQLite computes them here; PostgreSQL in SQL, alike)."""
    kinds = cuboids(names)
    parts: dict[tuple[str, str], dict[int, Partial]] = {}
    for sample, dimensions in samples:
        offset = (sample.occurred_at_us - day_us) // HOUR_US
        one = Partial(
            sample.quantity,
            1,
            sample.quantity,
            sample.quantity,
            (sample.occurred_at_us, sample.event_id, sample.quantity),
        )
        for kind in kinds:
            hours = parts.setdefault((kind, cell(kind, dimensions)), {})
            hours[offset] = hours[offset].merged(one) if offset in hours else one
    return {
        key: [
            HourCell(o, p.total, p.count, p.low or 0, p.high or 0, p.latest or (0, "", 0))
            for o, p in sorted(hours.items())
        ]
        for key, hours in parts.items()
    }
