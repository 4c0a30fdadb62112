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
# The event's term of its buckets' source_hash (repository/rollups.py). Added as a generated column,
# which fills the existing rows in one rewrite of the table (an UPDATE would write every row twice),
# then made a plain column that a trigger fills on insert: the previous release's ingest inserts
# `SELECT *` from a copy of the table's columns, which a generated column would refuse. Nullable, as
# those copies (LIKE, also this release's) take its constraints, and their rows have no digest yet.
_DIGEST = "hashtextextended(event_id || ':' || content_hash, 0)"
_ADD_DIGEST = (
    f'ALTER TABLE "usage".events ADD COLUMN digest bigint GENERATED ALWAYS AS ({_DIGEST}) STORED',
    'ALTER TABLE "usage".events ALTER COLUMN digest DROP EXPRESSION',
    f"""CREATE FUNCTION "usage".event_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.digest := {_DIGEST.replace("event_id", "NEW.event_id").replace("content_hash", "NEW.content_hash")};
    RETURN NEW;
END $$""",
    'CREATE TRIGGER event_digest BEFORE INSERT ON "usage".events FOR EACH ROW EXECUTE FUNCTION "usage".event_digest()',
)


def upgrade() -> None:
    # A rollup sums each day's hours from events_by_metric_time alone (index only; see
    # repository/rollup_pass.py). SQLite computes digests in Python and keeps its events as they are.
    if op.get_bind().dialect.name == "postgresql":
        for statement in _ADD_DIGEST:
            op.execute(statement)
        _rebuild(include=["quantity", "digest"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(include=["quantity"])
        op.execute('DROP TRIGGER event_digest ON "usage".events')
        op.execute('DROP FUNCTION "usage".event_digest()')
        op.drop_column("events", "digest", schema=SCHEMA)


def _rebuild(include: list[str]) -> None:
    """Build the new index beside the old one, then swap names, so reads always have one."""
    op.create_index(
        "events_by_metric_time_next",
        "events",
        ["tenant_id", "metric", "occurred_at_us"],
        schema=SCHEMA,
        postgresql_include=include,
    )
    op.drop_index("events_by_metric_time", table_name="events", schema=SCHEMA)
    op.execute('ALTER INDEX "usage".events_by_metric_time_next RENAME TO events_by_metric_time')
