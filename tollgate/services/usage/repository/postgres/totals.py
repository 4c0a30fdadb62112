"""GetUsage's statement on PostgreSQL: its own pieces, and the statement sent on the pooled psycopg cursor
(tollgate/shared/driver.py)."""

from __future__ import annotations

import functools

from sqlalchemy import BigInteger, Connection, String, any_, bindparam, case, func, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import BindParameter

from tollgate.services.usage.domain.queries import UsageQuery
from tollgate.services.usage.domain.read_plan import ReadPlan
from tollgate.services.usage.repository import totals
from tollgate.services.usage.repository.totals import DAY_ROWS, ONE, ZERO
from tollgate.shared import driver

# A day row's running sums of its hours (migration usage_0012): [h + 1] sums the hours before hour h.
# PostgreSQL only, so not in tables.py, which both backends share.
_RUNNING = (
    literal_column("a.hour_running_quantities", postgresql.ARRAY(BigInteger)),
    literal_column("a.hour_running_counts", postgresql.ARRAY(BigInteger)),
)


class Pieces:
    """PostgreSQL's pieces of the statement (totals.Pieces)."""

    def metrics(self):
        # One array parameter: the text stays the same whatever the list's length, so psycopg converts
        # it once and the server plans it once (an IN list would make a new statement per length).
        return any_(bindparam("metrics", type_=postgresql.ARRAY(String)))

    def metric_in(self, column, metrics):
        return column == metrics

    def sums(self, union) -> list:
        return [func.sum(union.c.quantity).label("quantity")]  # sum(bigint) is numeric: exact beyond a bigint

    def horizon_padding(self) -> list:
        return []

    def quantity_of(self, row) -> int:
        return int(row[-3])

    def day_hours(self):
        return func.generate_series(ZERO, literal_column("23")).table_valued("value").render_derived(name="o").c.value

    def hour_cells(self) -> tuple:
        day = DAY_ROWS.c
        cells = (
            func.unnest(day.hour_offsets, day.hour_quantities, day.hour_counts)
            .table_valued("o", "q", "n")
            .render_derived(name="h")
        )
        return cells.c.o, cells.c.q, cells.c.n, cells

    def end_hours(self, tenant, hour_ranges: int):
        # One subtraction of running sums per row, rather than unnesting the day's hours.
        day = DAY_ROWS.c
        days: list[BindParameter[int]] = [bindparam(f"hour{n}_day") for n in range(hour_ranges)]

        def span(running, n):
            return running[bindparam(f"hour{n}_to") + ONE] - running[bindparam(f"hour{n}_from") + ONE]

        def of_its_end(running):
            if hour_ranges == 1:
                return span(running, 0)
            return case((day.period_start_us == days[0], span(running, 0)), else_=span(running, 1))

        return select(
            day.metric, of_its_end(_RUNNING[0]).label("quantity"), of_its_end(_RUNNING[1]).label("event_count")
        ).where(totals.unmarked_day(tenant), day.period_start_us.in_(days))


PIECES = Pieces()


def usage_totals(connection: Connection, query: UsageQuery, plan: ReadPlan) -> tuple[list[tuple], int | None]:
    """GetUsage's rows and the tenant's purge horizon (storage.Storage.usage_totals)."""
    statement = _driver_statement(totals.shape(query, plan), connection.dialect)
    found = driver.rows(connection, statement, totals.parameters(query, plan))
    return totals.decode(PIECES, found, query.by_actor)


@functools.cache
def _driver_statement(shape: tuple, dialect) -> driver.Compiled:
    """The statement of `shape`, compiled once (driver.compiled)."""
    return driver.compiled(totals.statement(PIECES, *shape), dialect)
