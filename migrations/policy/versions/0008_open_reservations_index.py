"""Indexes a fresh table's planner cannot misuse: open reservations only, and no outbox index that is a prefix of
another

Revision ID: policy_0008
Revises: policy_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0008"
down_revision = "policy_0007"
branch_labels = None
depends_on = None

SCHEMA = "policy"
OPEN = sa.text("state = 1")


def upgrade() -> None:
    # Before statistics exist, PostgreSQL took reservations_open_idx (tenant, metric, state) for the idempotency
    # key's lookup and usage_outbox_tenant_metric_idx for "delivered after N", reading every row of the tenant
    # (and metric) instead of one. An index of open reservations only cannot serve the key's lookup, and stays as
    # small as what is open; usage_outbox_pending_idx (tenant, metric, delivered_seq) serves all the other did.
    op.drop_index("reservations_open_idx", table_name="reservations", schema=SCHEMA)
    op.create_index(
        "reservations_open_idx",
        "reservations",
        ["tenant_id", "metric"],
        schema=SCHEMA,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.drop_index("usage_outbox_tenant_metric_idx", table_name="usage_outbox", schema=SCHEMA)


def downgrade() -> None:
    op.create_index("usage_outbox_tenant_metric_idx", "usage_outbox", ["tenant_id", "metric"], schema=SCHEMA)
    op.drop_index("reservations_open_idx", table_name="reservations", schema=SCHEMA)
    op.create_index("reservations_open_idx", "reservations", ["tenant_id", "metric", "state"], schema=SCHEMA)
