"""QueryUsage's pieces on PostgreSQL (repository/meters.py): JSON read as jsonb, the windows as arrays, code point
order by the C collation, sums as numeric, LATEST as the first of an ordered array_agg."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, bindparam, cast, distinct, func, literal_column
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by

from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.repository.meters import EVENTS


class Pieces:
    """PostgreSQL's pieces (meters.MeterPieces)."""

    def dimension(self, name: str):
        return cast(EVENTS.c.dimensions, JSONB).op("->>")(literal_column(f"'{name}'"))

    def windows(self, spans: list[tuple[int, int, int]]) -> tuple:
        table = (
            func.unnest(
                bindparam("w_n", [n for n, _, _ in spans], type_=ARRAY(Integer)),
                bindparam("w_lo", [lo for _, lo, _ in spans], type_=ARRAY(BigInteger)),
                bindparam("w_hi", [hi for _, _, hi in spans], type_=ARRAY(BigInteger)),
            )
            .table_valued("n", "lo", "hi")
            .render_derived(name="w")
        )
        return table, table.c.n, table.c.lo, table.c.hi

    def ordered(self, column):
        return column.collate("C")

    def values(self, aggregation: Aggregation, unique) -> list:
        q = EVENTS.c.quantity
        if aggregation is Aggregation.SUM:
            return [func.sum(q).label("v")]  # sum(bigint) is numeric: exact beyond a bigint
        if aggregation is Aggregation.COUNT:
            return [func.count().label("v")]
        if aggregation is Aggregation.MIN:
            return [func.min(q).label("v")]
        if aggregation is Aggregation.MAX:
            return [func.max(q).label("v")]
        if aggregation is Aggregation.LATEST:
            latest = aggregate_order_by(q, EVENTS.c.occurred_at_us.desc(), EVENTS.c.event_id.collate("C").desc())
            return [func.array_agg(latest)[1].label("v")]
        return [func.count(distinct(func.nullif(unique, literal_column("''")))).label("v")]

    def value_of(self, aggregation: Aggregation, cells: tuple) -> int:
        return int(cells[0])


PIECES = Pieces()
