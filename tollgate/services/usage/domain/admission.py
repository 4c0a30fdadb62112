"""Admitting events (docs/api.md, "Usage rules"): the checks of a batch and of each event, its content hash. Pure."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import NamedTuple

from tollgate.services.usage.domain import horizon
from tollgate.services.usage.domain.catalog import MAX_DIMENSIONS, IngestCatalog
from tollgate.services.usage.domain.model import (
    Candidate,
    Classification,
    Event,
    EventBatch,
    EventResult,
    IngestRules,
    RejectReason,
    Verdict,
)
from tollgate.shared import clock, tenant_ids
from tollgate.shared.errors import FieldViolation, InvalidArgument

Problem = tuple[RejectReason, str]  # why an event is REJECTED, and the message saying so

MAX_BATCH = 1000
MAX_ID_LENGTH = 128  # event_id, metric, actor_id, source_service, correlation_id, idempotency_key
MAX_METADATA_BYTES = 4096
# A bound per event keeps every total exact in int64 (it takes ~9 million maximal events to overflow).
MAX_QUANTITY = 10**12
STRING_FIELDS = ("event_id", "metric", "actor_id", "source_service", "correlation_id", "idempotency_key")


def check_batch(batch: EventBatch) -> None:
    """Raise InvalidArgument for faults of the whole batch; nothing of it may be stored then."""
    violations = []
    if problem := tenant_ids.problem(batch.tenant_id):
        violations.append(FieldViolation("tenant_id", problem))
    if not batch.events:
        violations.append(FieldViolation("events", "must hold at least one event"))
    elif len(batch.events) > MAX_BATCH:
        violations.append(FieldViolation("events", f"holds {len(batch.events)} events; at most {MAX_BATCH}"))
    if violations:
        raise InvalidArgument(violations)


class Admitted(NamedTuple):
    """A batch admitted: the events to store, and the REJECTED results of the others."""

    candidates: list[Candidate]
    rejected: list[EventResult]


def admit_batch(
    batch: EventBatch, *, catalog: IngestCatalog, rules: IngestRules, now_us: int, horizon_us: int | None
) -> Admitted:
    """Admit each event of the batch against the catalog, the rules and the tenant's purge horizon; a candidate keeps
    the business key only when its metric does."""
    candidates, rejections = [], []
    without_business_key, dimensions_of = catalog.without_business_key, catalog.dimensions_of
    for index, event in enumerate(batch.events):
        admitted = admit(
            index, event, catalog=catalog.classification_of, rules=rules, now_us=now_us, dimensions_of=dimensions_of
        )
        if isinstance(admitted, Candidate) and horizon_us is not None and _before(admitted, horizon_us):
            admitted = purged(index, event, horizon_us)
        if isinstance(admitted, EventResult):
            rejections.append(admitted)
        elif without_business_key and event.metric in without_business_key:
            candidates.append(admitted._replace(business_key=False))
        else:
            candidates.append(admitted)
    return Admitted(candidates, rejections)


def _before(candidate: Candidate, horizon_us: int) -> bool:
    at = candidate.event.occurred_at_us
    assert at is not None  # admit() rejects an event without one
    return horizon.ingest_refuses(at, horizon_us)


def purged(index: int, event: Event, horizon_us: int) -> EventResult:
    """The REJECTED result of an event falling in a week or month of the tenant whose raw events were purged."""
    return rejected(
        index,
        event,
        RejectReason.TOO_OLD,
        f"occurred_at falls in a week or month whose raw events "
        f"were purged (this tenant's history is final before {clock.iso(horizon_us)})",
    )


def in_order(results: list[EventResult]) -> list[EventResult]:
    """The results of a batch, one per event, in the order of its events."""
    return sorted(results, key=lambda result: result.index)


def classification_names(batch: EventBatch, classification_of: dict[str, Classification]) -> dict[int, str]:
    """The classification of each event of the batch whose metric is in the catalog, by its index."""
    return {i: classification_of[e.metric].name for i, e in enumerate(batch.events) if e.metric in classification_of}


def rejected(index: int, event: Event, reason: RejectReason, message: str) -> EventResult:
    """The REJECTED result of an event."""
    return EventResult(index, event.event_id, Verdict.REJECTED, reason, message)


def admit(
    index: int,
    event: Event,
    *,
    catalog: dict[str, Classification],
    rules: IngestRules,
    now_us: int,
    dimensions_of: dict[str, frozenset[str]] | None = None,
) -> Candidate | EventResult:
    """A Candidate for a valid event, or the REJECTED result saying what is wrong with it; `dimensions_of` holds the
    declared dimensions of the metrics that declare some."""
    problem = _field_problem(event) or _value_problem(event, catalog, rules, now_us)
    dimensions_json = None
    if not problem and event.dimensions:
        problem, dimensions_json = judge_dimensions(event, dimensions_of or {})
    if problem:
        return rejected(index, event, *problem)
    metadata_json = None
    if event.metadata:
        if _holds_nul(event.metadata):
            return rejected(index, event, RejectReason.NUL_CHARACTER, "metadata holds a NUL character")
        metadata_json = json.dumps(event.metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        size = len(metadata_json.encode())
        if size > MAX_METADATA_BYTES:
            return rejected(
                index,
                event,
                RejectReason.METADATA_TOO_LARGE,
                f"metadata encodes to {size} bytes of JSON; at most {MAX_METADATA_BYTES}",
            )
    if dimensions_json:
        return Candidate(
            index,
            event,
            catalog[event.metric],
            metadata_json,
            content_hash(event, metadata_json, dimensions_json),
            dimensions_json=dimensions_json,
        )
    return Candidate(index, event, catalog[event.metric], metadata_json, content_hash(event, metadata_json))


def judge_dimensions(event: Event, declared_of: dict[str, frozenset[str]]) -> tuple[Problem | None, str | None]:
    """What is wrong with the event's dimensions against those its metric declares (`declared_of`, the batch's
    catalog; None when nothing is), and their canonical JSON when nothing is."""
    assert event.dimensions
    # Keyed in the event's own key order: a producer writes its events alike, and another order only misses.
    return _judged(event.metric, declared_of.get(event.metric, frozenset()), tuple(event.dimensions.items()))


@functools.lru_cache(maxsize=65_536)
def _judged(
    metric: str, declared: frozenset[str], items: tuple[tuple[str, str], ...]
) -> tuple[Problem | None, str | None]:
    """Few combinations recur in a tenant's events: each is checked and encoded once (what it is judged by, the
    declared dimensions, is part of the key)."""
    dimensions = dict(items)
    problem = dimension_problem(metric, dimensions, declared)
    return problem, None if problem else canonical(dimensions)


def dimension_problem(metric: str, dimensions: dict[str, str], declared: frozenset[str]) -> Problem | None:
    """What is wrong with an event's dimensions against those its metric declares, None when nothing is."""
    if len(dimensions) > MAX_DIMENSIONS:
        return RejectReason.TOO_MANY_DIMENSIONS, f"carries {len(dimensions)} dimensions; at most {MAX_DIMENSIONS}"
    for name, value in sorted(dimensions.items()):
        if not value:
            return (
                RejectReason.EMPTY_DIMENSION_VALUE,
                f"dimension {name[:64]!r} has an empty value; leave it out instead",
            )
        if "\x00" in value or "\x00" in name:
            return RejectReason.NUL_CHARACTER, f"dimension {name[:64]!r} holds a NUL character"
        if len(value) > MAX_ID_LENGTH:
            return (
                RejectReason.FIELD_TOO_LONG,
                f"dimension {name[:64]!r} has {len(value)} characters; at most {MAX_ID_LENGTH}",
            )
        if name not in declared:
            return (
                RejectReason.UNDECLARED_DIMENSION,
                f"dimension {name[:64]!r} is not declared by metric {metric!r} (it declares {sorted(declared)})",
            )
    return None


def canonical(dimensions: dict[str, str]) -> str:
    """The stored form of an event's dimensions: compact JSON with sorted keys (what a query extracts from)."""
    return json.dumps(dimensions, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _field_problem(event: Event) -> tuple[RejectReason, str] | None:
    if not (event.event_id and event.metric and event.source_service and event.occurred_at_us is not None):
        missing = next(
            name
            for name in ("event_id", "metric", "source_service", "occurred_at_us")
            if getattr(event, name) in ("", None)
        )
        return RejectReason.MISSING_FIELD, f"{missing.removesuffix('_us')} is required"
    strings = event[:2] + event[4:8]
    # One pass over all strings for the common case; name the field only when something is wrong.
    if "\x00" in "".join(strings):
        name = next(name for name, value in zip(STRING_FIELDS, strings) if "\x00" in value)
        return RejectReason.NUL_CHARACTER, f"{name} holds a NUL character"
    if max(map(len, strings)) > MAX_ID_LENGTH:
        name, value = next((n, v) for n, v in zip(STRING_FIELDS, strings) if len(v) > MAX_ID_LENGTH)
        return RejectReason.FIELD_TOO_LONG, f"{name} has {len(value)} characters; at most {MAX_ID_LENGTH}"
    return None


def _value_problem(event: Event, catalog, rules: IngestRules, now_us: int) -> tuple[RejectReason, str] | None:
    classification = catalog.get(event.metric)
    if classification is None:
        return RejectReason.UNKNOWN_METRIC, f"metric {event.metric!r} is not in the catalog"
    if event.quantity <= 0:
        return RejectReason.NON_POSITIVE_QUANTITY, f"quantity must be greater than 0, got {event.quantity}"
    if event.quantity > MAX_QUANTITY:
        return RejectReason.QUANTITY_TOO_LARGE, f"quantity must be at most {MAX_QUANTITY}, got {event.quantity}"
    at = event.occurred_at_us
    assert at is not None  # _field_problem rejects an event without one
    if at > now_us + rules.future_skew_us:
        return RejectReason.IN_FUTURE, f"occurred_at is more than {rules.future_skew_us // 1_000_000} s ahead"
    if at < now_us - rules.backfill_us:
        return RejectReason.TOO_OLD, f"occurred_at is older than {rules.backfill_us // 86_400_000_000} days"
    if classification is Classification.BILLABLE and event.source_service.startswith(rules.external_prefixes):
        return (
            RejectReason.EXTERNAL_BILLABLE,
            f"external source {event.source_service!r} may not emit billable metric {event.metric!r}",
        )
    return None


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def content_hash(event: Event, metadata_json: str | None, dimensions_json: str | None = None) -> str:
    """SHA-256 of what the event says happened; its identifiers (event_id, idempotency_key) are not content.

    NUL cannot occur in a valid event, so it separates the fields unambiguously. Dimensions are a part only when the
    event carries some, so an event without any hashes as it did before events had dimensions (a resend of an event
    stored then is still its DUPLICATE).
    """
    parts: tuple[str, ...] = (
        event.metric,
        str(event.quantity),
        str(event.occurred_at_us),
        event.actor_id,
        event.source_service,
        event.correlation_id,
        metadata_json or "",
    )
    if dimensions_json:
        parts += (dimensions_json,)
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


Combination = tuple[str, str]  # (metric, canonical dimensions JSON): what USAGE_MAX_DIMENSION_COMBINATIONS bounds


def combinations(candidates: list[Candidate]) -> list[Combination]:
    """The distinct combinations the candidates carry, in the order of the first event carrying each; an event
    without dimensions carries none (it costs no combination)."""
    return list(dict.fromkeys((c.event.metric, c.dimensions_json) for c in candidates if c.dimensions_json))


def beyond_limit(new: list[Combination], counts: dict[str, int], limit: int) -> set[Combination]:
    """Which of the `new` combinations (in the order of their first event) would take their metric past `limit`
    distinct combinations, given how many each metric's events carry already (`counts`): the first ones fit."""
    room: dict[str, int] = {}
    refused = set()
    for combination in new:
        metric = combination[0]
        left = room.get(metric, limit - counts.get(metric, 0))
        if left > 0:
            room[metric] = left - 1
        else:
            room[metric] = left
            refused.add(combination)
    return refused


def refuse_combinations(admitted: Admitted, refused: set[Combination], limit: int) -> Admitted:
    """The batch admitted without the events carrying a `refused` combination, which are REJECTED instead."""
    if not refused:
        return admitted
    candidates, rejections = [], list(admitted.rejected)
    for candidate in admitted.candidates:
        metric, dimensions_json = candidate.event.metric, candidate.dimensions_json
        if dimensions_json and (metric, dimensions_json) in refused:
            rejections.append(
                rejected(
                    candidate.index,
                    candidate.event,
                    RejectReason.TOO_MANY_DIMENSION_COMBINATIONS,
                    f"dimensions {_clip(dimensions_json)} are a new combination of metric {metric!r}, and this "
                    f"tenant's events of it already carry {limit} distinct combinations, the most allowed",
                )
            )
        else:
            candidates.append(candidate)
    return Admitted(candidates, rejections)


def _clip(text: str, bound: int = 256) -> str:
    return text if len(text) <= bound else text[: bound - 1] + "…"
