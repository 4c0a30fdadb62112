"""Each event carries its digest term; events_by_metric_time covers it, so a rollup reads only that index

Revision ID: usage_0010
Revises: usage_0009
"""

from alembic import op

revision = "usage_0010"
down_revision = "usage_0009"
branch_labels = None
depends_on = None

SCHEMA = "usage"
# The event's term of its buckets' source_hash (repository/rollups.py), computed by PostgreSQL on every
# insert: no writer can get it wrong or leave it out. Adding it rewrites the table once.
_ADD_DIGEST = """ALTER TABLE "usage".events ADD COLUMN digest bigint
    GENERATED ALWAYS AS (hashtextextended(event_id || ':' || content_hash, 0)) STORED"""


def upgrade() -> None:
    # A rollup sums each (series, hour) from events_by_metric_time in its order, reading no table page
    # (index-only; see repository/rollup_pass.py). SQLite computes digests in Python and keeps its
    # events as they are.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_ADD_DIGEST)
        _rebuild(include=["quantity", "digest"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(include=["quantity"])
        op.drop_column("events", "digest", schema=SCHEMA)


def _rebuild(include: list[str]) -> None:
    """Build the new index beside the old one, then swap names, so reads always have one."""
    op.create_index("events_by_metric_time_next", "events", ["tenant_id", "metric", "occurred_at_us"], schema=SCHEMA,
                    postgresql_include=include)
    op.drop_index("events_by_metric_time", table_name="events", schema=SCHEMA)
    op.execute('ALTER INDEX "usage".events_by_metric_time_next RENAME TO events_by_metric_time')
