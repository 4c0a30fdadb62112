"""meter_days_running covers a cuboid's running sums, so QueryUsage reads a rolled-up day of SUM or COUNT from the
index alone

Revision ID: usage_0017
Revises: usage_0016
"""

from alembic import op

revision = "usage_0017"
down_revision = "usage_0016"
branch_labels = None
depends_on = None

SCHEMA = "usage"


def upgrade() -> None:
    # A meter_days row is some 2 KB (ten arrays of up to 24 hours), and a question reads each of its days' rows
    # for two numbers: the rows of one cuboid lie on as many table pages as rows. Their index entries lie together,
    # in (tenant, metric, cuboid, day) order. SQLite has no INCLUDE, and its reads add the hours up from JSON.
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "meter_days_running",
            "meter_days",
            ["tenant_id", "metric", "cuboid", "day_us", "dimensions"],
            schema=SCHEMA,
            postgresql_include=["running_quantities", "running_counts"],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("meter_days_running", table_name="meter_days", schema=SCHEMA)
