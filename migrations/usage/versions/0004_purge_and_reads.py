"""purge_horizons, indexes for range reads of aggregates and per-actor reads, dirty marks for events rolled up by nobody

Revision ID: usage_0004
Revises: usage_0003
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision = "usage_0004"
down_revision = "usage_0003"
branch_labels = None
depends_on = None

SCHEMA = "usage"
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US
# 1970-01-01 was a Thursday: ISO weeks (Monday 00:00 UTC) are offset by three days from the epoch.
MONDAY_OFFSET_US = 3 * DAY_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def upgrade() -> None:
    op.create_table(
        "purge_horizons",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        # Raw events before this instant may be gone; buckets starting before it are final.
        sa.Column("purged_before_us", sa.BigInteger, nullable=False),
        sa.Column("purged_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="purge_horizons_pkey"),
        schema=SCHEMA,
    )
    # GetUsage reads one tenant's hour and day buckets of every metric over a range.
    op.create_index("aggregates_by_period", "aggregates", ["tenant_id", "period", "period_start_us"], schema=SCHEMA)
    # Per-actor totals are summed from raw events (aggregates have no actor): one actor's rows only,
    # and on PostgreSQL without visiting the table (index-only scan).
    op.create_index(
        "events_by_actor",
        "events",
        ["tenant_id", "actor_id", "occurred_at_us"],
        schema=SCHEMA,
        postgresql_include=["metric", "quantity"],
    )
    if op.get_bind().dialect.name == "postgresql":
        # A work queue: every rollup deletes what ingest inserted. Vacuum it after a few thousand
        # dead marks, not after 20 % of the table, so reads probing it never wade through a backlog.
        op.execute(
            'ALTER TABLE "usage".dirty_buckets SET (autovacuum_vacuum_scale_factor = 0, '
            "autovacuum_vacuum_threshold = 5000, autovacuum_analyze_scale_factor = 0.05)"
        )
    _mark_unrolled_events_dirty()


def _mark_unrolled_events_dirty() -> None:
    """Reads trust aggregates from here on: events stored before rollups existed must be rolled up first."""
    bind = op.get_bind()
    schema = None if bind.dialect.name == "sqlite" else SCHEMA  # SQLite has no schemas
    events = sa.table("events", sa.column("tenant_id"), sa.column("metric"), sa.column("occurred_at_us"), schema=schema)
    aggregates = sa.table(
        "aggregates",
        sa.column("tenant_id"),
        sa.column("metric"),
        sa.column("period"),
        sa.column("period_start_us"),
        schema=schema,
    )
    dirty = sa.table(
        "dirty_buckets",
        sa.column("tenant_id"),
        sa.column("metric"),
        sa.column("period"),
        sa.column("period_start_us"),
        sa.column("marked_at_us"),
        schema=schema,
    )
    hour = events.c.occurred_at_us - events.c.occurred_at_us % HOUR_US
    covered = sa.exists().where(
        aggregates.c.tenant_id == events.c.tenant_id,
        aggregates.c.metric == events.c.metric,
        aggregates.c.period == 1,
        aggregates.c.period_start_us == hour,
    )
    hours = bind.execute(sa.select(events.c.tenant_id, events.c.metric, hour).distinct().where(~covered)).all()
    marks = {(tenant, metric, period, start) for tenant, metric, at in hours for period, start in _buckets_of(at)}
    insert = (postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert)(dirty)
    rows = [dict(tenant_id=t, metric=m, period=p, period_start_us=s, marked_at_us=0) for t, m, p, s in sorted(marks)]
    for chunk in range(0, len(rows), 1000):
        bind.execute(insert.on_conflict_do_nothing(), rows[chunk : chunk + 1000])


def _buckets_of(micros: int) -> list[tuple[int, int]]:
    """(period, start) of the hour (1), day (2), ISO week (3) and month (4) holding the instant.

    The bucket math as this revision shipped it, copied here so that history does not move when the
    live code does.
    """
    moment = EPOCH + timedelta(microseconds=micros)
    month_start = (datetime(moment.year, moment.month, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    return [
        (1, micros - micros % HOUR_US),
        (2, micros - micros % DAY_US),
        (3, micros - (micros + MONDAY_OFFSET_US) % WEEK_US),
        (4, month_start),
    ]


def downgrade() -> None:
    op.drop_index("events_by_actor", "events", schema=SCHEMA)
    op.drop_index("aggregates_by_period", "aggregates", schema=SCHEMA)
    op.drop_table("purge_horizons", schema=SCHEMA)
