"""The outbox loop reads only rows not yet delivered (delivered rows stay an hour, for Reserve)

Revision ID: policy_0006
Revises: policy_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0006"
down_revision = "policy_0005"
branch_labels = None
depends_on = None

SCHEMA = "policy"
UNDELIVERED = sa.text("delivered_seq IS NULL")


def upgrade() -> None:
    op.drop_index("usage_outbox_next_idx", table_name="usage_outbox", schema=SCHEMA)
    op.create_index(
        "usage_outbox_due_idx",
        "usage_outbox",
        ["next_attempt_us"],
        schema=SCHEMA,
        postgresql_where=UNDELIVERED,
        sqlite_where=UNDELIVERED,
    )


def downgrade() -> None:
    op.drop_index("usage_outbox_due_idx", table_name="usage_outbox", schema=SCHEMA)
    op.create_index("usage_outbox_next_idx", "usage_outbox", ["next_attempt_us"], schema=SCHEMA)
