"""Usage as Policy reads it: the questions it asks Usage and the named answers it gets back. Pure Python."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tollgate.services.policy.domain.dimensions import Filters

MICROS = 1_000_000


@dataclass(frozen=True)
class Window:
    """A half-open range [start_us, end_us) in epoch microseconds."""

    start_us: int
    end_us: int

    @classmethod
    def ending_at(cls, now_us: int, seconds: int) -> Window:
        """The last `seconds` up to and including the instant `now_us`."""
        return cls(now_us - seconds * MICROS, now_us + 1)


@dataclass(frozen=True)
class UsageQuery:
    """One GetUsage: the totals of `metrics` over `window`, the whole tenant's or one actor's."""

    tenant_id: str
    metrics: tuple[str, ...]
    window: Window
    actor_id: str = ""  # '' = every actor of the tenant


@dataclass(frozen=True)
class FilteredQuery:
    """One QueryUsage: the sum of `metric` over `window` of the usage `filters` allow, the whole tenant's or one
    actor's (a quota with dimension filters, domain/dimensions.py)."""

    tenant_id: str
    metric: str
    window: Window
    filters: Filters
    actor_id: str = ""  # '' = every actor of the tenant


@dataclass(frozen=True)
class Meter:
    """What Policy needs of a metric in Usage's catalog: whether its value is the quantities' sum, and the
    dimensions its events may carry."""

    is_sum: bool
    dimensions: tuple[str, ...]


# What a quota's usage is kept by: (metric, period, filters); QuotaLimit.usage_key.
UsageKey = tuple[str, int, Filters]


@dataclass(frozen=True)
class RankingTotals:
    """A ranking's usage per metric over its window: the whole tenant's, and the user's own."""

    tenant: Mapping[str, int]
    user: Mapping[str, int]

    def of(self, metrics: tuple[str, ...]) -> tuple[int, int]:
        """(user quantity, tenant quantity) of a feature measured by `metrics`."""
        return sum(self.user.get(m, 0) for m in metrics), sum(self.tenant.get(m, 0) for m in metrics)


@dataclass(frozen=True)
class QuotaUsage:
    """The quotas' usage in their current periods, by UsageKey: the tenant's, and `user_id`'s own for user-scoped
    quotas; `unavailable` says why when unknown."""

    used: Mapping[UsageKey, int] = field(default_factory=dict)
    unavailable: str = ""
    user_used: Mapping[UsageKey, int] = field(default_factory=dict)

    def of(self, key: UsageKey, *, user: bool = False) -> int | None:
        """The period's usage of the quota's metric and filters (0 without usage); None when Usage did not answer."""
        if self.unavailable:
            return None
        return (self.user_used if user else self.used).get(key, 0)


@dataclass(frozen=True)
class OutboxEvent:
    """A committed amount on its way to Usage: one usage event, its id derived from the reservation's."""

    event_id: str
    tenant_id: str
    metric: str
    user_id: str
    quantity: int
    occurred_us: int
    dimensions: str = ""  # canonical JSON, as the reservation's


@dataclass(frozen=True)
class Delivery:
    """Usage's verdict on one sent event: `held` when Usage has it (ACCEPTED, or DUPLICATE of the same content);
    otherwise `problem` says why Usage refused it, and `fixable` whether an operator can lift the refusal (a metric
    or dimension missing from Usage's catalog, the tenant's dimension combinations at their limit), so that a
    later send may be held."""

    event_id: str
    held: bool
    problem: str = ""
    fixable: bool = False
