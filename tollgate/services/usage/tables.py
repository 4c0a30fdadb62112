"""SQLAlchemy Core tables of the `usage` schema."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from tollgate.services.usage.domain.buckets import ALL_HOURS
from tollgate.shared.audit_chain import audit_tables
from tollgate.shared.credentials import credentials_table

SCHEMA = "usage"
metadata = MetaData(schema=SCHEMA)

credentials = credentials_table(metadata)

# One row per accepted event. Instants are epoch microseconds (BIGINT): exact, cheap to adapt,
# the same on both dialects. Empty correlation_id / idempotency_key are NULL so they never collide.
# On PostgreSQL the table also has `digest`, the event's term of its buckets' source_hash, which a
# trigger fills on insert (migration usage_0010); it is not mapped here because nothing in Python reads
# or writes it (SQLite computes digests in Python), and rollup_pass.py names it in its SQL.
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
    # Whether the business key held when the event was stored (its metric's catalog entry then).
    Column("business_key", Boolean(create_constraint=False), nullable=False, server_default=true()),
    # The event's dimension values as canonical JSON (sorted keys, no spaces); NULL when it carries none.
    Column("dimensions", Text, nullable=True),
    PrimaryKeyConstraint("tenant_id", "event_id", name="events_pkey"),
    UniqueConstraint("tenant_id", "idempotency_key", name="events_idempotency_key"),
    Index(
        "events_correlation",
        "tenant_id",
        "correlation_id",
        "metric",
        "occurred_at_us",
        unique=True,
        postgresql_where=text("business_key"),
        sqlite_where=text("business_key"),
    ),
    CheckConstraint("quantity > 0", name="events_quantity_positive"),
    Index("events_by_metric_time", "tenant_id", "metric", "occurred_at_us", postgresql_include=["quantity", "digest"]),
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
    # False turns the business key (correlation_id, metric, occurred_at) off for the metric's new events.
    Column("business_key", Boolean(create_constraint=False), nullable=False, server_default=true()),
    # How QueryUsage aggregates the metric (an Aggregation's name), what UNIQUE_COUNT counts, and the declared
    # dimensions as a compact JSON list in the order declared (migration usage_0014).
    Column("aggregation", String(16), nullable=False, server_default="SUM"),
    Column("unique_of", String(32), nullable=False, server_default=""),
    Column("dimensions", Text, nullable=False, server_default="[]"),
)


def _bucket_columns() -> list[Column]:
    return [
        Column("tenant_id", String(128), nullable=False),
        Column("metric", String(128), nullable=False),
        Column("period", SmallInteger, nullable=False),
        Column("period_start_us", BigInteger, nullable=False),
    ]


HOUR_COLUMNS = ("hour_offsets", "hour_quantities", "hour_counts", "hour_digests")  # a day row's hours, aligned


def _hours_column(name: str, item) -> Column:
    return Column(name, ARRAY(item).with_variant(JSON(none_as_null=True), "sqlite"), nullable=True)


# One row per rolled-up day, ISO week and month (period as the proto Period: 2 day, 3 ISO week, 4 month).
# A day row also holds its hours with events, as aligned arrays: hour_offsets[i] (0-23) is the hour of
# the day whose totals are hour_quantities[i] and hour_counts[i], and hour_digests[i] is congruent mod
# 2**64 to the sum of its events' hashes (its residue is the hour's source_hash). Positions follow no
# particular order. Arrays on PostgreSQL, JSON lists on SQLite; NULL on weeks and months. One row per
# day instead of 24 is what lets a rollup keep up with a backlog (docs/usage.md, "Storage").
aggregates = Table(
    "aggregates",
    metadata,
    *_bucket_columns(),
    Column("total_quantity", BigInteger, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("source_hash", String(64), nullable=False),
    Column("computed_at_us", BigInteger, nullable=False),
    _hours_column("hour_offsets", SmallInteger),
    _hours_column("hour_quantities", BigInteger),
    _hours_column("hour_counts", BigInteger),
    _hours_column("hour_digests", Numeric(40, 0)),
    PrimaryKeyConstraint("tenant_id", "metric", "period", "period_start_us", name="aggregates_pkey"),
    CheckConstraint("period BETWEEN 1 AND 4", name="aggregates_period_known"),  # 1 (hour): before usage_0009
    Index(
        "aggregates_by_period",
        "tenant_id",
        "period",
        "period_start_us",
        postgresql_include=["metric", "total_quantity", "event_count"],
    ),
)

# The rollup work queue: buckets whose events changed since they were last computed. A day's mark also
# says which of its hours changed, bit h of dirty_hours for hour h (the others still hold in the day's
# row): a late event costs its hour, not its day. Weeks and months carry all bits.
dirty_buckets = Table(
    "dirty_buckets",
    metadata,
    *_bucket_columns(),
    Column("marked_at_us", BigInteger, nullable=False),
    Column("dirty_hours", Integer, nullable=False, server_default=str(ALL_HOURS)),
    # The hours marked since a pass last narrowed this mark (or since it was made): a pass that read the day before
    # some of them were marked leaves exactly those dirty (postgres/rollup_pass.py, migration usage_0018).
    Column("fresh_hours", Integer, nullable=False, server_default=str(ALL_HOURS)),
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

# The distinct dimension combinations each tenant's events of a metric carry (canonical JSON, as events.dimensions):
# what USAGE_MAX_DIMENSION_COMBINATIONS bounds. Written only when an accepted event brings a new one, so ingest
# pays nothing per event for it (docs/usage.md, "Meters"). Rows are never deleted: a combination once accepted
# stays known, which is what lets each process cache them (migration usage_0015).
dimension_combinations = Table(
    "dimension_combinations",
    metadata,
    Column("tenant_id", String(128), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("dimensions", Text, nullable=False),
    Column("first_seen_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "metric", "dimensions", name="dimension_combinations_pkey"),
)

# Rollups that carry dimensions (docs/usage.md, "Meters"; domain/meter_rollups.py): per tenant, metric, cuboid ('' all
# events, or a dimension's name) and UTC day, one row per dimension values (canonical JSON,
# jsonb on PostgreSQL) with the day's hours that had events, as aligned arrays (JSON lists on SQLite): sum, count,
# min, max and the latest event (instant, id, quantity). PostgreSQL rows also hold running sums of the quantities
# and counts (25 values: [h + 1] sums the hours before h). A row holds for every hour whose bit of its day's dirty
# mark is clear (migration usage_0016).
meter_days = Table(
    "meter_days",
    metadata,
    Column("tenant_id", String(128), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("cuboid", String(128), nullable=False),
    Column("day_us", BigInteger, nullable=False),
    Column("dimensions", Text().with_variant(JSONB(), "postgresql"), nullable=False),
    _hours_column("hour_offsets", SmallInteger),
    _hours_column("hour_quantities", Numeric(40, 0)),
    _hours_column("hour_counts", BigInteger),
    _hours_column("hour_mins", BigInteger),
    _hours_column("hour_maxes", BigInteger),
    _hours_column("hour_latest_at", BigInteger),
    _hours_column("hour_latest_ids", Text),
    _hours_column("hour_latest_quantities", BigInteger),
    _hours_column("running_quantities", Numeric(40, 0)),
    _hours_column("running_counts", BigInteger),
    Column("computed_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "metric", "day_us", "cuboid", "dimensions", name="meter_days_pkey"),
    # PostgreSQL only (usage_0017): a question's SUM or COUNT of rolled-up days, read from the index alone.
    Index(
        "meter_days_running",
        "tenant_id",
        "metric",
        "cuboid",
        "day_us",
        "dimensions",
        postgresql_include=["running_quantities", "running_counts"],
    ).ddl_if(dialect="postgresql"),
)

# A version of each (tenant, metric, UTC day): a new random value written in the transaction that stores the day's
# rollup, the only one that changes its meter_days rows, and the end of the dirty mark by which any new event
# changes it; so that what a process keeps in memory of a day is known current by this row and the day's mark
# (repository/meter_memory.py). Never deleted.
meter_versions = Table(
    "meter_versions",
    metadata,
    Column("tenant_id", String(128), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("day_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "metric", "day_us", name="meter_versions_pkey"),
)

# The audit chain of Usage's admin writes (UpsertMetric, PurgeEvents; shared/audit_chain.py). One chain
# for the service, keyed by sequence; a tenant's records are found through (tenant_id, sequence).
audit_records, audit_head = audit_tables(metadata)
