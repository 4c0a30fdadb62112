"""SQLAlchemy Core tables of the `usage` schema."""

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, MetaData, PrimaryKeyConstraint, SmallInteger, \
    String, Table, Text, UniqueConstraint

from shared.audit_chain import audit_tables
from shared.credentials import credentials_table

SCHEMA = "usage"
metadata = MetaData(schema=SCHEMA)

credentials = credentials_table(metadata)

# One row per accepted event. Instants are epoch microseconds (BIGINT): exact, cheap to adapt,
# the same on both dialects. Empty correlation_id / idempotency_key are NULL so they never collide.
events = Table(
    "events",
    metadata,
    Column("tenant_id", String(128), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("occurred_at_us", BigInteger, nullable=False),
    Column("actor_id", String(128), nullable=False),
    Column("source_service", String(128), nullable=False),
    Column("correlation_id", String(128), nullable=True),
    Column("idempotency_key", String(128), nullable=True),
    Column("metadata", Text, nullable=True),
    Column("classification", String(16), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("received_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "event_id", name="events_pkey"),
    UniqueConstraint("tenant_id", "idempotency_key", name="events_idempotency_key"),
    UniqueConstraint("tenant_id", "correlation_id", "metric", "occurred_at_us", name="events_correlation"),
    CheckConstraint("quantity > 0", name="events_quantity_positive"),
    Index("events_by_metric_time", "tenant_id", "metric", "occurred_at_us", postgresql_include=["quantity"]),
    Index("events_by_time", "tenant_id", "occurred_at_us"),
    Index("events_by_actor", "tenant_id", "actor_id", "occurred_at_us", postgresql_include=["metric", "quantity"]),
)

# The metric catalog; global (not per tenant), seeded with the default catalog by migration usage_0002.
metrics = Table(
    "metrics",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("classification", String(16), nullable=False),
    Column("unit", String(64), nullable=False),
    Column("description", String(1024), nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
)


def _bucket_columns() -> list[Column]:
    return [Column("tenant_id", String(128), nullable=False), Column("metric", String(128), nullable=False),
            Column("period", SmallInteger, nullable=False), Column("period_start_us", BigInteger, nullable=False)]


# One row per rolled-up bucket (period as the proto Period: 1 hour, 2 day, 3 ISO week, 4 month).
aggregates = Table(
    "aggregates",
    metadata,
    *_bucket_columns(),
    Column("total_quantity", BigInteger, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("source_hash", String(64), nullable=False),
    Column("computed_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "metric", "period", "period_start_us", name="aggregates_pkey"),
    CheckConstraint("period BETWEEN 1 AND 4", name="aggregates_period_known"),
    Index("aggregates_by_period", "tenant_id", "period", "period_start_us"),
)

# The rollup work queue: buckets whose events changed since they were last computed.
dirty_buckets = Table(
    "dirty_buckets",
    metadata,
    *_bucket_columns(),
    Column("marked_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "metric", "period", "period_start_us", name="dirty_buckets_pkey"),
)

# The last rollup run per scope: a tenant id, or "" for runs over every tenant.
rollup_runs = Table(
    "rollup_runs",
    metadata,
    Column("tenant_id", String(128), nullable=False),
    Column("last_run_us", BigInteger, nullable=False),
    Column("last_run_buckets", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", name="rollup_runs_pkey"),
)

# Which instance runs a scheduled job (rollup, retention) now: one at a time across replicas.
job_leases = Table(
    "job_leases",
    metadata,
    Column("name", String(64), nullable=False),
    Column("holder", String(128), nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("name", name="job_leases_pkey"),
)

# Per tenant, where the raw history starts after a purge (see docs/usage.md, "Purge").
purge_horizons = Table(
    "purge_horizons",
    metadata,
    Column("tenant_id", String(128), nullable=False),
    Column("purged_before_us", BigInteger, nullable=False),
    Column("purged_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", name="purge_horizons_pkey"),
)

# The audit chain of Usage's admin writes (UpsertMetric, PurgeEvents; shared/audit_chain.py). One chain
# for the service, keyed by sequence; a tenant's records are found through (tenant_id, sequence).
audit_records, audit_head = audit_tables(metadata)
