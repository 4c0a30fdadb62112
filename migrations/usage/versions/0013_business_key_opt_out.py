"""A metric may turn the business key (correlation_id, metric, occurred_at) off; each event keeps the rule it was
stored under, and the key's unique index covers only the events stored with it on

Revision ID: usage_0013
Revises: usage_0012
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_0013"
down_revision = "usage_0012"
branch_labels = None
depends_on = None

SCHEMA = "usage"
_KEY = ["tenant_id", "correlation_id", "metric", "occurred_at_us"]


def _flag() -> sa.Column:
    # NOT NULL with a constant default: on PostgreSQL a change of the catalog only, no rewrite of the table.
    # The previous release names the columns it inserts, so its events take the default (the key on).
    return sa.Column("business_key", sa.Boolean(create_constraint=False), nullable=False, server_default=sa.true())


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None  # SQLite has no schemas
    op.add_column("metrics", _flag(), schema=schema)
    op.add_column("events", _flag(), schema=schema)
    if postgres:
        # Built beside the old constraint, then swapped, so ingest is never without the key.
        op.create_index(
            "events_correlation_next",
            "events",
            _KEY,
            unique=True,
            schema=SCHEMA,
            postgresql_where=sa.text("business_key"),
        )
        op.drop_constraint("events_correlation", "events", schema=SCHEMA, type_="unique")
        op.execute('ALTER INDEX "usage".events_correlation_next RENAME TO events_correlation')
    else:
        with op.batch_alter_table("events", recreate="always") as batch:  # SQLite: a copy of the table
            batch.drop_constraint("events_correlation", type_="unique")
        op.create_index("events_correlation", "events", _KEY, unique=True, sqlite_where=sa.text("business_key"))


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None
    events = sa.table("events", *[sa.column(name) for name in _KEY], sa.column("business_key"), schema=schema)
    shared = (
        op.get_bind()
        .execute(
            sa.select(sa.func.count()).select_from(
                sa.select(*[events.c[name] for name in _KEY])
                .where(events.c.correlation_id.is_not(None))
                .group_by(*[events.c[name] for name in _KEY])
                .having(sa.func.count() > 1)
                .subquery()
            )
        )
        .scalar_one()
    )
    if shared:
        raise RuntimeError(
            f"cannot downgrade below usage_0013: {shared} business keys are shared by several events "
            "stored while their metric had the key off, and the old unique constraint would refuse them"
        )
    op.drop_index("events_correlation", table_name="events", schema=schema)
    with op.batch_alter_table("events", schema=schema) as batch:  # SQLite: a copy of the table
        batch.create_unique_constraint("events_correlation", _KEY)
        batch.drop_column("business_key")
    with op.batch_alter_table("metrics", schema=schema) as batch:
        batch.drop_column("business_key")
