"""The meter rows of the days marked now are deleted: QueryUsage now reads a marked day's rows for the hours its mark
does not name, and a mark narrowed before this revision may not name every hour with events the rows lack (the rows
were not stored with the narrowing on PostgreSQL, nor recomputed when a SQLite rollup left some of a day's hours for
its next step). Those days are read from raw events until their next rollup stores their rows again.

Revision ID: usage_0019
Revises: usage_0018
"""

from alembic import op

revision = "usage_0019"
down_revision = "usage_0018"
branch_labels = None
depends_on = None

DAY = 2  # Period.DAY


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    prefix = '"usage".' if postgres else ""
    op.execute(
        f"""DELETE FROM {prefix}meter_days WHERE EXISTS (
            SELECT 1 FROM {prefix}dirty_buckets AS d
            WHERE d.tenant_id = {prefix}meter_days.tenant_id AND d.metric = {prefix}meter_days.metric
              AND d.period = {DAY} AND d.period_start_us = {prefix}meter_days.day_us)"""
    )


def downgrade() -> None:
    """Nothing to restore: the rows deleted are computed again by the days' next rollups."""
