"""Statements sent on the pooled psycopg connection itself, for the hottest paths.

`rows`: the hottest reads (Usage's GetUsage and QueryUsage) skip SQLAlchemy's execution (its context, result
metadata from the cursor description); psycopg alone still prepares each statement once per connection.
Statements are compiled once with PostgreSQL's own numbered placeholders ($1) and sent on psycopg's raw cursors,
which take the text as it is: psycopg converts named placeholders on every execution of a statement longer than its
cache of conversions admits (4 KiB), as QueryUsage's are.
`together`: a few statements of one transaction (Usage's ingest) sent in one round trip. `in_one_query`: the same
for a few statements with a few scalar values each (Policy's Reserve and Commit), sent as one message. `many`: one
write for many parameter sets (Usage's dirty marks). A driver error is
raised as SQLAlchemy would raise it, and a connection that died is dropped from the pool (invalidated), so an
outage answers UNAVAILABLE as on every other path.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import NamedTuple

from psycopg import ClientCursor, RawCursor, errors, generators, pq
from psycopg.adapt import Transformer
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

_CURSOR = "tollgate.driver.cursor"
_PREPARED = "tollgate.driver.prepared"
PREPARED_PER_CONNECTION = 64  # statements in_one_query keeps prepared on a connection, the least recently used go


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


def in_one_query(
    connection: Connection, statements: Sequence[tuple[Executable, dict]], *, commit: bool = False
) -> list[list[tuple]]:
    """As `together`, for statements with a few scalar values each: on PostgreSQL, one message each way.

    Each statement is prepared once per connection (PREPARE, in the first message that runs it) and run as
    EXECUTE with its values written as literals (_Prepared.execute), all in one simple query with
    BEGIN (unless a transaction is open) and COMMIT: the server answers every statement in one reply, where a
    pipeline takes a flush and a read of the driver's per statement, which cost more than the statements. The
    server still runs them one after another, each with its own snapshot (READ COMMITTED), and stops at the first
    error, which is raised as `together` raises it and leaves the transaction to be rolled back. On a pool whose
    connections psycopg prepares statements on (the default of db.create_engine_for), as `together`."""
    if connection.dialect.name != "postgresql":
        return together(connection, statements, commit=commit)
    driver = connection.connection.driver_connection
    assert driver is not None
    if driver.prepare_threshold is not None:
        # psycopg prepares on this pool (db.create_engine_for(driver_prepares=True)): it would deallocate ours with
        # its own after a rollback, and a pool behind PgBouncer carries only the protocol-level ones it makes.
        return together(connection, statements, commit=commit)
    kept = _prepared(connection, driver)
    preparing: dict[str, str] = {}  # text -> name, prepared by this message
    executing = []
    for statement, values in statements:
        done = _pg_compiled(statement, connection.dialect)
        name = kept.names.get(done.sql) or preparing.get(done.sql)
        if name is None:
            name = preparing[done.sql] = f"tollgate_{next(kept.numbers)}"
        elif done.sql in kept.names:
            kept.names.move_to_end(done.sql)
        with _raised_as_sqlalchemy(connection, done.sql, values):  # a value PostgreSQL cannot hold is refused here
            executing.append(kept.execute(name, done.values(values)))
    surplus = len(kept.names) + len(preparing) - PREPARED_PER_CONNECTION
    evicted = [kept.names.popitem(last=False)[1] for _ in range(max(0, surplus))]
    opening, closing = _begin(driver), ["COMMIT"] if commit and not driver.autocommit else []
    query = "; ".join(
        [f"DEALLOCATE {name}" for name in evicted]
        + [f"PREPARE {name} AS {sql}" for sql, name in preparing.items()]
        + opening
        + executing
        + closing
    )
    with _raised_as_sqlalchemy(connection, query, {}):
        driver.pgconn.send_query(query.encode(driver.info.encoding))
        results = driver.wait(generators.execute(driver.pgconn))
        for (sql, name), result in zip(preparing.items(), results[len(evicted) :]):
            if result.status == pq.ExecStatus.COMMAND_OK:  # prepared even if a later statement failed
                kept.names[sql] = name
        for result in results:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise errors.error_from_result(result, encoding=driver.info.encoding)
    first = len(evicted) + len(preparing) + len(opening)
    return [_loaded(driver, result) for result in results[first : first + len(executing)]]


class _Prepared:
    """What in_one_query keeps with a pooled connection: its prepared statements (text -> name, least recently used
    first), the numbers of their names, and what writes its literals."""

    def __init__(self, driver):
        self.names: OrderedDict[str, str] = OrderedDict()
        self.numbers = itertools.count()
        self.literal = ClientCursor(driver)
        self._escaping, self._encoding = pq.Escaping(driver.pgconn), driver.info.encoding

    def execute(self, name: str, values: Sequence) -> str:
        """EXECUTE of the statement prepared as `name` with `values` written as literals: ints, text without NUL,
        None and bools directly (libpq quotes the text), any other value by psycopg's client-side binding, which
        also refuses what PostgreSQL cannot hold."""
        if not values:
            return f"EXECUTE {name}"
        return f"EXECUTE {name}({', '.join(map(self._literal, values))})"

    def _literal(self, value) -> str:
        kind = type(value)
        if kind is int:
            return str(value)
        if kind is str and "\x00" not in value:
            return self._escaping.escape_literal(value.encode(self._encoding)).decode(self._encoding)
        if value is None:
            return "NULL"
        if kind is bool:
            return "true" if value else "false"
        return self.literal.mogrify("%s", [value])


def _prepared(connection: Connection, driver) -> _Prepared:
    """in_one_query's state for the pooled connection (`driver` its psycopg connection), kept in the pool entry's
    info as `_cursor` is."""
    kept = connection.info.get(_PREPARED)
    if kept is None or kept.literal.connection is not driver:
        kept = connection.info[_PREPARED] = _Prepared(driver)
    return kept


def _begin(driver) -> list[str]:
    """The BEGIN psycopg would send before the next statement (none when a transaction is open or in autocommit)."""
    if driver.autocommit or driver.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return []
    words = ["BEGIN"]
    if driver.isolation_level is not None:
        words.append("ISOLATION LEVEL " + driver.isolation_level.name.replace("_", " "))
    if driver.read_only is not None:
        words.append("READ ONLY" if driver.read_only else "READ WRITE")
    if driver.deferrable is not None:
        words.append("DEFERRABLE" if driver.deferrable else "NOT DEFERRABLE")
    return [" ".join(words)]


def _loaded(driver, result: pq.abc.PGresult) -> list[tuple]:
    """A result's rows as tuples of Python values (none for a write)."""
    if result.status != pq.ExecStatus.TUPLES_OK:
        return []
    rows = Transformer(driver)
    rows.set_pgresult(result)
    return rows.load_rows(0, result.ntuples, tuple)


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
