"""entitlements: billing anchor and zone on subscriptions, grants, reservations, their locks, the usage outbox

Revision ID: policy_0003
Revises: policy_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0003"
down_revision = "policy_0002"
branch_labels = None
depends_on = None

SCHEMA = "policy"


def _altered_schema() -> str | None:
    return SCHEMA if op.get_bind().dialect.name == "postgresql" else None  # SQLite has no schemas


def upgrade() -> None:
    # Both nullable or defaulted: no rewrite, and existing subscriptions keep calendar periods in UTC.
    schema = _altered_schema()
    op.add_column("subscriptions", sa.Column("billing_anchor_us", sa.BigInteger, nullable=True), schema=schema)
    op.add_column(
        "subscriptions", sa.Column("time_zone", sa.String(64), nullable=False, server_default=""), schema=schema
    )
    op.create_table(
        "grants",
        sa.Column("tenant_id", sa.String(128), sa.ForeignKey("policy.tenant_policies.tenant_id"), primary_key=True),
        sa.Column("grant_id", sa.String(40), primary_key=True),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger, sa.CheckConstraint("amount > 0"), nullable=False),
        sa.Column("effective_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("create_us", sa.BigInteger, nullable=False),
        sa.Column("void_us", sa.BigInteger, nullable=True),
        schema=SCHEMA,
    )
    op.create_table(
        "entitlement_locks",
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        sa.Column("metric", sa.String(128), primary_key=True),
        schema=SCHEMA,
    )
    op.create_table(
        "reservations",
        sa.Column("reservation_id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("state", sa.Integer, sa.CheckConstraint("state BETWEEN 1 AND 4"), nullable=False),
        sa.Column("create_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("committed_amount", sa.BigInteger, nullable=False),
        sa.Column("finish_us", sa.BigInteger, nullable=True),
        sa.Column("recorded_us", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="reservations_tenant_key"),
        schema=SCHEMA,
    )
    op.create_index("reservations_open_idx", "reservations", ["tenant_id", "metric", "state"], schema=SCHEMA)
    op.create_table(
        "usage_outbox",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("occurred_us", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.String(500), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("usage_outbox_tenant_metric_idx", "usage_outbox", ["tenant_id", "metric"], schema=SCHEMA)
    op.create_index("usage_outbox_next_idx", "usage_outbox", ["next_attempt_us"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("usage_outbox", schema=SCHEMA)
    op.drop_table("reservations", schema=SCHEMA)
    op.drop_table("entitlement_locks", schema=SCHEMA)
    op.drop_table("grants", schema=SCHEMA)
    # SQLite drops columns in place (3.35+): a copy of the table would lose its unnamed CHECK constraints.
    with op.batch_alter_table("subscriptions", schema=_altered_schema(), recreate="never") as batch:
        batch.drop_column("time_zone")
        batch.drop_column("billing_anchor_us")
