"""The metric catalog: its entries, the default catalog shipped with the service, and its rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from tollgate.services.usage.domain.aggregations import ACTOR_ID, Aggregation
from tollgate.services.usage.domain.model import Classification
from tollgate.shared.errors import FailedPrecondition, FieldViolation, InvalidArgument

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,127}")
DIMENSION_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_DIMENSIONS = 8
MAX_UNIT = 64
MAX_DESCRIPTION = 1024


@dataclass(frozen=True, slots=True)
class Metric:
    """One catalog entry; the classification of its events comes from here, never from the sender."""

    name: str
    classification: Classification | None
    unit: str = ""
    description: str = ""
    business_key: bool = True  # (correlation_id, metric, occurred_at) deduplicates the metric's events
    aggregation: Aggregation = Aggregation.SUM
    unique_of: str = ""  # what UNIQUE_COUNT counts: ACTOR_ID or one of `dimensions`
    dimensions: tuple[str, ...] = ()  # the names its events may carry, in the order declared


class IngestCatalog(NamedTuple):
    """What ingest needs of the catalog: each metric's classification, the metrics without the business key, and
    the dimensions of the metrics that declare some."""

    classification_of: dict[str, Classification]
    without_business_key: frozenset[str]
    dimensions_of: dict[str, frozenset[str]] = {}


_B, _N = Classification.BILLABLE, Classification.NON_BILLABLE

# Seeded by migration usage_0002 (which keeps its own frozen copy of this list).
DEFAULT_CATALOG = (
    Metric("leads.processed", _B, "lead", "Leads processed."),
    Metric("leads.qualified", _B, "lead", "Leads qualified."),
    Metric("leads.routed", _B, "lead", "Leads routed to an owner."),
    Metric("scoring.requests", _B, "request", "Scoring requests served."),
    Metric("scoring.models.used", _B, "model", "Scoring models used."),
    Metric("voice.minutes.authorized", _B, "minute", "Voice minutes authorized."),
    Metric("voice.calls.initiated", _B, "call", "Voice calls initiated."),
    Metric("voice.calls.completed", _B, "call", "Voice calls completed."),
    Metric("api.requests", _B, "request", "API requests."),
    Metric("api.requests.successful", _B, "request", "API requests that succeeded."),
    Metric("integrations.api.calls", _B, "call", "Calls to integration APIs."),
    Metric("sla.timers.started", _N, "timer", "SLA timers started."),
    Metric("sla.timers.violated", _N, "timer", "SLA timers violated."),
    Metric("sla.escalations.triggered", _N, "escalation", "SLA escalations triggered."),
    Metric("api.requests.failed", _N, "request", "API requests that failed."),
    Metric("integrations.webhooks.received", _N, "webhook", "Integration webhooks received."),
)


def check_metric(metric: Metric) -> None:
    """Raise InvalidArgument naming every bad field of a metric to upsert."""
    violations = []
    if not NAME_PATTERN.fullmatch(metric.name):
        violations.append(
            FieldViolation("metric.name", "must match ^[a-z][a-z0-9_.-]{0,127}$ (lower case, digits, '.', '_', '-')")
        )
    if metric.classification is None:
        violations.append(FieldViolation("metric.classification", "is required"))
    for field, value, bound in (("unit", metric.unit, MAX_UNIT), ("description", metric.description, MAX_DESCRIPTION)):
        if len(value) > bound or "\x00" in value:
            violations.append(FieldViolation(f"metric.{field}", f"must be at most {bound} characters without NUL"))
    violations += _dimension_violations(metric)
    if violations:
        raise InvalidArgument(violations)


def _dimension_violations(metric: Metric) -> list[FieldViolation]:
    violations = []
    if len(metric.dimensions) > MAX_DIMENSIONS:
        violations.append(
            FieldViolation(
                "metric.dimensions", f"declares {len(metric.dimensions)} dimensions; at most {MAX_DIMENSIONS}"
            )
        )
    for position, name in enumerate(metric.dimensions):
        if not DIMENSION_PATTERN.fullmatch(name) or name == ACTOR_ID:
            violations.append(
                FieldViolation(
                    f"metric.dimensions[{position}]",
                    "must match ^[a-z][a-z0-9_]{0,31}$ and not be 'actor_id' (every event has an actor_id)",
                )
            )
        elif name in metric.dimensions[:position]:
            violations.append(FieldViolation(f"metric.dimensions[{position}]", f"declares {name!r} twice"))
    if metric.aggregation is Aggregation.UNIQUE_COUNT:
        if metric.unique_of != ACTOR_ID and metric.unique_of not in metric.dimensions:
            violations.append(
                FieldViolation("metric.unique_of", "must be 'actor_id' or a declared dimension for UNIQUE_COUNT")
            )
    elif metric.unique_of:
        violations.append(FieldViolation("metric.unique_of", "is only for the UNIQUE_COUNT aggregation"))
    return violations


def changes_meaning(stored: Metric, new: Metric) -> bool:
    """Whether updating `stored` to `new` changes what the metric's value is (its aggregation or unique_of)."""
    return (stored.aggregation, stored.unique_of) != (new.aggregation, new.unique_of)


def removed_dimensions(stored: Metric, new: Metric) -> list[str]:
    """The dimensions `stored` declares and `new` does not, in the order declared."""
    return [name for name in stored.dimensions if name not in new.dimensions]


def check_change(stored: Metric, new: Metric, *, has_events: bool, carried: frozenset[str]) -> None:
    """Raise FailedPrecondition when updating `stored` to `new` would change the meaning of events already stored:
    a new aggregation or unique_of once the metric has events, or a removed dimension some event carries."""
    if has_events and changes_meaning(stored, new):
        raise FailedPrecondition(
            f"metric {new.name!r} has events aggregated as {_counted(stored)}; changing it to {_counted(new)} would "
            "rewrite the meaning of its history: create a new metric instead",
            reason="METRIC_HAS_EVENTS",
        )
    if removed := sorted(carried - set(new.dimensions)):
        raise FailedPrecondition(
            f"metric {new.name!r} has events carrying dimensions {removed}; a dimension events carry cannot be "
            "removed (declare it again, or create a new metric)",
            reason="DIMENSION_IN_USE",
        )


def _counted(metric: Metric) -> str:
    return f"UNIQUE_COUNT of {metric.unique_of}" if metric.unique_of else metric.aggregation.name
