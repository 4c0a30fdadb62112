"""Statements sent on the pooled psycopg connection itself, for the hottest paths.

`rows`: the hottest reads (Usage's GetUsage and QueryUsage) skip SQLAlchemy's execution (its context, result
metadata from the cursor description); psycopg alone still prepares each statement once per connection.
`together`: a few statements of one transaction (Policy's Reserve) sent in one round trip, or one statement
(Policy's balance reads). `many`: one write for many parameter sets (Usage's dirty marks). A driver error is
raised as SQLAlchemy would raise it, and a connection that died is dropped from the pool (invalidated), so an
outage answers UNAVAILABLE as on every other path.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from psycopg import pq
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

_CURSOR = "tollgate.driver.cursor"


def compiled(statement, dialect) -> tuple[str, dict]:
    """The statement's text, and the values of the parameters the statement itself fixes (literals), beside those
    each call binds. Compile once per statement: callers keep the result."""
    done = statement.compile(dialect=dialect)
    return str(done), {name: bind.value for bind, name in done.bind_names.items() if not bind.required}


def rows(connection: Connection, sql: str, parameters: dict) -> list[tuple]:
    """The rows of `sql` (compiled()'s text) with `parameters`, run on the pooled connection's psycopg connection."""
    with _raised_as_sqlalchemy(connection, sql, parameters):
        return _cursor(connection).execute(sql, parameters).fetchall()


def together(
    connection: Connection, statements: Sequence[tuple[Executable, dict]], *, commit: bool = False
) -> list[list[tuple]]:
    """Each statement's rows (none for a write), then the transaction committed if `commit`.

    On PostgreSQL all are sent at once in psycopg's pipeline mode, BEGIN and COMMIT included: the server still
    runs them one after another, each statement with its own snapshot (READ COMMITTED), so a read placed after a
    row lock sees every commit made before the lock was granted. Elsewhere they run one after another through
    SQLAlchemy, and the caller's transaction commits as usual. Statements are compiled once each (keep them)."""
    if connection.dialect.name != "postgresql":
        results = [connection.execute(statement, values) for statement, values in statements]
        return [[tuple(row) for row in result] if result.returns_rows else [] for result in results]
    driver = connection.connection.driver_connection
    assert driver is not None
    sent = [(_pg_compiled(statement, connection.dialect), values) for statement, values in statements]
    with _raised_as_sqlalchemy(connection, "; ".join(sql for (sql, _), _ in sent), {}):
        if len(sent) == 1 and not commit:  # nothing to pipeline: the pooled cursor, as `rows`
            [((sql, constants), values)] = sent
            cursor = _cursor(connection).execute(sql, {**constants, **values})
            return [_rows_of(cursor)]
        cursors = []
        with driver.pipeline():
            for (sql, constants), values in sent:
                cursors.append(driver.cursor())
                cursors[-1].execute(sql, {**constants, **values})
            if commit:
                driver.commit()
        return [_rows_of(cursor) for cursor in cursors]


def many(connection: Connection, statement: Executable, rows: Sequence[dict]) -> None:
    """A write executed once per parameter set of `rows`. On PostgreSQL, psycopg's executemany of the statement
    compiled once (SQLAlchemy compiles some statements, such as an upsert, on every execution); elsewhere through
    SQLAlchemy."""
    if connection.dialect.name != "postgresql":
        connection.execute(statement, rows)
        return
    sql, constants = _pg_compiled(statement, connection.dialect)
    with _raised_as_sqlalchemy(connection, sql, {}):
        _cursor(connection).executemany(sql, [{**constants, **row} for row in rows])


def _rows_of(cursor) -> list[tuple]:
    """The rows a statement returned, none for a write: asked of the result's status, since `description` builds
    the columns' descriptions on every call."""
    result = cursor.pgresult
    return cursor.fetchall() if result is not None and result.status == pq.ExecStatus.TUPLES_OK else []


@functools.lru_cache(maxsize=256)
def _pg_compiled(statement: Executable, dialect) -> tuple[str, dict]:
    return compiled(statement, dialect)


@contextmanager
def _raised_as_sqlalchemy(connection: Connection, sql: str, parameters: dict) -> Iterator[None]:
    driver, dialect = connection.connection.driver_connection, connection.dialect
    try:
        yield
    except dialect.loaded_dbapi.Error as error:
        dead = dialect.is_disconnect(error, driver, None)
        if dead:
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql, parameters, error, dialect.loaded_dbapi.Error, dialect=dialect, connection_invalidated=dead
        ) from error


def _cursor(connection):
    """The cursor kept with the pooled psycopg connection (in its pool entry's info, which SQLAlchemy clears when
    it replaces the connection), rather than a new cursor per call."""
    driver = connection.connection.driver_connection
    cursor = connection.info.get(_CURSOR)
    if cursor is None or cursor.closed or cursor.connection is not driver:
        cursor = connection.info[_CURSOR] = driver.cursor()
    return cursor
