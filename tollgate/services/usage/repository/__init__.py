"""Every SQL statement of the Usage service, split by use case; plus the transaction runner.

The modules here hold the statements both backends share. What a backend writes its own way sits behind
the seam in storage.py, implemented once per backend (postgres/, sqlite/) and chosen by the wiring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, TypeVar

import sqlalchemy.exc
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from tollgate.shared.db import rowcount

T = TypeVar("T")

# A use case is handed Sessions and runs its transactions through them (`in_transaction`, or `with
# sessions.begin() as session:`); a read of one statement is handed Connections (an engine in autocommit) and
# runs on one Connection. Named here so that no service module imports SQLAlchemy.
Sessions: TypeAlias = sessionmaker[Session]
Connections: TypeAlias = Engine

__all__ = ["Connection", "Connections", "DatabaseError", "Session", "Sessions", "in_transaction", "rowcount"]

# What a use case may catch of the database's failures without naming SQLAlchemy.
DatabaseError = sqlalchemy.exc.SQLAlchemyError
# Deadlock and serialization failure: the transaction did nothing and may simply run again.
_TRANSIENT_SQLSTATES = {"40P01", "40001"}


def in_transaction(sessions: Sessions, work: Callable[[Session], T], *, attempts: int = 3) -> T:
    """Run `work(session)` in one transaction, again (a bounded number of times) after a deadlock."""
    for attempt in range(attempts):
        try:
            with sessions.begin() as session:
                return work(session)
        except sqlalchemy.exc.OperationalError as error:
            if getattr(error.orig, "sqlstate", None) not in _TRANSIENT_SQLSTATES or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
