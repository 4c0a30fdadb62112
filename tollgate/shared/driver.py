"""Statements sent on the pooled psycopg connection itself, for the hottest paths.

`rows`: the hottest reads (Usage's GetUsage and QueryUsage) skip SQLAlchemy's execution (its context, result
metadata from the cursor description); psycopg alone still prepares each statement once per connection.
Statements are compiled once with PostgreSQL's own numbered placeholders ($1) and sent on psycopg's raw cursors,
which take the text as it is: psycopg converts named placeholders on every execution of a statement longer than its
cache of conversions admits (4 KiB), as QueryUsage's are.
`together`: a few statements of one transaction (Policy's Reserve) sent in one round trip, or one statement
(Policy's balance reads). `many`: one write for many parameter sets (Usage's dirty marks). A driver error is
raised as SQLAlchemy would raise it, and a connection that died is dropped from the pool (invalidated), so an
outage answers UNAVAILABLE as on every other path.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import NamedTuple

from psycopg import RawCursor, pq
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

_CURSOR = "tollgate.driver.cursor"


class Compiled(NamedTuple):
    """A statement as PostgreSQL takes it: its text with numbered placeholders, the parameter each number stands
    for, and the values of the parameters the statement itself fixes (literals), beside those each call binds."""

    sql: str
    names: tuple[str, ...]
    constants: dict

    def values(self, parameters: Mapping) -> list:
        """The value of each placeholder, in order, from the call's `parameters` and the statement's constants."""
        constants = self.constants
        return [parameters[name] if name in parameters else constants[name] for name in self.names]


def compiled(statement, dialect) -> Compiled:
    """The statement compiled for PostgreSQL's numbered placeholders. Compile once per statement: callers keep it."""
    done = statement.compile(dialect=_numbered(dialect))
    constants = {name: bind.value for bind, name in done.bind_names.items() if not bind.required}
    return Compiled(str(done), tuple(done.positiontup or ()), constants)


def rows(connection: Connection, statement: Compiled, parameters: Mapping) -> list[tuple]:
    """The rows of `statement` with `parameters` (the constants aside), run on the pooled connection's psycopg
    connection."""
    with _raised_as_sqlalchemy(connection, statement.sql, parameters):
        return _cursor(connection).execute(statement.sql, statement.values(parameters)).fetchall()


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
    with _raised_as_sqlalchemy(connection, "; ".join(done.sql for done, _ in sent), {}):
        if len(sent) == 1 and not commit:  # nothing to pipeline: the pooled cursor, as `rows`
            [(done, values)] = sent
            return [_rows_of(_cursor(connection).execute(done.sql, done.values(values)))]
        cursors = []
        with driver.pipeline():
            for done, values in sent:
                cursors.append(RawCursor(driver))
                cursors[-1].execute(done.sql, done.values(values))
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
    done = _pg_compiled(statement, connection.dialect)
    with _raised_as_sqlalchemy(connection, done.sql, {}):
        _cursor(connection).executemany(done.sql, [done.values(row) for row in rows])


def _rows_of(cursor) -> list[tuple]:
    """The rows a statement returned, none for a write: asked of the result's status, since `description` builds
    the columns' descriptions on every call."""
    result = cursor.pgresult
    return cursor.fetchall() if result is not None and result.status == pq.ExecStatus.TUPLES_OK else []


@functools.lru_cache(maxsize=256)
def _pg_compiled(statement: Executable, dialect) -> Compiled:
    return compiled(statement, dialect)


@functools.cache
def _numbered(dialect):
    """The connection's dialect (as its server made it), compiling to numbered placeholders: one per parameter,
    repeated where the parameter is, and a literal % written once."""
    numbered = copy.copy(dialect)
    numbered.paramstyle, numbered.positional = "numeric_dollar", True
    numbered.identifier_preparer = numbered.preparer(numbered)
    return numbered


@contextmanager
def _raised_as_sqlalchemy(connection: Connection, sql: str, parameters: Mapping) -> Iterator[None]:
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
        cursor = connection.info[_CURSOR] = RawCursor(driver)
    return cursor
