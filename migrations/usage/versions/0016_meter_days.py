"""Rollups that carry dimensions: usage.meter_days holds each rolled-up day of a meter by cuboid and dimension values,
its hours with what every aggregation needs to combine exactly; usage.meter_work hands a pass's rows to its applies

Revision ID: usage_0016
Revises: usage_0015
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0016"
down_revision = "usage_0015"
branch_labels = None
depends_on = None

SCHEMA = "usage"
# meter_running_sums(offsets, amounts)[h + 1] is the sum of the amounts of the hours before hour h (h = 0..24), as
# running_hour_sums (usage_0012) but exact beyond a bigint: hours [h1, h2) sum to [h2 + 1] - [h1 + 1].
_FUNCTION = """CREATE FUNCTION "usage".meter_running_sums(offsets smallint[], amounts numeric[]) RETURNS numeric[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    sums numeric[] := array_fill(0::numeric, ARRAY[25]);
BEGIN
    FOR i IN 1 .. coalesce(array_length(offsets, 1), 0) LOOP
        sums[offsets[i] + 2] := amounts[i];
    END LOOP;
    FOR i IN 2 .. 25 LOOP
        sums[i] := sums[i] + sums[i - 1];
    END LOOP;
    RETURN sums;
END $$"""
_HOURS = """hour_offsets smallint[] NOT NULL, hour_quantities numeric[] NOT NULL, hour_counts bigint[] NOT NULL,
    hour_mins bigint[] NOT NULL, hour_maxes bigint[] NOT NULL, hour_latest_at bigint[] NOT NULL,
    hour_latest_ids text[] NOT NULL, hour_latest_quantities bigint[] NOT NULL"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # SQLite: hours as JSON lists, no running sums (its reads add the hours up), no hand-over table (its rollup
        # writes each day in the step that computes it).
        op.create_table(
            "meter_days",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("metric", sa.String(128), nullable=False),
            sa.Column("cuboid", sa.String(128), nullable=False),
            sa.Column("day_us", sa.BigInteger(), nullable=False),
            sa.Column("dimensions", sa.Text(), nullable=False),
            *[
                sa.Column(name, sa.JSON(), nullable=False)
                for name in (
                    "hour_offsets",
                    "hour_quantities",
                    "hour_counts",
                    "hour_mins",
                    "hour_maxes",
                    "hour_latest_at",
                    "hour_latest_ids",
                    "hour_latest_quantities",
                )
            ],
            sa.Column("running_quantities", sa.JSON(), nullable=True),
            sa.Column("running_counts", sa.JSON(), nullable=True),
            sa.Column("computed_at_us", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "metric", "day_us", "cuboid", "dimensions", name="meter_days_pkey"),
        )
        return
    op.execute(_FUNCTION)
    # The latest event of an hour, as one value: a rollup picks it with one ordered aggregate per hour.
    op.execute('CREATE TYPE "usage".meter_latest AS (at bigint, id text, quantity bigint)')
    # A question reads its cuboid's rows of each day, and an apply replaces a day's rows, each as one index range.
    # Dimension values as jsonb: a question extracts a value per row, which jsonb finds without parsing.
    op.execute(f"""CREATE TABLE "usage".meter_days (
        tenant_id varchar(128) NOT NULL, metric varchar(128) NOT NULL, cuboid varchar(128) NOT NULL,
        day_us bigint NOT NULL, dimensions jsonb NOT NULL, {_HOURS},
        running_quantities numeric[], running_counts bigint[], computed_at_us bigint NOT NULL,
        CONSTRAINT meter_days_pkey PRIMARY KEY (tenant_id, metric, day_us, cuboid, dimensions))""")
    # Scratch rows of a pass, as usage.rollup_work (usage_0007): unlogged, keyed by the pass, deleted when it ends.
    op.execute(f"""CREATE UNLOGGED TABLE "usage".meter_work (
        pass_id bigint NOT NULL, created_at_us bigint NOT NULL, tenant_id varchar(128) NOT NULL,
        metric varchar(128) NOT NULL, cuboid varchar(128) NOT NULL, day_us bigint NOT NULL, dimensions jsonb NOT NULL,
        {_HOURS}, running_quantities numeric[], running_counts bigint[])""")
    op.execute('CREATE INDEX meter_work_by_day ON "usage".meter_work (pass_id, tenant_id, metric, day_us)')


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_table("meter_days")
        return
    op.execute('DROP TABLE "usage".meter_work')
    op.execute('DROP TABLE "usage".meter_days')
    op.execute('DROP FUNCTION "usage".meter_running_sums(smallint[], numeric[])')
    op.execute('DROP TYPE "usage".meter_latest')
