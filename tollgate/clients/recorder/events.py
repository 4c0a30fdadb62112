"""What record() queues, and its conversion (on the background thread) to a serialized UsageEvent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import NamedTuple

from tollgate.usage.v1 import usage_pb2


class Pending(NamedTuple):
    """One call to record(), as cheap to build on the caller's thread as a tuple."""

    metric: str
    quantity: int
    occurred_at: float | datetime
    actor_id: str
    correlation_id: str
    idempotency_key: str
    metadata: dict | None
    event_id: str | None
    dimensions: dict[str, str] | None = None


def to_payload(pending: Pending, *, source_service: str) -> tuple[str, bytes]:
    """(event_id, serialized UsageEvent); raises TypeError/ValueError for values protobuf refuses."""
    event = usage_pb2.UsageEvent(
        event_id=pending.event_id or str(uuid.uuid4()),
        metric=pending.metric,
        quantity=pending.quantity,
        actor_id=pending.actor_id,
        source_service=source_service,
        correlation_id=pending.correlation_id,
        idempotency_key=pending.idempotency_key,
    )
    when = pending.occurred_at
    if isinstance(when, datetime):
        # A naive datetime is taken as UTC, the service's only clock.
        event.occurred_at.FromDatetime(when if when.tzinfo else when.replace(tzinfo=UTC))
    elif isinstance(when, (int, float)) and not isinstance(when, bool):
        event.occurred_at.FromNanoseconds(int(when * 1_000_000_000))
    else:  # checked first: a str times 10^9 is a 10 GB string, not an error
        raise TypeError(f"occurred_at must be a datetime or epoch seconds, got {type(when).__name__}")
    if pending.metadata:
        event.metadata.update(pending.metadata)
    if pending.dimensions:
        event.dimensions.update(pending.dimensions)
    return event.event_id, event.SerializeToString()


def to_request(tenant_id: str, payloads: list[bytes]) -> usage_pb2.RecordEventsRequest:
    """A RecordEvents batch of spooled events, in spool order."""
    return usage_pb2.RecordEventsRequest(
        tenant_id=tenant_id, events=[usage_pb2.UsageEvent.FromString(p) for p in payloads]
    )
