"""What record() queues, and its conversion (on the background thread) to a serialized UsageEvent."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import NamedTuple

from google.protobuf import struct_pb2

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
    """(event_id, serialized UsageEvent); raises TypeError/ValueError for values protobuf refuses, and for those the
    server would refuse the whole batch for (a number without a JSON form in the metadata): a batch refused whole
    stays spooled, and every later event would wait behind it."""
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
        if not math.isfinite(when):
            raise ValueError(f"occurred_at must be a finite number of epoch seconds, got {when}")
        event.occurred_at.FromNanoseconds(int(when * 1_000_000_000))
    else:  # checked first: a str times 10^9 is a 10 GB string, not an error
        raise TypeError(f"occurred_at must be a datetime or epoch seconds, got {type(when).__name__}")
    if pending.metadata:
        event.metadata.update(pending.metadata)
        _check_json_numbers(event.metadata, "metadata")
    if pending.dimensions:
        event.dimensions.update(pending.dimensions)
    return event.event_id, event.SerializeToString()


def _check_json_numbers(struct: struct_pb2.Struct, path: str) -> None:
    """ValueError naming the first NaN or infinity in a Struct: JSON has no such number, and the server refuses the
    whole batch of an event holding one (a malformed message)."""
    pending = [(f"{path}.{key}", value) for key, value in struct.fields.items()]
    while pending:
        where, value = pending.pop()
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            raise ValueError(f"{where} is {value.number_value}; JSON numbers are finite")
        if kind == "struct_value":
            pending.extend((f"{where}.{key}", item) for key, item in value.struct_value.fields.items())
        elif kind == "list_value":
            pending.extend((f"{where}[{i}]", item) for i, item in enumerate(value.list_value.values))


def to_request(tenant_id: str, payloads: list[bytes]) -> usage_pb2.RecordEventsRequest:
    """A RecordEvents batch of spooled events, in spool order."""
    return usage_pb2.RecordEventsRequest(
        tenant_id=tenant_id, events=[usage_pb2.UsageEvent.FromString(p) for p in payloads]
    )
