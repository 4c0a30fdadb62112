"""GetUsage's statement on PostgreSQL: its own pieces, and the statement sent on the pooled psycopg cursor."""

from __future__ import annotations

import functools

from sqlalchemy import BigInteger, Connection, String, any_, bindparam, case, func, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import BindParameter

from tollgate.services.usage.domain.queries import UsageQuery
from tollgate.services.usage.domain.read_plan import ReadPlan
from tollgate.services.usage.repository import totals
from tollgate.services.usage.repository.totals import DAY_ROWS, ONE, ZERO

# A day row's running sums of its hours (migration usage_0012): [h + 1] sums the hours before hour h.
# PostgreSQL only, so not in tables.py, which both backends share.
_RUNNING = (
    literal_column("a.hour_running_quantities", postgresql.ARRAY(BigInteger)),
    literal_column("a.hour_running_counts", postgresql.ARRAY(BigInteger)),
)
_CURSOR = "tollgate.usage.reads.cursor"


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
    shape = totals.shape(query, plan)
    found = _execute_on_driver(connection, shape, totals.parameters(query, plan))
    return totals.decode(PIECES, found, query.by_actor)


def _execute_on_driver(connection: Connection, shape: tuple, values: dict) -> list[tuple]:
    """Rows of the statement of `shape`, run on the pooled connection's psycopg connection.

    SQLAlchemy's execution (its context, result metadata from the cursor description) is skipped on
    this, the hottest read; psycopg alone still prepares the statement once per connection. A driver
    error is raised as SQLAlchemy would raise it, and a connection that died is dropped from the pool
    (invalidated), so an outage answers UNAVAILABLE as on every other path.
    """
    sql, constants = _driver_statement(shape, connection.dialect)
    parameters = {**constants, **values}
    driver, dialect = connection.connection.driver_connection, connection.dialect
    try:
        return _cursor(connection, driver).execute(sql, parameters).fetchall()
    except dialect.loaded_dbapi.Error as error:
        dead = dialect.is_disconnect(error, driver, None)
        if dead:
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql, parameters, error, dialect.loaded_dbapi.Error, dialect=dialect, connection_invalidated=dead
        ) from error


def _cursor(connection, driver):
    """The cursor kept with the pooled psycopg connection (in its pool entry's info, which SQLAlchemy clears
    when it replaces the connection), rather than a new cursor per call."""
    cursor = connection.info.get(_CURSOR)
    if cursor is None or cursor.closed or cursor.connection is not driver:
        cursor = connection.info[_CURSOR] = driver.cursor()
    return cursor


@functools.cache
def _driver_statement(shape: tuple, dialect) -> tuple[str, dict]:
    """The statement of `shape` compiled once: its text, and the values of the parameters the statement
    itself fixes (literals), beside those each call binds."""
    compiled = totals.statement(PIECES, *shape).compile(dialect=dialect)
    return str(compiled), {name: bind.value for bind, name in compiled.bind_names.items() if not bind.required}
