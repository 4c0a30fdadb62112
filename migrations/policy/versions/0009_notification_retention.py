"""Notification retention: each tenant's head row says through which sequence its notifications were deleted

Revision ID: policy_0009
Revises: policy_0008
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0009"
down_revision = "policy_0008"
branch_labels = None
depends_on = None

SCHEMA = "policy"


def _altered_schema() -> str | None:
    return SCHEMA if op.get_bind().dialect.name == "postgresql" else None  # SQLite has no schemas


def upgrade() -> None:
    # 0: nothing deleted yet, which is what every tenant's notifications were until now.
    op.add_column(
        "notification_heads",
        sa.Column("purged_through", sa.BigInteger, nullable=False, server_default="0"),
        schema=_altered_schema(),
    )


def downgrade() -> None:
    with op.batch_alter_table("notification_heads", schema=_altered_schema()) as batch:  # SQLite: a copy
        batch.drop_column("purged_through")
