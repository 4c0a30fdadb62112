"""Meters: a metric has an aggregation (SUM unless told), what UNIQUE_COUNT counts, and declared dimensions; an event
carries its dimensions' values

Revision ID: usage_0014
Revises: usage_0013
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0014"
down_revision = "usage_0013"
branch_labels = None
depends_on = None

SCHEMA = "usage"


def _metric_columns() -> list[sa.Column]:
    # NOT NULL with constant defaults: on PostgreSQL a change of the catalog only, no rewrite; every metric of the
    # default catalog (and any created before) keeps its meaning, a SUM without dimensions. The previous release
    # names the columns it writes, so its upserts take the defaults too.
    return [
        sa.Column("aggregation", sa.String(16), nullable=False, server_default="SUM"),
        sa.Column("unique_of", sa.String(32), nullable=False, server_default=""),
        # The declared names as a compact JSON list, in the order declared.
        sa.Column("dimensions", sa.Text(), nullable=False, server_default="[]"),
    ]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None  # SQLite has no schemas
    for column in _metric_columns():
        op.add_column("metrics", column, schema=schema)
    # Canonical JSON (sorted keys, no spaces), NULL when the event carries none; nullable without a default, so no
    # rewrite of the table either.
    op.add_column("events", sa.Column("dimensions", sa.Text(), nullable=True), schema=schema)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None
    events = sa.table("events", sa.column("dimensions"), schema=schema)
    carrying = (
        op.get_bind()
        .execute(sa.select(sa.func.count()).select_from(events).where(events.c.dimensions.is_not(None)))
        .scalar_one()
    )
    if carrying:
        raise RuntimeError(
            f"cannot downgrade below usage_0014: {carrying} events carry dimensions, which the older schema cannot "
            "hold (and their metrics' queries would change meaning)"
        )
    with op.batch_alter_table("events", schema=schema) as batch:  # SQLite: a copy of the table
        batch.drop_column("dimensions")
    with op.batch_alter_table("metrics", schema=schema) as batch:
        for name in ("dimensions", "unique_of", "aggregation"):
            batch.drop_column(name)
