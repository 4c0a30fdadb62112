"""Every SQL statement of the Policy service, split by the data it touches."""

from typing import TypeAlias

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from tollgate.shared.db import rowcount

# A use case is handed Sessions and runs its one transaction in `with sessions.begin() as session:`; the Session
# goes down to the statements here. A read of one statement is handed Connections (an engine in autocommit) and
# runs on one Connection, without BEGIN and COMMIT around it. Named here so that no service module imports
# SQLAlchemy.
Sessions: TypeAlias = sessionmaker[Session]
Connections: TypeAlias = Engine

__all__ = ["Connection", "Connections", "Session", "Sessions", "rowcount"]
