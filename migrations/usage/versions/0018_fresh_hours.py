"""dirty_buckets.fresh_hours: the hours marked since a day's mark was last narrowed, so that a pass whose day gained
events between its snapshot and its apply still stores the day and leaves only those hours dirty

Revision ID: usage_0018
Revises: usage_0017
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0018"
down_revision = "usage_0017"
branch_labels = None
depends_on = None

SCHEMA = "usage"
ALL_HOURS = (1 << 24) - 1


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Every hour for the marks already there: nothing says which of their hours were marked since when.
    op.add_column(
        "dirty_buckets",
        sa.Column("fresh_hours", sa.Integer, nullable=False, server_default=str(ALL_HOURS)),
        schema=SCHEMA if postgres else None,
    )
    if postgres:
        # A pass's day rows carry the version of the stored aggregate the pass read (none: NULL), which its
        # apply checks before it narrows a mark (postgres/rollup_pass.py).
        op.execute('ALTER TABLE "usage".rollup_work ADD COLUMN row_version xid')


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.drop_column("rollup_work", "row_version", schema=SCHEMA)
    with op.batch_alter_table("dirty_buckets", schema=SCHEMA if postgres else None) as batch:  # SQLite: a copy
        batch.drop_column("fresh_hours")
