"""QueryUsage's and ListDimensionValues' statements, one per page: the part both backends share.

Each backend writes a few pieces its own way (its `MeterPieces`, in postgres/meters.py and sqlite/meters.py): a
dimension's value out of the events' JSON, the table of windows (computed in Python, domain/windows.py: the zone
logic lives once), code point order, and the aggregations whose SQL differs (exact sums, LATEST).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session

from tollgate.services.usage.domain import meter_rollups
from tollgate.services.usage.domain.aggregations import ACTOR_ID, Aggregation
from tollgate.services.usage.domain.meters import MeterPlan, MeterRow
from tollgate.services.usage.repository.ranges_first import ShortRangesFirst, WindowsFirst
from tollgate.services.usage.tables import events, metrics, purge_horizons

EVENTS, HORIZONS = events.alias("e"), purge_horizons.alias("p")
# A question's tenant and metric, given at execution: a question's statement is built once per shape.
TENANT, METRIC = bindparam("tenant", type_=String()), bindparam("metric", type_=String())
_EMPTY = literal_column("''", String())


class MeterPieces(Protocol):
    """The pieces of the statements a backend writes its own way."""

    def dimension(self, name: str):
        """The value of dimension `name` (a declared name: it is written into the statement) of the event `e`; NULL
        when the event has none."""

    def ordered(self, column):
        """`column` as compared and ordered in code point order."""

    def values(self, aggregation: Aggregation) -> list:
        """The columns of the aggregation's value over a group's events `e` (any but UNIQUE_COUNT)."""

    def value_cell(self, aggregation: Aggregation) -> int | None:
        """The place among those columns of a cell that holds the value whole (read as an int); None when only
        `value_of` can tell it."""

    def value_of(self, aggregation: Aggregation, cells: tuple) -> int:
        """The exact value in the cells of those columns."""

    def one_of(self, column, name: str):
        """The condition `column` is one of the strings given at execution as parameter `name` (a list)."""

    keeps_days: bool
    """Whether QueryUsage may add rolled-up days from memory (meter_memory.py): their running sums are stored."""

    def prepared(self, statement, dialect):
        """What `rows` runs of a statement built once per shape, kept with it."""

    def rows(self, connection: Connection, prepared, values: dict) -> list:
        """The rows of a `prepared` statement with `values`."""

    def table(self, name: str, columns: tuple[str, ...]):
        """A FROM item `name` of integer rows with these columns, given at execution (`table_rows`)."""

    def table_rows(self, name: str, columns: tuple[str, ...], rows: Sequence[tuple[int, ...]]) -> dict:
        """The parameters giving the rows of the table `name`."""

    def rolled_dimension(self, rows, name: str):
        """The value of dimension `name` of a meter_days row of `rows`; NULL when it has none."""

    def raw_partials(self, aggregation: Aggregation) -> list:
        """The columns (p0...) of the aggregation's partial state over a group's raw events `e`."""

    def rolled_partials(self, aggregation: Aggregation, rows, first_hour, end_hour, dirty_hours=None) -> tuple:
        """(more FROM items, conditions, the partial state's columns p0..., the event count) of each of the
        meter_days `rows` (or each of its hours) over its hours [first_hour, end_hour), not aggregated: `combine`
        groups them with the raw parts' in one step. With `dirty_hours` (a day mark's bits), hour by hour, leaving
        out the hours whose bit is set."""

    def combine(self, aggregation: Aggregation, parts) -> list:
        """The value columns (as `values` gives them) of partial states p0... of the subquery `parts`."""


def rolled_up_metrics(connection: Connection | Session) -> dict[str, list[str]]:
    """The metrics rolled up with dimensions (domain/meter_rollups.py), each with its declared dimensions."""
    found = {}
    for name, aggregation, declared in connection.execute(
        select(metrics.c.name, metrics.c.aggregation, metrics.c.dimensions)
    ):
        names = json.loads(declared)
        if meter_rollups.rolled_up(Aggregation[aggregation], names):
            found[name] = names
    return found


def _distinct_counted(pieces: MeterPieces, plan: MeterPlan, windows, n, lo, hi):
    """UNIQUE_COUNT's groups: the events grouped by what they count as well (u), then those groups counted, the
    empty value left out. One hashed grouping, where count(DISTINCT ...) sorts each group's events."""
    counted = value_source(pieces, plan.unique_of)
    per_value, _ = raw_grouped(pieces, plan, windows, n, lo, hi, [], also=counted)
    inner = per_value.subquery("u")
    groups = [inner.c.n] + [inner.c[f"g{i}"] for i in range(len(plan.group_by))]
    value = func.count(func.nullif(inner.c.u, _EMPTY)).label("v")
    return select(*groups, value, _count_of(inner.c.c)).group_by(*groups), [value]


def _count_of(counts):
    """The event count c of groups of counts: a BIGINT (a sum of BIGINTs is NUMERIC, which a driver reads as a
    decimal), as no count of events passes it."""
    return cast(func.sum(counts), BigInteger).label("c")


def raw_grouped(
    pieces: MeterPieces, plan: MeterPlan, windows, n, lo, hi, values: list, *, short: bool = False, also=None
):
    """The plan's raw events in the ranges (n, lo, hi) of `windows`, grouped by n and the plan's groups (g0...),
    with `values` and the count c; and those value columns. `short`: the ranges are short (a rollup's raw parts),
    each read by its own index range whatever the planner guesses. `also`: grouped by that too, as column u."""
    e = EVENTS.c
    groups = [value_source(pieces, name) for name in plan.group_by]
    keys = [g.label(f"g{i}") for i, g in enumerate(groups)] + ([also.label("u")] if also is not None else [])
    in_window = and_(e.tenant_id == TENANT, e.metric == METRIC, e.occurred_at_us >= lo, e.occurred_at_us < hi)
    grouped = (
        select(n.label("n"), *keys, *values, func.count().label("c"))
        .select_from((_ShortRanges if short else WindowsFirst)(windows, EVENTS, in_window))
        .group_by(n, *groups, *([also] if also is not None else []))
    )
    for position, (name, _) in enumerate(plan.filters):
        grouped = grouped.where(pieces.one_of(value_source(pieces, name), f"f{position}"))
    if plan.actor_ids:
        grouped = grouped.where(pieces.one_of(e.actor_id, "actors"))
    return grouped, values


def value_source(pieces: MeterPieces, name: str):
    """An event's value of `name` (a dimension, or ACTOR_ID), '' when it has none."""
    # The empty string written into the statement: GROUP BY matches its expressions by text, and two bound
    # parameters are two expressions to PostgreSQL.
    return EVENTS.c.actor_id if name == ACTOR_ID else func.coalesce(pieces.dimension(name), _EMPTY)


class MeterRows(NamedTuple):
    """A page's rows, the tenant's purge horizon (None when never purged), and whether the metric still had the
    cells the plan was made from when the rows were read (else the rows are not its answer). `answer`: a key that
    only these rows of this question's page are read with (meter_memory.py keeps answers), for encodings of them to
    be kept; None: the rows are not kept."""

    rows: list[MeterRow]
    purged_before: int | None
    current: bool
    answer: tuple | None = None


def usage_rows(
    connection: Connection,
    pieces: MeterPieces,
    plan: MeterPlan,
    *,
    cells: tuple[str, str, str],
    after: tuple | None,
    limit: int,
    memory=None,
) -> MeterRows:
    """Up to `limit` rows after `after` (window index, group values), ordered, and the tenant's purge horizon, with
    the check that the metric's stored (aggregation, unique_of, dimensions) are still `cells`: one statement, one
    snapshot. Where the plan names a cuboid, the whole hours of rolled-up days without a dirty mark come from that
    cuboid's rows (meter_rollup_reads.py), the rest from raw events; with a `memory` (meter_memory.DayMemory) and
    a backend that keeps days, from the rows it holds where they are current."""
    if memory is not None and pieces.keeps_days:
        from tollgate.services.usage.repository import meter_memory  # it builds on this module's statements

        held = meter_memory.usage_rows(connection, pieces, plan, memory, cells=cells, after=after, limit=limit)
        if held is not None:
            return held
    statement, values = statement_of(pieces, plan, connection.dialect, cells=cells, after=after, limit=limit)
    found: list[MeterRow] = []
    purged_before, current = None, True
    first = 1 + len(plan.group_by)  # the first value column
    aggregation, value_of, cell = plan.aggregation, pieces.value_of, pieces.value_cell(plan.aggregation)
    whole = None if cell is None else first + cell
    for row in pieces.rows(connection, statement, values):
        n = row[0]
        if n >= 0:
            value = int(row[whole]) if whole is not None else value_of(aggregation, row[first:-1])
            found.append((n, row[1:first], value, row[-1]))
        elif n == HORIZON:
            purged_before = int(row[-1])
        else:
            current = False
    # (window, groups) is unique, so the rows' own order is theirs.
    return MeterRows(sorted(found), purged_before, current)


def statement_of(
    pieces: MeterPieces, plan: MeterPlan, dialect, *, cells: tuple[str, str, str], after: tuple | None, limit: int
) -> tuple[Any, dict]:
    """The statement `usage_rows` runs (as the backend's `prepared` gives it, built once per shape) and its values."""
    shape = (
        plan.aggregation,
        plan.unique_of,
        plan.group_by,
        tuple(name for name, _ in plan.filters),
        bool(plan.actor_ids),
        plan.cuboid is None,
        after is None,
    )
    statement = _statement(pieces, shape, plan, dialect)
    values = question_values(plan, cells)
    values["limit"] = limit
    values.update((f"a{i}", v) for i, v in enumerate(after or ()))
    if plan.cuboid is None:
        spans = [(n, lo, hi) for n, (lo, hi) in enumerate(plan.windows) if n >= plan.first_window]
        values.update(pieces.table_rows("w", _WINDOW, spans))
    else:
        from tollgate.services.usage.repository import meter_rollup_reads  # it builds on this module's pieces

        values.update(meter_rollup_reads.parameters(pieces, plan))
    return statement, values


def question_values(plan: MeterPlan, cells: tuple[str, str, str]) -> dict:
    """The values every statement of a question takes: its tenant, metric, filters and the metric's cells."""
    values: dict[str, Any] = {"tenant": plan.tenant_id, "metric": plan.metric, **dict(zip(_CELLS, cells))}
    values.update((f"f{i}", list(allowed)) for i, (_, allowed) in enumerate(plan.filters))
    if plan.actor_ids:
        values["actors"] = list(plan.actor_ids)
    return values


_WINDOW = ("n", "lo", "hi")
# Rows that are not windows: the tenant's purge horizon, and the sign that the metric's cells changed.
HORIZON, CHANGED = -1, -2
_CELLS = ("m_aggregation", "m_unique_of", "m_dimensions")


_BUILT: dict[tuple, Any] = {}
_MAX_BUILT = 512  # shapes differ by groups and filters; past this many, start again


def _statement(pieces: MeterPieces, shape: tuple, plan: MeterPlan, dialect):
    """The statement of every question of this shape (its values are parameters), as the backend runs it."""
    return built(pieces, shape, dialect, lambda: _build(pieces, plan, shape[-1]))


def built(pieces: MeterPieces, shape: tuple, dialect, build: Callable[[], Any]):
    """The statement of `shape` as the backend runs it (`build` makes it): built once, so that a question costs
    neither building it nor SQLAlchemy's cache key of it."""
    key = (id(pieces), *shape)
    statement = _BUILT.get(key)
    if statement is None:
        if len(_BUILT) >= _MAX_BUILT:
            _BUILT.clear()
        statement = _BUILT[key] = pieces.prepared(build(), dialect)
    return statement


def _build(pieces: MeterPieces, plan: MeterPlan, first_page: bool):
    if plan.cuboid is None:
        windows = pieces.table("w", _WINDOW)
        n, lo, hi = windows.c.n, windows.c.lo, windows.c.hi
        if plan.aggregation is Aggregation.UNIQUE_COUNT:
            grouped, values = _distinct_counted(pieces, plan, windows, n, lo, hi)
        else:
            grouped, values = raw_grouped(pieces, plan, windows, n, lo, hi, pieces.values(plan.aggregation))
    else:
        from tollgate.services.usage.repository import meter_rollup_reads

        grouped, values = meter_rollup_reads.combined(pieces, plan)
    width = len(plan.group_by)
    rows = grouped.subquery("r")
    keys = [rows.c.n] + [pieces.ordered(rows.c[f"g{i}"]) for i in range(width)]
    page = select(rows).order_by(*keys).limit(bindparam("limit", type_=Integer()))
    if not first_page:
        after = [bindparam("a0", type_=Integer())] + [bindparam(f"a{i + 1}", type_=String()) for i in range(width)]
        page = page.where(tuple_(*keys) > tuple_(*after))
    return union_all(select(page.subquery("pg")), *bookkeeping(width, len(values)))


def bookkeeping(width: int, values: int) -> list:
    """The rows of a question's statement that are not its answer, shaped as its rows (n, `width` groups, `values`
    value columns, c): the tenant's purge horizon (HORIZON), and CHANGED when the metric's cells are not those given."""
    horizon = select(
        literal(HORIZON),
        *[literal("") for _ in range(width)],
        *[null() for _ in range(values)],
        HORIZONS.c.purged_before_us,
    ).where(HORIZONS.c.tenant_id == TENANT)
    unchanged = exists().where(
        metrics.c.name == METRIC,
        *[metrics.c[cell[2:]] == bindparam(cell, type_=String()) for cell in _CELLS],
    )
    changed = select(
        literal(CHANGED), *[literal("") for _ in range(width)], *[null() for _ in range(values)], literal(0)
    ).where(~unchanged)
    return [horizon, changed]


def dimension_values(
    connection: Connection,
    pieces: MeterPieces,
    *,
    tenant_id: str,
    metric: str,
    name: str,
    start_us: int | None,
    end_us: int | None,
    after: str | None,
    limit: int,
) -> list[str]:
    """The distinct non-empty values of `name` (a dimension or ACTOR_ID) of the metric's events in the range, in
    code point order, after `after`."""
    e = EVENTS.c
    value = value_source(pieces, name).label("v")
    statement = select(value).where(e.tenant_id == tenant_id, e.metric == metric).distinct()
    if start_us is not None:
        statement = statement.where(e.occurred_at_us >= start_us)
    if end_us is not None:
        statement = statement.where(e.occurred_at_us < end_us)
    distinct = statement.subquery("d")
    ordered = pieces.ordered(distinct.c.v)
    page = select(distinct.c.v).where(distinct.c.v != "").order_by(ordered).limit(limit)
    if after is not None:
        page = page.where(ordered > literal(after))
    return [row[0] for row in connection.execute(page)]


class _ShortRanges(ShortRangesFirst):
    """A rollup's raw parts (edges off the hour, marked hours and days), each read by its own index range."""

    inherit_cache = True
    READ = "e.tenant_id, e.event_id, e.metric, e.quantity, e.occurred_at_us, e.actor_id, e.dimensions"
