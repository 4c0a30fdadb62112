"""QueryUsage's pieces on SQLite (repository/meters.py): json_extract, the windows as one JSON parameter, sums in
halves (SQLite's sum() fails on an overflow), LATEST as the row of one max() (SQLite's bare column)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import BigInteger, Connection, String, bindparam, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.repository.meters import EVENTS
from tollgate.services.usage.repository.rollups import bit
from tollgate.shared import clock

_SPLIT = 2**32
_SPLIT_SQL = literal_column(str(_SPLIT), BigInteger())
# occurred_at_us shifted to be non-negative and written in 20 digits, so that text order is time order, then
# event_id order (BINARY: code point order).
_LATEST_KEY = f"printf('%020d', e.occurred_at_us + {-clock.MIN_MICROS}) || e.event_id"


class Pieces:
    """SQLite's pieces (meters.MeterPieces)."""

    keeps_days = False  # its rows carry no running sums, and its reads run in process

    def dimension(self, name: str):
        return func.json_extract(EVENTS.c.dimensions, literal_column(f"'$.{name}'"))

    def ordered(self, column):
        return column

    def values(self, aggregation: Aggregation) -> list:
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
        raise ValueError(f"{aggregation.name} has no value over one group of events")

    def value_cell(self, aggregation: Aggregation) -> int | None:
        if aggregation is Aggregation.SUM:
            return None  # two cells, the high and low parts
        return 1 if aggregation is Aggregation.LATEST else 0

    def value_of(self, aggregation: Aggregation, cells: tuple) -> int:
        if aggregation is Aggregation.SUM:
            return int(cells[0]) * _SPLIT + int(cells[1])
        if aggregation is Aggregation.LATEST:
            return int(cells[1])
        return int(cells[0])

    def one_of(self, column, name: str):
        return column.in_(bindparam(name, expanding=True, type_=String()))

    def prepared(self, statement, dialect):
        return statement

    def rows(self, connection: Connection, prepared, values: dict) -> list:
        return list(connection.execute(prepared, values))

    def table(self, name: str, columns: tuple[str, ...]):
        cells = func.json_each(bindparam(f"{name}_rows", type_=String())).table_valued("value")
        at = [func.json_extract(cells.c.value, f"$[{i}]").label(column) for i, column in enumerate(columns)]
        return select(*at).select_from(cells).subquery(name)

    def table_rows(self, name: str, columns: tuple[str, ...], rows: Sequence[tuple[int, ...]]) -> dict:
        return {f"{name}_rows": json.dumps(rows)}

    def rolled_dimension(self, rows, name: str):
        return func.json_extract(rows.c.dimensions, literal_column(f"'$.{name}'"))

    def raw_partials(self, aggregation: Aggregation) -> list:
        q = EVENTS.c.quantity
        if aggregation is Aggregation.SUM:
            return [func.sum(q.op("/")(_SPLIT_SQL)).label("p0"), func.sum(q.op("%")(_SPLIT_SQL)).label("p1")]
        if aggregation is Aggregation.MIN:
            return [func.min(q).label("p0")]
        if aggregation is Aggregation.MAX:
            return [func.max(q).label("p0")]
        if aggregation is Aggregation.LATEST:
            return [func.max(literal_column(_LATEST_KEY)).label("p0"), q.label("p1")]
        return []

    def rolled_partials(self, aggregation: Aggregation, rows, first_hour, end_hour, dirty_hours=None) -> tuple:
        hours = func.json_each(rows.c.hour_offsets).table_valued("key", "value").alias("h")

        def at(column: str):
            return literal_column(f"json_extract(md.{column}, '$[' || h.key || ']')", BigInteger())

        conditions = [hours.c.value >= first_hour, hours.c.value < end_hour]
        if dirty_hours is not None:
            conditions.append(bit(dirty_hours, hours.c.value) == 0)
        if aggregation is Aggregation.SUM:
            q = at("hour_quantities")
            partials = [q.op("/")(_SPLIT_SQL).label("p0"), q.op("%")(_SPLIT_SQL).label("p1")]
        elif aggregation is Aggregation.MIN:
            partials = [at("hour_mins").label("p0")]
        elif aggregation is Aggregation.MAX:
            partials = [at("hour_maxes").label("p0")]
        elif aggregation is Aggregation.LATEST:
            key: ColumnElement = literal_column(
                f"printf('%020d', json_extract(md.hour_latest_at, '$[' || h.key || ']') + {-clock.MIN_MICROS}) "
                "|| json_extract(md.hour_latest_ids, '$[' || h.key || ']')"
            )
            partials = [key.label("p0"), at("hour_latest_quantities").label("p1")]
        else:
            partials = []
        return [hours], conditions, partials, at("hour_counts")

    def combine(self, aggregation: Aggregation, parts) -> list:
        if aggregation is Aggregation.SUM:
            return [func.sum(parts.c.p0).label("v"), func.sum(parts.c.p1).label("v_low")]
        if aggregation is Aggregation.MIN:
            return [func.min(parts.c.p0).label("v")]
        if aggregation is Aggregation.MAX:
            return [func.max(parts.c.p0).label("v")]
        if aggregation is Aggregation.LATEST:
            # One max() in the query: SQLite reads the bare p1 from the row holding it.
            return [func.max(parts.c.p0).label("v_key"), parts.c.p1.label("v")]
        return [func.sum(parts.c.c).label("v")]


PIECES = Pieces()
