"""QueryUsage and ListDimensionValues, the questions: their fields' rules, their rules against the metric they name,
and the plan one statement answers (docs/usage.md, "Meters"). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from tollgate.services.usage.domain import meter_rollups
from tollgate.services.usage.domain.aggregations import ACTOR_ID, Aggregation
from tollgate.services.usage.domain.catalog import MAX_DIMENSIONS, Metric
from tollgate.services.usage.domain.windows import Span, Window
from tollgate.shared.errors import FieldViolation, InvalidArgument

MAX_GROUP_BY = MAX_DIMENSIONS + 1  # every dimension and the actor
MAX_FILTER_VALUES = 100
MAX_ACTORS = 100

# One group's value in one window: (the window's index, the group's values in group_by order, the value, the event
# count). Rows stay this compact from the statement to the response: a page holds up to 1,000 of them.
MeterRow = tuple[int, tuple[str, ...], int, int]


@dataclass(frozen=True, slots=True)
class MeterQuery:
    """One metric's value over [start_us, end_us) by window (in `time_zone`) and group, filtered; filters sorted by
    dimension name."""

    tenant_id: str
    metric: str
    start_us: int | None
    end_us: int | None
    window: Window = Window.NONE
    time_zone: str = ""
    group_by: tuple[str, ...] = ()
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    actor_ids: tuple[str, ...] = ()

    def scope(self) -> dict:
        """What a page token is bound to: the tenant and every field of the question."""
        return {
            "list": "meter",
            "tenant": self.tenant_id,
            "metric": self.metric,
            "start": self.start_us,
            "end": self.end_us,
            "window": self.window.name,
            "zone": self.time_zone,
            "group_by": list(self.group_by),
            "filters": [[name, list(values)] for name, values in self.filters],
            "actors": list(self.actor_ids),
        }


class MeterPlan(NamedTuple):
    """What one statement of QueryUsage reads: windows [first_window:] of `windows`, the metric's aggregation, and
    the groups and filters as dimension names (ACTOR_ID for the actor)."""

    tenant_id: str
    metric: str
    aggregation: Aggregation
    unique_of: str
    windows: list[Span]
    first_window: int
    group_by: tuple[str, ...]
    filters: tuple[tuple[str, tuple[str, ...]], ...]
    actor_ids: tuple[str, ...]
    cuboid: str | None = None  # the rollup cuboid answering it where days are rolled up; None: raw events only


def check_shape(query: MeterQuery) -> None:
    """Raise InvalidArgument for faults of the question that need no catalog: sizes and repeats."""
    violations = []
    if len(query.group_by) > MAX_GROUP_BY:
        violations.append(FieldViolation("group_by", f"names {len(query.group_by)} groups; at most {MAX_GROUP_BY}"))
    for position, name in enumerate(query.group_by):
        if name in query.group_by[:position]:
            violations.append(FieldViolation(f"group_by[{position}]", f"names {name[:64]!r} twice"))
    for name, values in query.filters:
        if not 1 <= len(values) <= MAX_FILTER_VALUES:
            violations.append(FieldViolation(f"filters[{name[:64]}]", f"must hold 1 to {MAX_FILTER_VALUES} values"))
    if len(query.actor_ids) > MAX_ACTORS:
        violations.append(FieldViolation("actor_ids", f"names {len(query.actor_ids)} actors; at most {MAX_ACTORS}"))
    if violations:
        raise InvalidArgument(violations)


def check_against(query: MeterQuery, metric: Metric) -> None:
    """Raise InvalidArgument naming every group and filter that is not a dimension the metric declares (groups
    may also name actor_id; actors are filtered by actor_ids)."""
    declared = set(metric.dimensions)
    violations = [
        FieldViolation(f"group_by[{position}]", _undeclared(name, metric, "or 'actor_id'"))
        for position, name in enumerate(query.group_by)
        if name not in declared and name != ACTOR_ID
    ]
    violations += [
        FieldViolation(f"filters[{name[:64]}]", _undeclared(name, metric, "(actors are filtered by actor_ids)"))
        for name, _ in query.filters
        if name not in declared
    ]
    if violations:
        raise InvalidArgument(violations)


def check_dimension(name: str, metric: Metric, field: str = "dimension") -> None:
    """Raise InvalidArgument naming `field` unless `name` is a dimension the metric declares or actor_id."""
    if name != ACTOR_ID and name not in metric.dimensions:
        raise InvalidArgument(FieldViolation(field, _undeclared(name, metric, "or 'actor_id'")))


def _undeclared(name: str, metric: Metric, alternative: str) -> str:
    declared = ", ".join(repr(d) for d in metric.dimensions) or "none"
    return f"{name[:64]!r} is not a dimension of metric {metric.name!r} (it declares {declared}) {alternative}"


def plan(query: MeterQuery, metric: Metric, windows: list[Span], first_window: int) -> MeterPlan:
    """The plan of the page starting at window `first_window` (its cursor's window; 0 for the first page)."""
    return MeterPlan(
        query.tenant_id,
        query.metric,
        metric.aggregation,
        metric.unique_of,
        windows,
        first_window,
        query.group_by,
        query.filters,
        query.actor_ids,
        meter_rollups.cuboid_for(
            metric.aggregation, query.group_by, [name for name, _ in query.filters], query.actor_ids
        ),
    )
