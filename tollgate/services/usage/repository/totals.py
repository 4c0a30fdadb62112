"""GetUsage's one statement, built from its plan (read_plan.py): the part both backends share.

Each backend writes a few pieces its own way (the list of metrics, exact sums, the hours of a day row:
its `Pieces`, in postgres/totals.py and sqlite/totals.py) and sends the statement its own way.
"""

from __future__ import annotations

import functools
from typing import Protocol

from sqlalchemy import and_, bindparam, exists, func, literal_column, null, or_, select, true, union_all
from sqlalchemy.sql.elements import BindParameter, ColumnClause

from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US, Period
from tollgate.services.usage.domain.queries import UsageQuery
from tollgate.services.usage.domain.read_plan import ReadPlan
from tollgate.services.usage.repository.ranges_first import ShortRangesFirst
from tollgate.services.usage.repository.rollups import bit
from tollgate.services.usage.tables import aggregates, dirty_buckets, events, metrics, purge_horizons

# Short aliases: the statement's text is sent, and parsed by the server, once per connection and shape.
EVENTS, DAY_ROWS, _metrics, _horizons = (
    events.alias("e"),
    aggregates.alias("a"),
    metrics.alias("c"),
    purge_horizons.alias("p"),
)

# Constants written into the statement rather than bound: shorter text, nothing for the planner to guess.
DAY: ColumnClause[int] = literal_column(str(int(Period.DAY)))
ZERO: ColumnClause[int] = literal_column("0")
ONE: ColumnClause[int] = literal_column("1")
_HOUR_US: ColumnClause[int] = literal_column(str(HOUR_US))
_DAY_US: ColumnClause[int] = literal_column(str(DAY_US))


class Pieces(Protocol):
    """The pieces of the statement a backend writes its own way."""

    def metrics(self):
        """The parameter `metrics`: the metrics a question names."""

    def metric_in(self, column, metrics):
        """The condition `column` is one of `metrics`."""

    def sums(self, union) -> list:
        """The exact sum of the parts' quantities, as the columns of the totals before `events`."""

    def horizon_padding(self) -> list:
        """The horizon row's columns in place of the sums' columns other than `quantity`."""

    def quantity_of(self, row) -> int:
        """The exact total of a totals row."""

    def day_hours(self):
        """The hours of a day, 0 to 23, as a column of a FROM item (`.table`)."""

    def hour_cells(self) -> tuple:
        """(offset, quantity, event count, FROM item) of the hours of the day row `a`, one row per hour."""

    def end_hours(self, tenant, hour_ranges: int):
        """The statement summing the hours of each end's day row of the plan, if that day is unmarked."""


def shape(query: UsageQuery, plan: ReadPlan) -> tuple:
    """What tells one statement from another: the parts a plan leaves out entirely, and the filters."""
    return (query.by_actor, bool(query.actor_id), bool(query.metrics), len(plan.raw), len(plan.hours), bool(plan.days))


def parameters(query: UsageQuery, plan: ReadPlan) -> dict:
    """The plan as bind parameters of the fixed-shape statement; an absent range is empty, (0, 0)."""
    raw = list(plan.raw) + [(0, 0)] * (2 - len(plan.raw))
    days = plan.days or (0, 0)
    span = plan.whole_hours() or (0, 0)
    values = {
        "tenant": query.tenant_id,
        "actor": query.actor_id,
        "metrics": list(query.metrics),
        "raw0_lo": raw[0][0],
        "raw0_hi": raw[0][1],
        "raw1_lo": raw[1][0],
        "raw1_hi": raw[1][1],
        "day_lo": days[0],
        "day_hi": days[1],
        "span_lo": span[0],
        "span_hi": span[1],
    }
    for n, (day, first, end) in enumerate(plan.hours_by_day()):
        values.update({f"hour{n}_day": day, f"hour{n}_from": first, f"hour{n}_to": end})
    return values


def decode(pieces: Pieces, found, by_actor: bool) -> tuple[list[tuple], int | None]:
    """The statement's rows as (metric, actor_id, quantity, event_count, classification) sorted by metric and
    actor, and the tenant's purge horizon (the row without a metric)."""
    rows, purged_before = [], None
    for row in found:
        if row[0] is None:
            purged_before = int(row[-3])
        else:
            rows.append((row[0], row[1] if by_actor else "", pieces.quantity_of(row), int(row[-2]), row[-1]))
    return sorted(rows, key=lambda r: (r[0], r[1])), purged_before


def within(column, name: str):
    return and_(column >= bindparam(f"{name}_lo"), column < bindparam(f"{name}_hi"))


@functools.cache
def statement(
    pieces: Pieces,
    by_actor: bool,
    actor_filter: bool,
    metric_filter: bool,
    raw_ranges: int,
    hour_ranges: int,
    days: bool,
):
    """The statement of one shape of question, built once: a call only binds its parameters.

    One statement, so one snapshot on both backends (a dirty mark and the events that made it commit
    together, as do a recomputed aggregate and the deletion of its mark), and one round trip. Shapes
    differ only where a plan leaves a part out entirely (no raw edge, or one; no whole hour): an
    always-empty range still costs the planner, and an OR of ranges hides a single range's index scan.
    """
    tenant: BindParameter[str] = bindparam("tenant")
    metrics = pieces.metrics()

    def only(statement, metric_column):
        return statement.where(pieces.metric_in(metric_column, metrics)) if metric_filter else statement

    keys = [EVENTS.c.metric] + ([EVENTS.c.actor_id] if by_actor else [])
    parts = []
    if raw_ranges:
        ranges = [within(EVENTS.c.occurred_at_us, f"raw{n}") for n in range(raw_ranges)]
        raw = select(*keys, EVENTS.c.quantity.label("quantity"), ONE.label("event_count")).where(
            EVENTS.c.tenant_id == tenant, or_(*ranges)
        )
        if actor_filter:
            raw = raw.where(EVENTS.c.actor_id == bindparam("actor"))
        parts.append(only(raw, EVENTS.c.metric))
    if hour_ranges or days:
        parts += [only(part, metric) for part, metric in _bucket_parts(pieces, tenant, hour_ranges, days)]
    # The parts yield rows, summed once here, and the few totals are then joined to their metric: cheaper
    # than a GROUP BY per part, or the join before grouping.
    union = union_all(*parts).subquery("parts")
    keys = [union.c.metric] + ([union.c.actor_id] if by_actor else [])
    quantity = pieces.sums(union)
    sums = (
        select(*keys, *quantity, func.sum(union.c.event_count).label("events"))
        .group_by(*keys)
        .having(func.sum(union.c.event_count) > ZERO)
        .subquery("t")
    )
    totals = select(
        *[sums.c[column.name] for column in keys + quantity], sums.c.events, _metrics.c.classification
    ).select_from(sums.outerjoin(_metrics, _metrics.c.name == sums.c.metric))
    horizon = select(
        null(),
        *([null()] if by_actor else []),
        *pieces.horizon_padding(),
        _horizons.c.purged_before_us,
        ZERO,
        null(),
    ).where(_horizons.c.tenant_id == tenant)
    return union_all(totals, horizon)


def _bucket_parts(pieces: Pieces, tenant, hour_ranges: int, days: bool) -> list[tuple]:
    """(statement, its metric column) for the whole hours and days of the plan, [H1, H2).

    Whole days: every day row of the range, less the rows of its marked days (few, found from their
    marks), so the clean rows are summed from aggregates_by_period alone, with no probe of the marks
    per row. Hours at the ends: the range of hours of each unmarked day row, both ends in one part. A
    marked day's share of [H1, H2) is read hour by hour: its dirty hours (bits of the mark) from raw
    events, the others from its row, which still holds for them (see tables.dirty_buckets).
    """
    day, mark = DAY_ROWS.c, dirty_buckets.alias("dm")
    parts = []
    if days:
        every = select(day.metric, day.total_quantity.label("quantity"), day.event_count.label("event_count")).where(
            day.tenant_id == tenant, day.period == DAY, within(day.period_start_us, "day")
        )
        marked_rows = (
            select(day.metric, (-day.total_quantity).label("quantity"), (-day.event_count).label("event_count"))
            .join_from(mark, DAY_ROWS, _row_of(mark, tenant))
            .where(mark.c.tenant_id == tenant, mark.c.period == DAY, within(mark.c.period_start_us, "day"))
        )
        parts += [(every, day.metric), (marked_rows, day.metric)]
    if hour_ranges:
        parts.append((pieces.end_hours(tenant, hour_ranges), day.metric))

    def in_span(offset):
        start = mark.c.period_start_us + offset * _HOUR_US
        return and_(start >= bindparam("span_lo"), start < bindparam("span_hi"))

    marked = and_(
        mark.c.tenant_id == tenant,
        mark.c.period == DAY,
        mark.c.period_start_us > bindparam("span_lo") - _DAY_US,
        mark.c.period_start_us < bindparam("span_hi"),
    )
    offset, quantity, count, cells = pieces.hour_cells()
    clean_hours = (
        select(mark.c.metric, quantity.label("quantity"), count.label("event_count"))
        .join_from(mark, DAY_ROWS, _row_of(mark, tenant))
        .join(cells, true())
        .where(marked, bit(mark.c.dirty_hours, offset) == ZERO, in_span(offset))
    )
    hour = pieces.day_hours()
    start = mark.c.period_start_us + hour * _HOUR_US
    dirty_hours = (
        select(mark.c.metric, EVENTS.c.quantity.label("quantity"), ONE.label("event_count"))
        .select_from(
            _HoursFirst(
                mark.join(hour.table, true()),
                EVENTS,
                and_(
                    EVENTS.c.tenant_id == tenant,
                    EVENTS.c.metric == mark.c.metric,
                    EVENTS.c.occurred_at_us >= start,
                    EVENTS.c.occurred_at_us < start + _HOUR_US,
                ),
            )
        )
        .where(marked, bit(mark.c.dirty_hours, hour) == ONE, in_span(hour))
    )
    return parts + [(clean_hours, mark.c.metric), (dirty_hours, mark.c.metric)]


class _HoursFirst(ShortRangesFirst):
    """The marks' dirty hours joined to their events, each hour read by its own range of events_by_metric_time
    (which covers quantity)."""

    inherit_cache = True
    READ = "e.quantity"


def _row_of(mark, tenant):
    """The join condition of a day's dirty mark to that day's row `a`."""
    day = DAY_ROWS.c
    return and_(
        day.tenant_id == tenant,
        day.metric == mark.c.metric,
        day.period == DAY,
        day.period_start_us == mark.c.period_start_us,
    )


def unmarked_day(tenant):
    """The condition on a day row `a` of the tenant: its day has no dirty mark."""
    day = DAY_ROWS.c
    mark = dirty_buckets.alias("m")
    return and_(
        day.tenant_id == tenant,
        day.period == DAY,
        ~exists().where(
            mark.c.tenant_id == tenant,
            mark.c.metric == day.metric,
            mark.c.period == DAY,
            mark.c.period_start_us == day.period_start_us,
        ),
    )
