"""Alembic environment of the policy schema."""

from tollgate.shared.migrate import run_env

run_env(schema="policy", url_variable="POLICY_DATABASE_URL")
