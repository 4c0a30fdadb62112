"""QueryUsage's pieces on PostgreSQL (repository/meters.py): JSON read as jsonb, the windows as arrays, code point
order by the C collation, sums as numeric, LATEST as the first of an ordered array_agg, statements sent on the
pooled psycopg cursor (tollgate/shared/driver.py)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    BigInteger,
    Connection,
    String,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement

from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.repository.meters import EVENTS
from tollgate.services.usage.repository.rollups import bit
from tollgate.shared import driver

# A group's latest event as one value ("usage".meter_latest, migration usage_0016), and the latest of such values.
_LATEST = '(array_agg(ROW({at}, {id}, {q})::"usage".meter_latest ORDER BY {at} DESC, {id} COLLATE "C" DESC))[1]'
_LATEST_ROW = 'ROW(h.at, h.id, h.q)::"usage".meter_latest'
_LATEST_OF_PARTS = '((array_agg(u.p0 ORDER BY (u.p0).at DESC, (u.p0).id COLLATE "C" DESC))[1]).quantity'


class Pieces:
    """PostgreSQL's pieces (meters.MeterPieces)."""

    keeps_days = True

    def dimension(self, name: str):
        return cast(EVENTS.c.dimensions, JSONB).op("->>")(literal_column(f"'{name}'"))

    def ordered(self, column):
        return column.collate("C")

    def values(self, aggregation: Aggregation) -> list:
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
        raise ValueError(f"{aggregation.name} has no value over one group of events")

    def value_cell(self, aggregation: Aggregation) -> int | None:
        return 0

    def value_of(self, aggregation: Aggregation, cells: tuple) -> int:
        return int(cells[0])

    def one_of(self, column, name: str):
        # One array parameter: the statement's text stays the same whatever the number of values.
        return column == any_(bindparam(name, type_=ARRAY(String)))

    def prepared(self, statement, dialect):
        return driver.compiled(statement, dialect)

    def rows(self, connection: Connection, prepared, values: dict) -> list:
        return driver.rows(connection, prepared, values)

    def table(self, name: str, columns: tuple[str, ...]):
        arrays = [bindparam(f"{name}_{column}", type_=ARRAY(BigInteger)) for column in columns]
        return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)

    def table_rows(self, name: str, columns: tuple[str, ...], rows: Sequence[tuple[int, ...]]) -> dict:
        # Each column as the text of an array, which the statement casts: psycopg writes a list of ints element by
        # element in Python, a str at once.
        cells = zip(*rows) if rows else [()] * len(columns)
        return {f"{name}_{column}": "{" + ",".join(map(str, values)) + "}" for column, values in zip(columns, cells)}

    def rolled_dimension(self, rows, name: str):
        return rows.c.dimensions.op("->>", return_type=String())(literal_column(f"'{name}'"))

    def raw_partials(self, aggregation: Aggregation) -> list:
        q = EVENTS.c.quantity
        if aggregation is Aggregation.SUM:
            return [func.sum(q).label("p0")]
        if aggregation is Aggregation.MIN:
            return [func.min(q).label("p0")]
        if aggregation is Aggregation.MAX:
            return [func.max(q).label("p0")]
        if aggregation is Aggregation.LATEST:
            return [literal_column(_LATEST.format(at="e.occurred_at_us", id="e.event_id", q="e.quantity")).label("p0")]
        return []

    def rolled_partials(self, aggregation: Aggregation, rows, first_hour, end_hour, dirty_hours=None) -> tuple:
        sums = aggregation in (Aggregation.SUM, Aggregation.COUNT)
        if sums and dirty_hours is None:
            # Running sums: the hours [h1, h2) of a row are one subtraction, not an unnest.
            quantity, count = _between(rows, first_hour, end_hour)
            return [], [], [quantity.label("p0")] if aggregation is Aggregation.SUM else [], count
        if sums:
            # The hours [h1, h2) by one subtraction, less each hour the mark names by one more: sums subtract, and
            # the running sums are in the index (meter_days_running), the hours' cells are not.
            hour = func.generate_series(first_hour, end_hour - 1).table_valued("h").render_derived(name="g")
            # Of the row's piece: each part is correlated to the statement's FROM items.
            spans = union_all(
                select(
                    first_hour.label("lo"), end_hour.label("hi"), literal_column("1").label("sign")
                ).correlate_except(None),
                select(hour.c.h, hour.c.h + 1, literal_column("-1"))
                .where(bit(dirty_hours, hour.c.h) == 1)
                .correlate_except(None),
            ).lateral("s")
            quantity, count = _between(rows, spans.c.lo, spans.c.hi)
            quantity, count = spans.c.sign * quantity, spans.c.sign * count
            return [spans], [], [quantity.label("p0")] if aggregation is Aggregation.SUM else [], count
        if aggregation is Aggregation.LATEST:
            hours = (
                func.unnest(
                    rows.c.hour_offsets,
                    rows.c.hour_counts,
                    rows.c.hour_latest_at,
                    rows.c.hour_latest_ids,
                    rows.c.hour_latest_quantities,
                )
                .table_valued("o", "c", "at", "id", "q")
                .render_derived(name="h")
            )
            partial: ColumnElement = literal_column(_LATEST_ROW).label("p0")
        else:
            column = rows.c.hour_mins if aggregation is Aggregation.MIN else rows.c.hour_maxes
            hours = (
                func.unnest(rows.c.hour_offsets, rows.c.hour_counts, column)
                .table_valued("o", "c", "x")
                .render_derived(name="h")
            )
            partial = hours.c.x.label("p0")
        conditions = [hours.c.o >= first_hour, hours.c.o < end_hour]
        if dirty_hours is not None:
            conditions.append(bit(dirty_hours, hours.c.o) == 0)
        return [hours], conditions, [partial], hours.c.c

    def combine(self, aggregation: Aggregation, parts) -> list:
        if aggregation is Aggregation.SUM:
            return [func.sum(parts.c.p0).label("v")]
        if aggregation is Aggregation.MIN:
            return [func.min(parts.c.p0).label("v")]
        if aggregation is Aggregation.MAX:
            return [func.max(parts.c.p0).label("v")]
        if aggregation is Aggregation.LATEST:
            return [literal_column(_LATEST_OF_PARTS).label("v")]
        return [func.sum(parts.c.c).label("v")]


def _between(rows, first_hour, end_hour) -> tuple:
    """(quantity, count) of a meter_days row's hours [first_hour, end_hour): differences of its running sums."""
    return (
        rows.c.running_quantities[end_hour + 1] - rows.c.running_quantities[first_hour + 1],
        rows.c.running_counts[end_hour + 1] - rows.c.running_counts[first_hour + 1],
    )


PIECES = Pieces()
