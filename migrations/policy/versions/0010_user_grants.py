"""Grants for one user: a grant's user_id names the user whose user-scoped quotas it adds to ("": the tenant's)

Revision ID: policy_0010
Revises: policy_0009
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0010"
down_revision = "policy_0009"
branch_labels = None
depends_on = None

SCHEMA = "policy"


def _altered_schema() -> str | None:
    return SCHEMA if op.get_bind().dialect.name == "postgresql" else None  # SQLite has no schemas


def upgrade() -> None:
    # "": the tenant's grant, which is what every grant was until now.
    op.add_column(
        "grants",
        sa.Column("user_id", sa.String(128), nullable=False, server_default=""),
        schema=_altered_schema(),
    )


def downgrade() -> None:
    # SQLite copies the table, and its unnamed CHECK would not be copied unless given again.
    with op.batch_alter_table(
        "grants", schema=_altered_schema(), table_args=(sa.CheckConstraint("amount > 0"),)
    ) as batch:
        batch.drop_column("user_id")
