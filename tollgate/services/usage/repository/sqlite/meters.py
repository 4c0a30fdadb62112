"""QueryUsage's pieces on SQLite (repository/meters.py): json_extract, the windows as one JSON parameter, sums in
halves (SQLite's sum() fails on an overflow), LATEST as the row of one max() (SQLite's bare column)."""

from __future__ import annotations

import json

from sqlalchemy import BigInteger, bindparam, distinct, func, literal_column, select

from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.repository.meters import EVENTS
from tollgate.shared import clock

_SPLIT = 2**32
_SPLIT_SQL = literal_column(str(_SPLIT), BigInteger())
# occurred_at_us shifted to be non-negative and written in 20 digits, so that text order is time order, then
# event_id order (BINARY: code point order).
_LATEST_KEY = f"printf('%020d', e.occurred_at_us + {-clock.MIN_MICROS}) || e.event_id"


class Pieces:
    """SQLite's pieces (meters.MeterPieces)."""

    def dimension(self, name: str):
        return func.json_extract(EVENTS.c.dimensions, literal_column(f"'$.{name}'"))

    def windows(self, spans: list[tuple[int, int, int]]) -> tuple:
        cells = func.json_each(bindparam("windows", json.dumps(spans))).table_valued("value")
        at = [func.json_extract(cells.c.value, f"$[{i}]") for i in range(3)]
        table = select(at[0].label("n"), at[1].label("lo"), at[2].label("hi")).select_from(cells).subquery("w")
        return table, table.c.n, table.c.lo, table.c.hi

    def ordered(self, column):
        return column

    def values(self, aggregation: Aggregation, unique) -> list:
        q = EVENTS.c.quantity
        if aggregation is Aggregation.SUM:
            return [func.sum(q.op("/")(_SPLIT_SQL)).label("v"), func.sum(q.op("%")(_SPLIT_SQL)).label("v_low")]
        if aggregation is Aggregation.COUNT:
            return [func.count().label("v")]
        if aggregation is Aggregation.MIN:
            return [func.min(q).label("v")]
        if aggregation is Aggregation.MAX:
            return [func.max(q).label("v")]
        if aggregation is Aggregation.LATEST:
            # With exactly one max() in the query, SQLite reads a bare column from the row holding the maximum.
            return [func.max(literal_column(_LATEST_KEY)).label("v_key"), q.label("v")]
        return [func.count(distinct(func.nullif(unique, literal_column("''")))).label("v")]

    def value_of(self, aggregation: Aggregation, cells: tuple) -> int:
        if aggregation is Aggregation.SUM:
            return int(cells[0]) * _SPLIT + int(cells[1])
        if aggregation is Aggregation.LATEST:
            return int(cells[1])
        return int(cells[0])


PIECES = Pieces()
