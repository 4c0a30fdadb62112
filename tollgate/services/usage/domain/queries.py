"""Read-side domain: what a usage question asks and what it answers. No grpc, no SQL."""

from __future__ import annotations

from dataclasses import dataclass

from tollgate.services.usage.domain.buckets import Period
from tollgate.services.usage.domain.model import Classification, Event


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Exact totals over [start_us, end_us) for a tenant, one actor, or grouped by actor."""

    tenant_id: str
    start_us: int | None
    end_us: int | None
    metrics: tuple[str, ...] = ()
    actor_id: str = ""
    group_by_actor: bool = False
    include_tenant_totals: bool = False  # with actor_id: the tenant's totals too

    @property
    def by_actor(self) -> bool:
        """Answered per actor (one named, or grouped): from raw events, aggregates have no actor."""
        return self.group_by_actor or bool(self.actor_id)


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """The exact total of one metric (and actor) over the range."""

    metric: str
    actor_id: str
    quantity: int
    event_count: int
    classification: Classification | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Filters of ListEvents; empty strings and None mean "any"."""

    tenant_id: str
    metric: str = ""
    actor_id: str = ""
    source_service: str = ""
    correlation_id: str = ""
    start_us: int | None = None
    end_us: int | None = None

    def scope(self) -> dict:
        """What a page token is bound to: the tenant and every filter."""
        return {
            "list": "events",
            "tenant": self.tenant_id,
            "metric": self.metric,
            "actor": self.actor_id,
            "source": self.source_service,
            "correlation": self.correlation_id,
            "start": self.start_us,
            "end": self.end_us,
        }


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, with what the service added."""

    tenant_id: str
    event: Event
    classification: Classification
    received_at_us: int


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One stored bucket as ListAggregates shows it; `dirty` when a mark says it is stale."""

    tenant_id: str
    metric: str
    period: Period
    period_start_us: int
    total_quantity: int
    event_count: int
    source_hash: str
    computed_at_us: int
    dirty: bool
