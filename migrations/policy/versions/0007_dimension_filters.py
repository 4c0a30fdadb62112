"""Dimension filters on quotas: reservations and committed usage carry dimension values, and a quota's notifications
are keyed by its filters too

Revision ID: policy_0007
Revises: policy_0006
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0007"
down_revision = "policy_0006"
branch_labels = None
depends_on = None

SCHEMA = "policy"
ONCE = ["tenant_id", "metric", "period", "scope", "user_id", "period_start_us", "allowed", "percent"]


def _altered_schema() -> str | None:
    return SCHEMA if op.get_bind().dialect.name == "postgresql" else None  # SQLite has no schemas


def upgrade() -> None:
    # Quotas keep their filters inside the plans' JSON, which older rows simply lack (none). Existing rows carry no
    # dimension values and belong to no filter: ''.
    schema = _altered_schema()
    for table in ("reservations", "usage_outbox"):
        op.add_column(table, sa.Column("dimensions", sa.Text, nullable=False, server_default=""), schema=schema)
    with op.batch_alter_table("entitlement_notifications", schema=schema) as batch:  # SQLite: a copy of the table
        batch.add_column(sa.Column("filters", sa.Text, nullable=False, server_default=""))
        batch.drop_constraint("entitlement_notifications_once_key", type_="unique")
        batch.create_unique_constraint("entitlement_notifications_once_key", [*ONCE, "filters"])


def downgrade() -> None:
    schema = _altered_schema()
    notifications = sa.table("entitlement_notifications", sa.column("filters"), schema=schema)
    op.execute(notifications.delete().where(notifications.c.filters != ""))
    with op.batch_alter_table("entitlement_notifications", schema=schema) as batch:
        batch.drop_constraint("entitlement_notifications_once_key", type_="unique")
        batch.create_unique_constraint("entitlement_notifications_once_key", ONCE)
        batch.drop_column("filters")
    with op.batch_alter_table("usage_outbox", schema=schema) as batch:
        batch.drop_column("dimensions")
    # SQLite's copy of the table would leave out the unnamed CHECK on state: it is given again.
    state = (sa.CheckConstraint("state BETWEEN 1 AND 4"),)
    with op.batch_alter_table("reservations", schema=schema, table_args=state) as batch:
        batch.drop_column("dimensions")
