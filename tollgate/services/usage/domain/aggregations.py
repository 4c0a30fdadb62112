"""What a metric's value over a set of events is (its aggregation), and how the values of parts combine into the
value of their union, exactly. Pure: the definition QueryUsage's SQL computes (docs/usage.md, "Meters"), and the
rule a rollup bucket will follow.

Every value is an exact integer. LATEST is the quantity of the latest event by occurred_at, ties broken by the
larger event_id (in code point order, which is UTF-8 byte order). UNIQUE_COUNT counts the distinct non-empty values
of what the metric names (actor_id or one dimension); an event without one still counts in event_count.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple


class Aggregation(enum.Enum):
    """How a metric's events make one value; SUM is every metric's default."""

    SUM = 1
    COUNT = 2
    MIN = 3
    MAX = 4
    LATEST = 5
    UNIQUE_COUNT = 6


ACTOR_ID = "actor_id"  # what UNIQUE_COUNT counts, and a group, besides the declared dimensions


class Sample(NamedTuple):
    """What an aggregation reads of one event; `unique` is the value UNIQUE_COUNT counts ('' for none)."""

    occurred_at_us: int
    event_id: str
    quantity: int
    unique: str = ""


@dataclass(frozen=True, slots=True)
class Partial:
    """The state of every aggregation over some events, from which the state of a union is computed exactly:
    sums add, MIN and MAX take the extreme, LATEST the later of the two latest events, UNIQUE_COUNT unites the
    distinct values (a set, never an estimate)."""

    total: int = 0
    count: int = 0
    low: int | None = None
    high: int | None = None
    latest: tuple[int, str, int] | None = None  # (occurred_at_us, event_id, quantity) of the latest event
    distinct: frozenset[str] = frozenset()

    def merged(self, other: Partial) -> Partial:
        """The state of the union of the two parts' events (disjoint sets of events)."""
        return Partial(
            self.total + other.total,
            self.count + other.count,
            _extreme(min, self.low, other.low),
            _extreme(max, self.high, other.high),
            _extreme(max, self.latest, other.latest),
            self.distinct | other.distinct,
        )

    def value(self, kind: Aggregation) -> int:
        """The aggregation's value over the part's events (0 over none)."""
        if kind is Aggregation.SUM:
            return self.total
        if kind is Aggregation.COUNT:
            return self.count
        if kind is Aggregation.MIN:
            return self.low or 0
        if kind is Aggregation.MAX:
            return self.high or 0
        if kind is Aggregation.LATEST:
            return self.latest[2] if self.latest else 0
        return len(self.distinct)


def partial(samples: Iterable[Sample]) -> Partial:
    """The state of the events read as `samples`."""
    state = Partial()
    for s in samples:
        state = state.merged(
            Partial(s.quantity, 1, s.quantity, s.quantity, (s.occurred_at_us, s.event_id, s.quantity), _one(s.unique))
        )
    return state


def value(kind: Aggregation, samples: Iterable[Sample]) -> int:
    """The aggregation's value over the events read as `samples`."""
    return partial(samples).value(kind)


def _one(unique: str) -> frozenset[str]:
    return frozenset((unique,)) if unique else frozenset()


def _extreme(pick, a, b):
    if a is None:
        return b
    if b is None:
        return a
    return pick(a, b)
