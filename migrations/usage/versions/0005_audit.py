"""audit chain of the usage admin writes: audit_records and its one-row head

Revision ID: usage_0005
Revises: usage_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0005"
down_revision = "usage_0004"
branch_labels = None
depends_on = None

SCHEMA = "usage"
ZERO_HASH = "0" * 64  # the previous hash of a chain's first link


def upgrade() -> None:
    # The chain's shape as this revision shipped it (policy_0002 spells out the same tables).
    op.create_table(
        "audit_records",
        # sequence is the primary key, so two records can never claim the same place: no fork.
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("change", sa.Text, nullable=False),
        sa.Column("change_digest", sa.String(64), nullable=False),
        sa.Column("previous_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("audit_records_tenant_idx", "audit_records", ["tenant_id", "sequence"], schema=SCHEMA)
    # The chain head: one row, locked FOR UPDATE by every append so concurrent writers queue.
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        schema=SCHEMA,
    )
    op.bulk_insert(head, [{"id": 1, "sequence": 0, "hash": ZERO_HASH}])


def downgrade() -> None:
    op.drop_table("audit_records", schema=SCHEMA)
    op.drop_table("audit_head", schema=SCHEMA)
