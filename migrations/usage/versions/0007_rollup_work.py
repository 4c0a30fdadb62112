"""usage.rollup_work: a rollup pass handed from its compute transaction to its apply transactions

Revision ID: usage_0007
Revises: usage_0006
"""

from alembic import op

revision = "usage_0007"
down_revision = "usage_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # PostgreSQL only: SQLite rolls up bucket by bucket in one transaction and needs no hand-over.
    # Scratch rows, not tenant data: keyed by the pass, unlogged (nothing to recover after a crash:
    # the marks are still there and the next pass recomputes them), deleted when the pass ends.
    # A temp table would not do: under PgBouncer's transaction pooling the apply transactions may
    # run on another server connection than the pass.
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""CREATE UNLOGGED TABLE "usage".rollup_work (
        pass_id bigint NOT NULL, seq bigint GENERATED ALWAYS AS IDENTITY, created_at_us bigint NOT NULL,
        mark tid NOT NULL, version xid NOT NULL, tenant_id varchar(128) NOT NULL, metric varchar(128) NOT NULL,
        period smallint NOT NULL, period_start_us bigint NOT NULL, total_quantity bigint NOT NULL,
        event_count bigint NOT NULL, source_hash varchar(64) NOT NULL,
        CONSTRAINT rollup_work_pkey PRIMARY KEY (pass_id, seq))""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('DROP TABLE "usage".rollup_work')
