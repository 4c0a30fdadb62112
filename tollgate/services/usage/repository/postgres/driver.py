"""Statements of the hottest reads (GetUsage, QueryUsage) sent on the pooled psycopg cursor.

SQLAlchemy's execution (its context, result metadata from the cursor description) is skipped on these; psycopg
alone still prepares each statement once per connection. A driver error is raised as SQLAlchemy would raise it,
and a connection that died is dropped from the pool (invalidated), so an outage answers UNAVAILABLE as on every
other path.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

_CURSOR = "tollgate.usage.reads.cursor"


def compiled(statement, dialect) -> tuple[str, dict]:
    """The statement's text, and the values of the parameters the statement itself fixes (literals), beside those
    each call binds. Compile once per statement: callers keep the result."""
    done = statement.compile(dialect=dialect)
    return str(done), {name: bind.value for bind, name in done.bind_names.items() if not bind.required}


def rows(connection: Connection, sql: str, parameters: dict) -> list[tuple]:
    """The rows of `sql` (compiled()'s text) with `parameters`, run on the pooled connection's psycopg connection."""
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
    """The cursor kept with the pooled psycopg connection (in its pool entry's info, which SQLAlchemy clears when
    it replaces the connection), rather than a new cursor per call."""
    cursor = connection.info.get(_CURSOR)
    if cursor is None or cursor.closed or cursor.connection is not driver:
        cursor = connection.info[_CURSOR] = driver.cursor()
    return cursor
