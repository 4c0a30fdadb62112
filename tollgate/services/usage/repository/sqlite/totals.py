"""GetUsage's statement on SQLite: its own pieces (JSON hour lists, sums in halves), run as any statement."""

from __future__ import annotations

import json

from sqlalchemy import Connection, and_, bindparam, func, literal, literal_column, or_, select, true
from sqlalchemy.sql.elements import BindParameter, ColumnClause

from tollgate.services.usage.domain.queries import UsageQuery
from tollgate.services.usage.domain.read_plan import ReadPlan
from tollgate.services.usage.repository import totals
from tollgate.services.usage.repository.totals import DAY_ROWS

_SPLIT = 2**32
_SPLIT_SQL: ColumnClause[int] = literal_column(str(_SPLIT))


class Pieces:
    """SQLite's pieces of the statement (totals.Pieces)."""

    def metrics(self):
        return bindparam("metrics", expanding=True)

    def metric_in(self, column, metrics):
        return column.in_(metrics)

    def sums(self, union) -> list:
        # SQLite's sum() fails on an integer overflow: the quantities' high and low 32 bits are summed apart
        # (neither can overflow) and put together in Python, so a total beyond int64 is still known exactly.
        return [
            func.sum(union.c.quantity.op("/")(_SPLIT_SQL)).label("high"),
            func.sum(union.c.quantity.op("%")(_SPLIT_SQL)).label("quantity"),
        ]

    def horizon_padding(self) -> list:
        return [literal(0)]

    def quantity_of(self, row) -> int:
        return int(row[-4]) * _SPLIT + int(row[-3])

    def day_hours(self):
        return func.json_each(literal(json.dumps(list(range(24))))).table_valued("value", name="o").c.value

    def hour_cells(self) -> tuple:
        day = DAY_ROWS.c
        cells = func.json_each(day.hour_offsets).table_valued("key", "value", name="h")
        position = func.printf("$[%d]", cells.c.key)
        return (
            cells.c.value,
            func.json_extract(day.hour_quantities, position),
            func.json_extract(day.hour_counts, position),
            cells,
        )

    def end_hours(self, tenant, hour_ranges: int):
        day = DAY_ROWS.c
        days: list[BindParameter[int]] = [bindparam(f"hour{n}_day") for n in range(hour_ranges)]
        offset, quantity, count, cells = self.hour_cells()
        start = day.period_start_us
        ranges = [
            and_(start == days[n], offset >= bindparam(f"hour{n}_from"), offset < bindparam(f"hour{n}_to"))
            for n in range(hour_ranges)
        ]
        return (
            select(day.metric, quantity.label("quantity"), count.label("event_count"))
            .join_from(DAY_ROWS, cells, true())
            .where(totals.unmarked_day(tenant), start.in_(days), or_(*ranges))
        )


PIECES = Pieces()


def usage_totals(connection: Connection, query: UsageQuery, plan: ReadPlan) -> tuple[list[tuple], int | None]:
    """GetUsage's rows and the tenant's purge horizon (storage.Storage.usage_totals)."""
    found = connection.execute(totals.statement(PIECES, *totals.shape(query, plan)), totals.parameters(query, plan))
    return totals.decode(PIECES, found, query.by_actor)
