"""usage.meter_versions: a version of each (tenant, metric, UTC day), written anew by every rollup that stores the
day, so that Usage can keep what it has read of past days in memory and know it current by one look
(repository/meter_memory.py). The days with meter rows now get a version each; a day without one is read into
memory at none, and its next rollup gives it one.

Revision ID: usage_0020
Revises: usage_0019
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0020"
down_revision = "usage_0019"
branch_labels = None
depends_on = None

SCHEMA = "usage"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "meter_versions",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("day_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "metric", "day_us", name="meter_versions_pkey"),
        schema=SCHEMA if postgres else None,
    )
    prefix = '"usage".' if postgres else ""
    # Random, non-negative: a version is only ever compared for equality, and must not repeat a value a process may
    # hold from another database.
    random = "(random() * 4.6e18)::bigint" if postgres else "abs(random() / 2)"
    op.execute(
        f"""INSERT INTO {prefix}meter_versions (tenant_id, metric, day_us, version)
        SELECT tenant_id, metric, day_us, {random} FROM (SELECT DISTINCT tenant_id, metric, day_us FROM
        {prefix}meter_days) AS d"""
    )


def downgrade() -> None:
    op.drop_table("meter_versions", schema=SCHEMA if op.get_bind().dialect.name == "postgresql" else None)
