"""job_leases: one instance at a time runs each scheduled job

Revision ID: usage_0008
Revises: usage_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0008"
down_revision = "usage_0007"
branch_labels = None
depends_on = None

SCHEMA = "usage"


def upgrade() -> None:
    # Not tenant data: one row per job name, so it keys on the name.
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="job_leases_pkey"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("job_leases", schema=SCHEMA)
