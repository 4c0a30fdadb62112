"""Every SQL statement of the Usage service, split by use case; plus the transaction runner.

The modules here hold the statements both backends share. What a backend writes its own way sits behind
the seam in storage.py, implemented once per backend (postgres/, sqlite/) and chosen by the wiring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc

T = TypeVar("T")

# What a use case may catch of the database's failures without naming SQLAlchemy.
DatabaseError = sqlalchemy.exc.SQLAlchemyError
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
