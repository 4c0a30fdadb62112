"""Every SQL statement of the Usage service, split by use case; plus the transaction runner."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")

# Deadlock and serialization failure: the transaction did nothing and may simply run again.
_TRANSIENT_SQLSTATES = {"40P01", "40001"}


def in_transaction(sessions, work: Callable[..., T], *, attempts: int = 3) -> T:
    """Run `work(session)` in one transaction, again (a bounded number of times) after a deadlock."""
    for attempt in range(attempts):
        try:
            with sessions.begin() as session:
                return work(session)
        except sqlalchemy.exc.OperationalError as error:
            if getattr(error.orig, "sqlstate", None) not in _TRANSIENT_SQLSTATES or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def is_postgres(session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def dialect_insert(session, table):
    """INSERT with the dialect's ON CONFLICT clauses (PostgreSQL or SQLite)."""
    return (postgresql.insert if is_postgres(session) else sqlite.insert)(table)
