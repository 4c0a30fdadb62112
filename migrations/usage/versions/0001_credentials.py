"""credentials: bearer token hashes of the usage service

Revision ID: usage_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "usage"


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("scopes", sa.String(256), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(256), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("credentials", schema=SCHEMA)
