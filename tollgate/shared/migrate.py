"""Alembic helpers: upgrade a service's schema and tell whether it is at head."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from tollgate.shared.db import is_sqlite

ROOT = Path(__file__).resolve().parents[2]
# An installed (non-editable) copy, as in the container image, is told where the migrations live.
MIGRATIONS_DIR = Path(os.environ.get("TOLLGATE_MIGRATIONS_DIR") or ROOT / "migrations")
ALEMBIC_INI = MIGRATIONS_DIR / "alembic.ini"


def alembic_config(service: str, url: str) -> Config:
    """The Alembic config of one service's history, pointed at `url`."""
    config = Config(str(ALEMBIC_INI), ini_section=service)
    config.set_main_option("script_location", str(MIGRATIONS_DIR / service))
    config.attributes["database_url"] = url
    return config


def upgrade(service: str, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, url), revision)


def downgrade(service: str, url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(service, url), revision)


def head_revision(service: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(service, "")).get_current_head()


def current_revision(engine: Engine, schema: str) -> str | None:
    table = "alembic_version" if is_sqlite(engine) else f"{schema}.alembic_version"
    with engine.connect() as connection:
        return connection.execute(text(f"SELECT version_num FROM {table}")).scalar()


def readiness_check(engine: Engine, *, service: str, schema: str):
    """A check for health: the database answers and its schema is at this build's head."""
    head = head_revision(service)

    def ready() -> bool:
        return current_revision(engine, schema) == head

    return ready


def run_env(*, schema: str, url_variable: str) -> None:
    """The body of each history's env.py: migrate one schema, keeping its own version table."""
    from alembic import context

    from tollgate.shared.db import create_engine_for

    config = context.config
    url = (
        config.attributes.get("database_url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get(url_variable)
        or f"sqlite:///var/{schema}.db"
    )
    engine = create_engine_for(url, schema=schema, pool_size=1)
    sqlite = is_sqlite(engine)
    with engine.connect() as connection:
        # Only when missing: a schema the DBA created for the service's own role needs no CREATE
        # right on the database (docs/operations.md, "Database roles").
        if not sqlite and not inspect(connection).has_schema(schema):
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.commit()  # end the inspection's transaction: Alembic must own the next one
        context.configure(
            connection=connection,
            version_table_schema=None if sqlite else schema,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
