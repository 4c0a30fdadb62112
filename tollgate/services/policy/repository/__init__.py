"""Every SQL statement of the Policy service, split by the data it touches."""

from typing import TypeAlias

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from tollgate.shared.db import rowcount

# A use case is handed Sessions and runs its one transaction in `with sessions.begin() as session:`; the Session
# goes down to the statements here. The entitlement calls on every request's path (CheckEntitlement's crossings,
# Reserve, Commit, Release, the outbox's deliveries) are handed Transactions instead, the same engine, and run in
# `with transactions.begin() as connection:` on a Connection: the Session's bookkeeping at begin, commit and close
# cost them more than their statements. A read of one statement is handed Connections (an engine in autocommit)
# and runs on one Connection, without BEGIN and COMMIT around it. Named here so that no service module imports
# SQLAlchemy.
Sessions: TypeAlias = sessionmaker[Session]
Transactions: TypeAlias = Engine
Connections: TypeAlias = Engine

__all__ = ["Connection", "Connections", "Session", "Sessions", "Transactions", "rowcount"]
