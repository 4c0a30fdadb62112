"""usage_outbox keeps delivered rows, numbered in delivery order, so Reserve can ask Usage outside its lock

Revision ID: policy_0004
Revises: policy_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0004"
down_revision = "policy_0003"
branch_labels = None
depends_on = None

SCHEMA = "policy"


def _altered_schema() -> str | None:
    return SCHEMA if op.get_bind().dialect.name == "postgresql" else None  # SQLite has no schemas


def upgrade() -> None:
    schema = _altered_schema()
    op.add_column("usage_outbox", sa.Column("delivered_seq", sa.BigInteger, nullable=True), schema=schema)
    op.add_column("usage_outbox", sa.Column("delivered_us", sa.BigInteger, nullable=True), schema=schema)
    op.create_index("usage_outbox_delivered_idx", "usage_outbox", ["delivered_seq"], schema=SCHEMA)
    # What Reserve counts: a metric's rows not delivered, or delivered after a number; delivered rows stay an hour.
    op.create_index("usage_outbox_pending_idx", "usage_outbox", ["tenant_id", "metric", "delivered_seq"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("usage_outbox_pending_idx", table_name="usage_outbox", schema=SCHEMA)
    op.drop_index("usage_outbox_delivered_idx", table_name="usage_outbox", schema=SCHEMA)
    # Delivered rows mean nothing to the older schema, which deleted them on delivery.
    outbox = sa.table("usage_outbox", sa.column("delivered_seq"), schema=_altered_schema())
    op.execute(outbox.delete().where(outbox.c.delivered_seq.is_not(None)))
    with op.batch_alter_table("usage_outbox", schema=_altered_schema()) as batch:  # SQLite: a copy of the table
        batch.drop_column("delivered_us")
        batch.drop_column("delivered_seq")
