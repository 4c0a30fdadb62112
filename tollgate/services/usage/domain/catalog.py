"""The metric catalog: its entries, the default catalog shipped with the service, and its rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from tollgate.services.usage.domain.model import Classification
from tollgate.shared.errors import FieldViolation, InvalidArgument

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,127}")
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


class IngestCatalog(NamedTuple):
    """What ingest needs of the catalog: each metric's classification, and the metrics without the business key."""

    classification_of: dict[str, Classification]
    without_business_key: frozenset[str]


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
    if violations:
        raise InvalidArgument(violations)
