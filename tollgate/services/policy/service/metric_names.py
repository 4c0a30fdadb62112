"""The metric names of features and quotas, checked against Usage's catalog before they are stored.

A name Usage does not know would make a quota that never bites and a ranking that reads zero, so
it is refused while Usage answers. When Usage cannot answer, the write is accepted: the catalog
must stay writable in an outage, and the answer and the log say which names went unchecked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tollgate.services.policy.domain.errors import UnknownMetric, UsageUnavailable
from tollgate.services.policy.usage_port import Deadline, UsagePort

log = logging.getLogger("tollgate.policy.metric_names")


@dataclass(frozen=True)
class MetricCheck:
    """The names accepted without a check because Usage did not answer, and why; empty when all were checked."""

    unchecked: tuple[str, ...] = ()
    reason: str = ""


def check(named: list[tuple[str, str]], *, usage: UsagePort, action: str, deadline: Deadline) -> MetricCheck:
    """Refuse (UnknownMetric) the (field, metric) pairs whose metric Usage lacks; unchecked if Usage is down."""
    if not named:
        return MetricCheck()
    try:
        known = usage.metric_names(deadline=deadline)
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
    return MetricCheck()
