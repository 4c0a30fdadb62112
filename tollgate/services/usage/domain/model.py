"""Usage's values: events, verdicts, candidates and the keys of stored events. Pure Python."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class Verdict(enum.Enum):
    ACCEPTED = 1
    DUPLICATE = 2
    CONFLICT = 3
    REJECTED = 4


class RejectReason(enum.Enum):
    MISSING_FIELD = 1
    UNKNOWN_METRIC = 2
    NON_POSITIVE_QUANTITY = 3
    IN_FUTURE = 4
    TOO_OLD = 5
    FIELD_TOO_LONG = 6
    NUL_CHARACTER = 7
    METADATA_TOO_LARGE = 8
    EXTERNAL_BILLABLE = 9
    QUANTITY_TOO_LARGE = 10
    UNDECLARED_DIMENSION = 11
    TOO_MANY_DIMENSIONS = 12
    EMPTY_DIMENSION_VALUE = 13
    TOO_MANY_DIMENSION_COMBINATIONS = 14


class DedupKey(enum.Enum):
    EVENT_ID = 1
    IDEMPOTENCY_KEY = 2
    CORRELATION = 3


class Classification(enum.Enum):
    BILLABLE = 1
    NON_BILLABLE = 2
    INFO = 3


class Event(NamedTuple):
    """One usage event as the sender reports it; occurred_at_us is None when not given.

    A NamedTuple rather than a frozen dataclass: as immutable, and far cheaper to build, which matters
    at 1,000 per batch (figures in bench/RESULTS.md).
    """

    event_id: str
    metric: str
    quantity: int
    occurred_at_us: int | None
    actor_id: str = ""
    source_service: str = ""
    correlation_id: str = ""
    idempotency_key: str = ""
    metadata: dict | None = None
    dimensions: dict[str, str] | None = None  # values of dimensions its metric declares; None or {} for none


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One tenant's batch, as received."""

    tenant_id: str
    events: tuple[Event, ...]


class EventResult(NamedTuple):
    """The verdict on the event at `index` of its batch (a NamedTuple for the reason Event is one)."""

    # The field shadows tuple.index() on purpose: callers read the position, never call the method.
    index: int  # type: ignore[assignment]
    event_id: str
    verdict: Verdict
    reason: RejectReason | None = None
    message: str = ""
    dedup_key: DedupKey | None = None
    existing_event_id: str = ""


@dataclass(frozen=True, slots=True)
class IngestRules:
    """The configurable part of validation."""

    future_skew_us: int
    backfill_us: int
    external_prefixes: tuple[str, ...]
    # Distinct dimension combinations a tenant's events of one metric may carry (docs/usage.md, "Meters").
    max_dimension_combinations: int = 10_000


class Candidate(NamedTuple):
    """A valid event, ready to store: its classification, canonical metadata and content hash."""

    index: int  # type: ignore[assignment]  # shadows tuple.index(), as EventResult's does
    event: Event
    classification: Classification
    metadata_json: str | None
    content_hash: str
    business_key: bool = True  # whether its metric keeps (correlation_id, metric, occurred_at) as a dedup key
    dimensions_json: str | None = None  # canonical JSON of its dimensions (sorted keys, no spaces), None for none


class StoredKeys(NamedTuple):
    """The dedup keys and content hash of a stored event."""

    event_id: str
    idempotency_key: str | None
    correlation_id: str | None
    metric: str
    occurred_at_us: int
    content_hash: str
    business_key: bool  # whether the business key held when it was stored
