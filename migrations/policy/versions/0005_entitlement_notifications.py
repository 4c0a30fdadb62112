"""entitlement_notifications and their per-tenant sequence heads (WatchEntitlements)

Revision ID: policy_0005
Revises: policy_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0005"
down_revision = "policy_0004"
branch_labels = None
depends_on = None

SCHEMA = "policy"


def upgrade() -> None:
    # New tables only: quotas gain notify_at inside the plans' JSON, which older rows simply lack (none).
    op.create_table(
        "entitlement_notifications",
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        sa.Column("sequence", sa.BigInteger, primary_key=True),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("period", sa.Integer, nullable=False),
        sa.Column("scope", sa.Integer, nullable=False),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("percent", sa.Integer, nullable=False),
        sa.Column("threshold", sa.BigInteger, nullable=False),
        sa.Column("allowed", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("period_start_us", sa.BigInteger, nullable=False),
        sa.Column("period_end_us", sa.BigInteger, nullable=False),
        sa.Column("observed_by", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("create_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint(
            "tenant_id",
            "metric",
            "period",
            "scope",
            "user_id",
            "period_start_us",
            "allowed",
            "percent",
            name="entitlement_notifications_once_key",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "notification_heads",
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("notification_heads", schema=SCHEMA)
    op.drop_table("entitlement_notifications", schema=SCHEMA)
