"""The metric names of features and quotas, checked against Usage's catalog before they are stored.

A name Usage does not know would make a quota that never bites and a ranking that reads zero, so
it is refused while Usage answers; so is a quota filter on a dimension its metric does not declare, or
on a metric whose value is not the quantities' sum (docs/entitlements.md, "Dimension filters"). When
Usage cannot answer, the write is accepted: the catalog must stay writable in an outage, and the
answer and the log say which names went unchecked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tollgate.services.policy.domain.errors import UnknownMetric, UsageUnavailable
from tollgate.services.policy.domain.model import QuotaLimit
from tollgate.services.policy.usage_port import Deadline, UsagePort
from tollgate.shared.errors import FieldViolation, InvalidArgument

log = logging.getLogger("tollgate.policy.metric_names")


@dataclass(frozen=True)
class MetricCheck:
    """The names accepted without a check because Usage did not answer, and why; empty when all were checked."""

    unchecked: tuple[str, ...] = ()
    reason: str = ""


def check(
    named: list[tuple[str, str]],
    *,
    usage: UsagePort,
    action: str,
    deadline: Deadline,
    filtered: Sequence[tuple[str, QuotaLimit]] = (),
) -> MetricCheck:
    """Refuse (UnknownMetric) the (field, metric) pairs whose metric Usage lacks, and (InvalidArgument) the filters of
    the (field, quota) pairs its metric cannot serve; unchecked if Usage is down."""
    if not named:
        return MetricCheck()
    try:
        known = usage.metric_catalog(deadline=deadline)
    except UsageUnavailable as error:
        names = tuple(dict.fromkeys(metric for _field, metric in named))
        log.warning(
            "%s accepted metric names %s without checking them against Usage's catalog: %s",
            action,
            list(names),
            error.message,
        )
        return MetricCheck(names, error.message)
    unknown = [(field, metric) for field, metric in named if metric not in known]
    if unknown:
        raise UnknownMetric(unknown)
    violations = []
    for field, quota in filtered:
        meter = known[quota.metric]
        if not meter.is_sum:
            violations.append(FieldViolation(field, f"needs a SUM metric to count: {quota.metric!r} is not one"))
        violations += [
            FieldViolation(f"{field}[{name}]", f"is not declared by metric {quota.metric!r} ({list(meter.dimensions)})")
            for name, _values in quota.filters
            if name not in meter.dimensions
        ]
    if violations:
        raise InvalidArgument(violations)
    return MetricCheck()
