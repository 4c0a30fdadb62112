"""QueryUsage's and ListDimensionValues' statements, one per page: the part both backends share.

Each backend writes a few pieces its own way (its `MeterPieces`, in postgres/meters.py and sqlite/meters.py): a
dimension's value out of the events' JSON, the table of windows (computed in Python, domain/windows.py: the zone
logic lives once), code point order, and the aggregations whose SQL differs (exact sums, LATEST).
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Connection, String, and_, func, literal, literal_column, null, select, tuple_, union_all
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Join

from tollgate.services.usage.domain.aggregations import ACTOR_ID, Aggregation
from tollgate.services.usage.domain.meters import MeterPlan
from tollgate.services.usage.tables import events, purge_horizons

EVENTS, HORIZONS = events.alias("e"), purge_horizons.alias("p")
_EMPTY = literal_column("''", String())

# A page's rows: (window index, group values, value, event count).
MeterRow = tuple[int, tuple[str, ...], int, int]


class MeterPieces(Protocol):
    """The pieces of the statements a backend writes its own way."""

    def dimension(self, name: str):
        """The value of dimension `name` (a declared name: it is written into the statement) of the event `e`; NULL
        when the event has none."""

    def windows(self, spans: list[tuple[int, int, int]]) -> tuple:
        """(FROM item, n, lo, hi): the windows (index, start, end) as a table."""

    def ordered(self, column):
        """`column` as compared and ordered in code point order."""

    def values(self, aggregation: Aggregation, unique) -> list:
        """The columns of the aggregation's value over a group's events `e` (`unique`: what UNIQUE_COUNT counts)."""

    def value_of(self, aggregation: Aggregation, cells: tuple) -> int:
        """The exact value in the cells of those columns."""


def value_source(pieces: MeterPieces, name: str):
    """An event's value of `name` (a dimension, or ACTOR_ID), '' when it has none."""
    # The empty string written into the statement: GROUP BY matches its expressions by text, and two bound
    # parameters are two expressions to PostgreSQL.
    return EVENTS.c.actor_id if name == ACTOR_ID else func.coalesce(pieces.dimension(name), _EMPTY)


def usage_rows(
    connection: Connection, pieces: MeterPieces, plan: MeterPlan, *, after: tuple | None, limit: int
) -> tuple[list[MeterRow], int | None]:
    """Up to `limit` rows after `after` (window index, group values), ordered, and the tenant's purge horizon (None
    when never purged): one statement."""
    spans = [(n, lo, hi) for n, (lo, hi) in enumerate(plan.windows) if n >= plan.first_window]
    windows, n, lo, hi = pieces.windows(spans)
    e = EVENTS.c
    groups = [value_source(pieces, name) for name in plan.group_by]
    unique = None
    if plan.aggregation is Aggregation.UNIQUE_COUNT:
        unique = e.actor_id if plan.unique_of == ACTOR_ID else pieces.dimension(plan.unique_of)
    values = pieces.values(plan.aggregation, unique)
    in_window = and_(
        e.tenant_id == plan.tenant_id, e.metric == plan.metric, e.occurred_at_us >= lo, e.occurred_at_us < hi
    )
    grouped = (
        select(n.label("n"), *[g.label(f"g{i}") for i, g in enumerate(groups)], *values, func.count().label("c"))
        .select_from(_WindowsFirst(windows, EVENTS, in_window))
        .group_by(n, *groups)
    )
    for name, allowed in plan.filters:
        grouped = grouped.where(value_source(pieces, name).in_(allowed))
    if plan.actor_ids:
        grouped = grouped.where(e.actor_id.in_(plan.actor_ids))
    rows = grouped.subquery("r")
    keys = [rows.c.n] + [pieces.ordered(rows.c[f"g{i}"]) for i in range(len(groups))]
    page = select(rows).order_by(*keys).limit(limit)
    if after is not None:
        page = page.where(tuple_(*keys) > tuple_(*[literal(v) for v in after]))
    horizon = select(
        literal(-1), *[literal("") for _ in groups], *[null() for _ in values], HORIZONS.c.purged_before_us
    ).where(HORIZONS.c.tenant_id == plan.tenant_id)
    found, purged_before = [], None
    width = len(groups)
    for row in connection.execute(union_all(select(page.subquery("pg")), horizon)):
        if row[0] < 0:
            purged_before = int(row[-1])
            continue
        cells = tuple(row[1 + width : -1])
        found.append((int(row[0]), tuple(row[1 : 1 + width]), pieces.value_of(plan.aggregation, cells), int(row[-1])))
    return sorted(found, key=lambda r: (r[0], r[1])), purged_before


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


class _WindowsFirst(Join):
    """The windows joined to the events with the windows looped over first on SQLite too (CROSS JOIN), so each
    window reads its own range of events_by_metric_time: SQLite's planner cannot tell how many rows a table made of
    JSON yields, and would otherwise walk the tenant's events once per window."""

    inherit_cache = True


@compiles(_WindowsFirst, "sqlite")
def _cross_join(join, compiler, **kw) -> str:
    kw.pop("asfrom", None)
    return (
        f"{compiler.process(join.left, asfrom=True, **kw)} CROSS JOIN "
        f"{compiler.process(join.right, asfrom=True, **kw)} ON {compiler.process(join.onclause, **kw)}"
    )
