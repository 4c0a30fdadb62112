"""SQLAlchemy Core tables of the `policy` schema."""

from sqlalchemy import MetaData

from shared.credentials import credentials_table

SCHEMA = "policy"
metadata = MetaData(schema=SCHEMA)

credentials = credentials_table(metadata)
