"""SQLAlchemy Core tables of the `usage` schema."""

from sqlalchemy import MetaData

from shared.credentials import credentials_table

SCHEMA = "usage"
metadata = MetaData(schema=SCHEMA)

credentials = credentials_table(metadata)
