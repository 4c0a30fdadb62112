"""QueryUsage's statement where rollups carry the question's dimensions (docs/usage.md, "Meters"): the part both
backends share.

The windows are cut into day pieces (whole UTC hours of one day) and raw spans (domain/meter_rollups.split). In the
same statement, so in one snapshot, a day piece is read from its cuboid's rows when its day has rows of that cuboid
and no dirty mark (a day without a mark is exact in its rows: the recomputed rows and the deletion of the mark commit
together), else from raw events, as the raw spans are. Raw events give a partial state per window and group, rows
one per row (sum, count, min, max or latest: the backend's `MeterPieces.raw_partials` and `rolled_partials`), and
the states are combined exactly (`MeterPieces.combine`), by window and group in one step, into the value columns
the raw statement gives.
"""

from __future__ import annotations

from sqlalchemy import String, and_, bindparam, exists, func, not_, or_, select, union_all

from tollgate.services.usage.domain import meter_rollups
from tollgate.services.usage.domain.buckets import HOUR_US, Period
from tollgate.services.usage.domain.meters import MeterPlan
from tollgate.services.usage.repository.meters import _EMPTY, METRIC, TENANT, MeterPieces, _count_of, raw_grouped
from tollgate.services.usage.tables import dirty_buckets, meter_days

# Every part of the windows as (n, kind, day, first hour, end hour, lo, hi): kind 1 a day piece, 0 a raw span. One
# table, so that the planner reads the events of each raw part by its own index range, as for the raw statement.
_PARTS = ("n", "k", "day", "h1", "h2", "lo", "hi")
_CUBOID = bindparam("cuboid", type_=String())
ROWS = meter_days.alias("md")
_HAS_ROWS = meter_days.alias("mx")
_MARKS = dirty_buckets.alias("dm")


def combined(pieces: MeterPieces, plan: MeterPlan) -> tuple:
    """(the grouped select: n, g0..., value columns, c; the value columns) of the plan, rolled-up days read from its
    cuboid's rows."""
    table = pieces.table("pc", _PARTS)
    t = table.c
    raw, _ = raw_grouped(pieces, plan, table, t.n, t.lo, t.hi, pieces.raw_partials(plan.aggregation), short=True)
    raw = raw.where(or_(t.k == 0, not_(_has_rows(t.day)), _marked(t.day)))
    both = union_all(raw, _rolled(pieces, plan, table)).subquery("u")
    groups = [both.c[f"g{i}"] for i in range(len(plan.group_by))]
    values = pieces.combine(plan.aggregation, both)
    grouped = (
        select(both.c.n, *groups, *values, _count_of(both.c.c))
        .group_by(both.c.n, *groups)
        .having(func.sum(both.c.c) > 0)
    )
    return grouped, values


def parameters(pieces: MeterPieces, plan: MeterPlan) -> dict:
    """The values of the statement's table of parts and its cuboid."""
    cut = meter_rollups.split(plan.windows, plan.first_window)
    parts = [(p.n, 1, p.day_us, p.first_hour, p.end_hour, *_span(p)) for p in cut.pieces]
    parts += [(n, 0, 0, 0, 0, lo, hi) for n, lo, hi in cut.raw]
    return {"cuboid": plan.cuboid, **pieces.table_rows("pc", _PARTS, parts)}


def _span(piece: meter_rollups.DayPiece) -> tuple[int, int]:
    return piece.day_us + piece.first_hour * HOUR_US, piece.day_us + piece.end_hour * HOUR_US


def _marked(day):
    """Whether the day starting at `day` has a dirty mark: its rows are not read."""
    return exists().where(
        _MARKS.c.tenant_id == TENANT,
        _MARKS.c.metric == METRIC,
        _MARKS.c.period == int(Period.DAY),
        _MARKS.c.period_start_us == day,
    )


def _has_rows(day):
    """Whether the day starting at `day` has rows of the cuboid."""
    return exists().where(
        _HAS_ROWS.c.tenant_id == TENANT,
        _HAS_ROWS.c.metric == METRIC,
        _HAS_ROWS.c.day_us == day,
        _HAS_ROWS.c.cuboid == _CUBOID,
    )


def _rolled(pieces: MeterPieces, plan: MeterPlan, table):
    """The rolled-up day pieces from the cuboid's rows (a day without them yields none here, and is read raw):
    partial states of each row, grouped with the raw parts' by `combined`."""
    t = table.c
    groups = [_value(pieces, name) for name in plan.group_by]
    extra, conditions, partials, count = pieces.rolled_partials(plan.aggregation, ROWS, t.h1, t.h2)
    on = and_(
        ROWS.c.tenant_id == TENANT,
        ROWS.c.metric == METRIC,
        ROWS.c.day_us == t.day,
        ROWS.c.cuboid == _CUBOID,
    )
    rolled = (
        select(t.n.label("n"), *[g.label(f"g{i}") for i, g in enumerate(groups)], *partials, count.label("c"))
        .select_from(table.join(ROWS, on), *extra)
        .where(t.k == 1, not_(_marked(t.day)), *conditions)
    )
    for position, (name, _) in enumerate(plan.filters):
        rolled = rolled.where(pieces.one_of(_value(pieces, name), f"f{position}"))
    return rolled


def _value(pieces: MeterPieces, name: str):
    return func.coalesce(pieces.rolled_dimension(ROWS, name), _EMPTY)
