"""aggregates_by_period covers each row's metric and totals, so GetUsage sums whole days from the index alone

Revision ID: usage_0011
Revises: usage_0010
"""

from alembic import op

revision = "usage_0011"
down_revision = "usage_0010"
branch_labels = None
depends_on = None

SCHEMA = "usage"


def upgrade() -> None:
    # A day row holds its hours too (some 700 bytes): 30 days of five metrics were 150 table pages per
    # GetUsage, and are now the 5 index pages of their entries. SQLite has no INCLUDE.
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(include=["metric", "total_quantity", "event_count"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(include=[])


def _rebuild(include: list[str]) -> None:
    """Build the new index beside the old one, then swap names, so reads always have one."""
    op.create_index(
        "aggregates_by_period_next",
        "aggregates",
        ["tenant_id", "period", "period_start_us"],
        schema=SCHEMA,
        postgresql_include=include,
    )
    op.drop_index("aggregates_by_period", table_name="aggregates", schema=SCHEMA)
    op.execute('ALTER INDEX "usage".aggregates_by_period_next RENAME TO aggregates_by_period')
