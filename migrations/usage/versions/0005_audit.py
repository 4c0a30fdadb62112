"""audit chain of the usage admin writes: audit_records and its one-row head

Revision ID: usage_0005
Revises: usage_0004
"""

import sqlalchemy as sa
from alembic import op

from shared.audit import ZERO_HASH
from shared.audit_chain import audit_tables

revision = "usage_0005"
down_revision = "usage_0004"
branch_labels = None
depends_on = None

SCHEMA = "usage"


def upgrade() -> None:
    records, head = audit_tables(sa.MetaData(schema=SCHEMA))
    bind = op.get_bind()
    records.create(bind)  # with its (tenant_id, sequence) index
    head.create(bind)
    op.bulk_insert(head, [{"id": 1, "sequence": 0, "hash": ZERO_HASH}])


def downgrade() -> None:
    op.drop_table("audit_records", schema=SCHEMA)
    op.drop_table("audit_head", schema=SCHEMA)
