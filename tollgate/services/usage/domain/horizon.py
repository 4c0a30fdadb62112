"""The purge horizon (docs/usage.md, "Purge"): what ingest refuses, which reads it forbids, which raw events a
purge keeps. Pure.

A tenant's horizon H only moves up. Raw events before H may be gone, so ingest refuses an event whose week or
month starts before H (such a bucket is never recomputed from what is left), a read needing raw events before H
fails instead of answering a smaller number, and a purge keeps the events of every bucket still dirty.
"""

from __future__ import annotations

from collections.abc import Iterable

from tollgate.services.usage.domain.buckets import DAY_US, Period, next_start, start_of
from tollgate.services.usage.domain.read_plan import ReadPlan

Span = tuple[int, int]  # [start, end) in epoch microseconds


def ingest_refuses(occurred_at_us: int, horizon_us: int | None) -> bool:
    """Whether an event at the instant falls in a bucket starting before the horizon (weeks and months reach
    furthest back); never when the tenant was never purged."""
    if horizon_us is None or occurred_at_us >= horizon_us + 31 * DAY_US:  # no week or month is longer
        return False
    return min(start_of(Period.WEEK, occurred_at_us), start_of(Period.MONTH, occurred_at_us)) < horizon_us


def serves(plan: ReadPlan, purged_before_us: int | None) -> bool:
    """Whether the plan's raw parts all lie at or after the horizon, where raw events are all still there."""
    return purged_before_us is None or all(low >= purged_before_us for low, _ in plan.raw)


def in_force_after(cutoff_us: int, in_force_us: int | None) -> int:
    """The horizon a purge up to `cutoff_us` leaves in force: the cutoff, or the horizon already further on."""
    return cutoff_us if in_force_us is None else max(cutoff_us, in_force_us)


def kept_spans(marks: Iterable[tuple[str, int, int]], low_us: int, high_us: int) -> dict[str, list[Span]]:
    """Per metric, the merged spans of [low, high) a purge keeps: those of its dirty buckets (any period, given as
    (metric, period, start)), whose aggregates do not cover their events yet. Metrics in order of first mark."""
    spans: dict[str, list[Span]] = {}
    for metric, period, start in marks:
        end = next_start(Period(period), start)
        if start < high_us and end > low_us:
            spans.setdefault(metric, []).append((start, end))
    return {metric: merged(ranges) for metric, ranges in spans.items()}


def merged(spans: Iterable[Span]) -> list[Span]:
    """The spans in order, overlapping or touching ones joined."""
    joined: list[list[int]] = []
    for start, end in sorted(spans):
        if joined and start <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    return [(start, end) for start, end in joined]
