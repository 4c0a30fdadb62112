"""aggregates, dirty_buckets and rollup_runs: rollup buckets, their work queue and the last run

Revision ID: usage_0003
Revises: usage_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0003"
down_revision = "usage_0002"
branch_labels = None
depends_on = None

SCHEMA = "usage"


def _bucket_columns():
    return [
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("period", sa.SmallInteger, nullable=False),
        sa.Column("period_start_us", sa.BigInteger, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "aggregates",
        *_bucket_columns(),
        sa.Column("total_quantity", sa.BigInteger, nullable=False),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("source_hash", sa.String(64), nullable=False),
        sa.Column("computed_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "metric", "period", "period_start_us", name="aggregates_pkey"),
        sa.CheckConstraint("period BETWEEN 1 AND 4", name="aggregates_period_known"),
        schema=SCHEMA,
    )
    op.create_table(
        "dirty_buckets",
        *_bucket_columns(),
        sa.Column("marked_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "metric", "period", "period_start_us", name="dirty_buckets_pkey"),
        schema=SCHEMA,
    )
    op.create_table(
        "rollup_runs",
        sa.Column("tenant_id", sa.String(128), nullable=False),  # "" for runs over every tenant
        sa.Column("last_run_us", sa.BigInteger, nullable=False),
        sa.Column("last_run_buckets", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="rollup_runs_pkey"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("rollup_runs", schema=SCHEMA)
    op.drop_table("dirty_buckets", schema=SCHEMA)
    op.drop_table("aggregates", schema=SCHEMA)
