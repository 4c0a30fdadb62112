"""Every SQL statement of the Policy service, split by the data it touches."""

from typing import TypeAlias

from sqlalchemy.orm import Session, sessionmaker

# A use case is handed Sessions and runs its one transaction in `with sessions.begin() as session:`; the Session
# goes down to the statements here. Named here so that no service module imports SQLAlchemy.
Sessions: TypeAlias = sessionmaker[Session]

__all__ = ["Session", "Sessions"]
