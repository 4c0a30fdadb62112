"""The distinct dimension combinations each tenant's events of a metric carry, which USAGE_MAX_DIMENSION_COMBINATIONS
bounds; filled from the events stored so far

Revision ID: usage_0015
Revises: usage_0014
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0015"
down_revision = "usage_0014"
branch_labels = None
depends_on = None

SCHEMA = "usage"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None  # SQLite has no schemas
    op.create_table(
        "dimension_combinations",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("dimensions", sa.Text(), nullable=False),
        sa.Column("first_seen_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "metric", "dimensions", name="dimension_combinations_pkey"),
        schema=schema,
    )
    # The combinations events stored before this revision carry count toward the limit like any later one. Events
    # carry dimensions only since usage_0014, so this reads few rows. A combination that the previous release, still
    # running during a rolling upgrade, stores afterwards is counted when this release first accepts it.
    prefix = f'"{SCHEMA}".' if postgres else ""
    op.execute(
        f"INSERT INTO {prefix}dimension_combinations (tenant_id, metric, dimensions, first_seen_at_us) "
        f"SELECT tenant_id, metric, dimensions, min(received_at_us) FROM {prefix}events "
        f"WHERE dimensions IS NOT NULL GROUP BY tenant_id, metric, dimensions"
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("dimension_combinations", schema=SCHEMA if postgres else None)
