"""QueryUsage's statement where rollups carry the question's dimensions (docs/usage.md, "Meters"): the part both
backends share.

The windows are cut into day pieces (whole UTC hours of one day) and raw spans (domain/meter_rollups.split). In the
same statement, so in one snapshot, a day piece is read from its cuboid's rows when its day has rows of that cuboid:
whole when the day has no dirty mark (the recomputed rows and the deletion of the mark commit together), else hour
by hour, the hours the mark names (dirty_hours) from raw events and the others from the rows, which hold every
event of those hours (a day's rows are stored with the narrowing of its mark, and deleted when a rollup narrows it
without them). A day without rows of the cuboid, or marked whole, is read from raw events, as the raw spans are.
Raw events give a partial state per window and group, rows one per row or hour (sum, count, min, max or latest: the
backend's `MeterPieces.raw_partials` and `rolled_partials`), and the states are combined exactly
(`MeterPieces.combine`), by window and group in one step, into the value columns the raw statement gives.
"""

from __future__ import annotations

from sqlalchemy import (
    String,
    and_,
    bindparam,
    exists,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    union_all,
)

from tollgate.services.usage.domain import meter_rollups
from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.domain.buckets import ALL_HOURS, HOUR_US, Period
from tollgate.services.usage.domain.meters import MeterPlan
from tollgate.services.usage.repository.meters import (
    _EMPTY,
    METRIC,
    TENANT,
    MeterPieces,
    _count_of,
    raw_grouped,
    value_source,
)
from tollgate.services.usage.repository.ranges_first import ShortRangesFirst
from tollgate.services.usage.repository.rollups import bit
from tollgate.services.usage.tables import dirty_buckets, meter_days, meter_versions

# Every part of the windows as (n, kind, day, first hour, end hour, lo, hi): kind 1 a day piece, 0 a raw span. One
# table, so that the planner reads the events of each raw part by its own index range, as for the raw statement.
PARTS = ("n", "k", "day", "h1", "h2", "lo", "hi")
HOURS = ("h",)  # a table of the hours of a day, 0 to 23: a marked day's pieces are read hour by hour
DAY_HOURS = [(hour,) for hour in range(24)]


_CUBOID = bindparam("cuboid", type_=String())
ROWS = meter_days.alias("md")
_HAS_ROWS = meter_days.alias("mx")
_MARKS = dirty_buckets.alias("dm")
_VERSIONS = meter_versions.alias("mv")
# Rows of beside_memory that are not parts: a marked day, and a version that is not the one held.
MARKED, STALE = -3, -4


class _DaySumsFirst(ShortRangesFirst):
    """Each piece's rows of its day, read by an index probe of their own whatever the planner guesses (on PostgreSQL
    a LATERAL subquery, ranges_first.py): without statistics, PostgreSQL's planner walked every row the tenant's
    cuboid holds once per piece. SUM and COUNT read the running sums, which the index covers."""

    inherit_cache = True
    READ = "md.dimensions, md.running_quantities, md.running_counts"


class _DayHoursFirst(_DaySumsFirst):
    """As _DaySumsFirst, for MIN, MAX and LATEST, which read the hours' cells."""

    inherit_cache = True
    READ = (
        "md.dimensions, md.hour_offsets, md.hour_counts, md.hour_mins, md.hour_maxes, md.hour_latest_at, "
        "md.hour_latest_ids, md.hour_latest_quantities"
    )


def _day_rows(aggregation: Aggregation, pieces, day):
    """The FROM item of `pieces` each joined to the cuboid's rows of the day starting at its `day`."""
    first = _DaySumsFirst if aggregation in (Aggregation.SUM, Aggregation.COUNT) else _DayHoursFirst
    return first(pieces, ROWS, _rows_of(day))


def combined(pieces: MeterPieces, plan: MeterPlan) -> tuple:
    """(the grouped select: n, g0..., value columns, c; the value columns) of the plan, rolled-up days read from its
    cuboid's rows."""
    table = pieces.table("pc", PARTS)
    marked = _marked_pieces(table)
    spans = _raw_spans(table, marked, pieces.table("hr", HOURS))
    raw, _ = raw_grouped(
        pieces, plan, spans, spans.c.n, spans.c.lo, spans.c.hi, pieces.raw_partials(plan.aggregation), short=True
    )
    both = union_all(raw, _rolled(pieces, plan, table), _rolled_hours(pieces, plan, marked)).subquery("u")
    groups = [both.c[f"g{i}"] for i in range(len(plan.group_by))]
    values = pieces.combine(plan.aggregation, both)
    grouped = (
        select(both.c.n, *groups, *values, _count_of(both.c.c))
        .group_by(both.c.n, *groups)
        .having(func.sum(both.c.c) > 0)
    )
    return grouped, values


def parameters(pieces: MeterPieces, plan: MeterPlan) -> dict:
    """The values of the statement's table of parts, its hours and its cuboid."""
    cut = meter_rollups.split(plan.windows, plan.first_window)
    parts = [(p.n, 1, p.day_us, p.first_hour, p.end_hour, *span(p)) for p in cut.pieces]
    parts += [(n, 0, 0, 0, 0, lo, hi) for n, lo, hi in cut.raw]
    hours = pieces.table_rows("hr", HOURS, DAY_HOURS)
    return {"cuboid": plan.cuboid, **pieces.table_rows("pc", PARTS, parts), **hours}


def _marked_pieces(table):
    """The day pieces (n, day, h1, h2) of days with a mark that names some of their hours, with the mark's
    dirty_hours: found from the tenant's marks of the metric (few, often none), once."""
    t = table.c
    return (
        select(t.n, t.day, t.h1, t.h2, _MARKS.c.dirty_hours)
        .select_from(_MARKS)
        .join(table, _mark_of(t.day))
        .where(t.k == 1, _MARKS.c.dirty_hours != ALL_HOURS)
        .cte("mp")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )


def _raw_spans(table, marked, hours, *, rows_known: bool = False):
    """The spans (n, lo, hi) read from raw events: the raw parts, the day pieces of days without rows of the cuboid
    or marked whole, and each hour of a marked day's piece that its mark names. `rows_known`: the caller tells the
    days with rows (their pieces of kind 1; kind 2, days without), as it knew them at their version."""
    t, m, h = table.c, marked.c, hours.c
    marked_whole = exists().where(_mark_of(t.day), _MARKS.c.dirty_hours == ALL_HOURS)
    without_rows = t.k != 1 if rows_known else or_(t.k == 0, not_(_has_rows(t.day)))
    whole = select(t.n, t.lo, t.hi).where(or_(without_rows, marked_whole))
    hour_start = m.day + h.h * HOUR_US
    by_hour = (
        select(m.n, hour_start.label("lo"), (hour_start + HOUR_US).label("hi"))
        .select_from(marked.join(hours, and_(h.h >= m.h1, h.h < m.h2)))
        .where(bit(m.dirty_hours, h.h) == 1, *([] if rows_known else [_has_rows(m.day)]))  # else read whole
    )
    return union_all(whole, by_hour).subquery("sp")


def beside_memory(pieces: MeterPieces, plan: MeterPlan) -> list:
    """The parts of a SUM or COUNT question whose days' rows the caller holds (meter_memory.py), for the day pieces
    of kind 1 (days with rows, at the versions the caller holds) and 2 (days without), as (n, g0..., p0, c):
    partial states from raw events (raw parts, days without rows, the hours marks name) and from the rows of
    marked days' other hours; then rows that are not parts: each marked day of a kind-1 piece (MARKED, the day as
    c), and each day whose version is not the one given (STALE, the day as c; table "kv": day, version, -1 for
    none). The caller adds the pieces of unmarked kind-1 days from the rows it holds."""
    table = pieces.table("pc", PARTS)
    marked = _marked_pieces(table)
    spans = _raw_spans(table, marked, pieces.table("hr", HOURS), rows_known=True)
    raw, _ = raw_grouped(
        pieces, plan, spans, spans.c.n, spans.c.lo, spans.c.hi, pieces.raw_partials(plan.aggregation), short=True
    )
    width = len(plan.group_by)
    parts = [_with_sum(part.subquery(), width) for part in (raw, _rolled_hours(pieces, plan, marked))]
    t, blank = table.c, [literal("") for _ in range(width)]
    marks = select(literal(MARKED), *blank, null(), t.day).where(t.k == 1, exists().where(_mark_of(t.day)))
    return [*parts, marks, _stale(pieces, [*blank, null()])]


SPANS = ("n", "lo", "hi")
HELD = ("day", "version", "k")


def again_beside_memory(pieces: MeterPieces, plan: MeterPlan) -> list:
    """beside_memory's statement for a question asked again, kept with none of its held days with rows marked: the
    raw spans (table "sp": n, lo, hi; its raw parts and the pieces of held days without rows) as its parts, then
    MARKED for each held day with rows that is marked now and STALE as beside_memory (table "kv": day, version, and
    k, 1 for a day with rows). With no MARKED row, its parts are what beside_memory's would be."""
    spans = pieces.table("sp", SPANS)
    raw, _ = raw_grouped(
        pieces, plan, spans, spans.c.n, spans.c.lo, spans.c.hi, pieces.raw_partials(plan.aggregation), short=True
    )
    width = len(plan.group_by)
    held, blank = pieces.table("kv", HELD).c, [literal("") for _ in range(width)]
    marks = select(literal(MARKED), *blank, null(), held.day).where(held.k == 1, exists().where(_mark_of(held.day)))
    return [_with_sum(raw.subquery(), width), marks, _stale(pieces, [*blank, null()])]


def unique_beside_memory(pieces: MeterPieces, plan: MeterPlan) -> list:
    """The parts of a UNIQUE_COUNT question without groups whose whole UTC days' values the caller holds
    (meter_memory.py), as (n, u, c): the events of the raw spans (kind 0) and of the held days (kind 1) that are
    marked, grouped by window and the value they count; then each marked held day (MARKED, the day as c), and each
    day whose version is not the one given (STALE, as beside_memory)."""
    table = pieces.table("pc", PARTS)
    t = table.c
    marked = exists().where(_mark_of(t.day))
    spans = select(t.n, t.lo, t.hi).where(or_(t.k == 0, marked)).subquery("sp")
    counted = value_source(pieces, plan.unique_of)
    raw, _ = raw_grouped(pieces, plan, spans, spans.c.n, spans.c.lo, spans.c.hi, [], short=True, also=counted)
    marks = select(literal(MARKED), literal(""), t.day).where(t.k == 1, marked)
    return [raw, marks, _stale(pieces, [literal("")])]


def _stale(pieces: MeterPieces, blank: list):
    """A row (STALE, `blank`..., day) for each day of the table "kv" (day, version; -1 for none) whose version is
    not the one given."""
    held = pieces.table("kv", ("day", "version"))
    version = (
        select(_VERSIONS.c.version)
        .where(_VERSIONS.c.tenant_id == TENANT, _VERSIONS.c.metric == METRIC, _VERSIONS.c.day_us == held.c.day)
        .scalar_subquery()
    )
    return select(literal(STALE), *blank, held.c.day).where(version.is_distinct_from(func.nullif(held.c.version, -1)))


def _with_sum(part, width: int):
    """(n, g0..., p0, c) of a subquery of parts: p0 NULL when it has none (COUNT)."""
    value = part.c.p0 if "p0" in part.c else null()
    return select(part.c.n, *[part.c[f"g{i}"] for i in range(width)], value, part.c.c)


def span(piece: meter_rollups.DayPiece) -> tuple[int, int]:
    return piece.day_us + piece.first_hour * HOUR_US, piece.day_us + piece.end_hour * HOUR_US


def _mark_of(day):
    """The condition that _MARKS is the dirty mark of the day starting at `day`."""
    return and_(
        _MARKS.c.tenant_id == TENANT,
        _MARKS.c.metric == METRIC,
        _MARKS.c.period == int(Period.DAY),
        _MARKS.c.period_start_us == day,
    )


def _has_rows(day):
    """Whether the day starting at `day` has rows of the cuboid."""
    return exists().where(_rows_of(day, _HAS_ROWS))


def _rolled(pieces: MeterPieces, plan: MeterPlan, table):
    """The day pieces of days without a mark from the cuboid's rows (a day without them yields none here, and is
    read raw): partial states of each row, grouped with the raw parts' by `combined`."""
    t = table.c
    extra, conditions, partials, count = pieces.rolled_partials(plan.aggregation, ROWS, t.h1, t.h2)
    rolled = (
        select(t.n.label("n"), *_groups(pieces, plan), *partials, count.label("c"))
        .select_from(_day_rows(plan.aggregation, table, t.day), *extra)
        .where(t.k == 1, not_(exists().where(_mark_of(t.day))), *conditions)
    )
    return _filtered(pieces, plan, rolled)


def _rolled_hours(pieces: MeterPieces, plan: MeterPlan, marked):
    """The hours of marked days' pieces that their marks do not name, from the cuboid's rows, hour by hour."""
    m = marked.c
    extra, conditions, partials, count = pieces.rolled_partials(
        plan.aggregation, ROWS, m.h1, m.h2, dirty_hours=m.dirty_hours
    )
    rolled = (
        select(m.n.label("n"), *_groups(pieces, plan), *partials, count.label("c"))
        .select_from(_day_rows(plan.aggregation, marked, m.day), *extra)
        .where(*conditions)
    )
    return _filtered(pieces, plan, rolled)


def _rows_of(day, rows=ROWS):
    """The condition that `rows` (meter_days) is a row of the cuboid of the day starting at `day`."""
    return and_(rows.c.tenant_id == TENANT, rows.c.metric == METRIC, rows.c.day_us == day, rows.c.cuboid == _CUBOID)


def _groups(pieces: MeterPieces, plan: MeterPlan) -> list:
    return [_value(pieces, name).label(f"g{i}") for i, name in enumerate(plan.group_by)]


def _filtered(pieces: MeterPieces, plan: MeterPlan, rolled):
    for position, (name, _) in enumerate(plan.filters):
        rolled = rolled.where(pieces.one_of(_value(pieces, name), f"f{position}"))
    return rolled


def _value(pieces: MeterPieces, name: str):
    return func.coalesce(pieces.rolled_dimension(ROWS, name), _EMPTY)
