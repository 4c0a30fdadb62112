"""Alembic environment of the usage schema."""

from tollgate.shared.migrate import run_env

run_env(schema="usage", url_variable="USAGE_DATABASE_URL")
