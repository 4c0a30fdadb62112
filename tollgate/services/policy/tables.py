"""SQLAlchemy Core tables of the `policy` schema.

Catalog tables (roles, features, plans) are platform-wide; tenant tables key on tenant_id first.
Per-feature caps, metrics, quotas and flags are small documents stored as canonical JSON text.
"""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from tollgate.shared.audit_chain import audit_tables
from tollgate.shared.credentials import credentials_table

SCHEMA = "policy"
metadata = MetaData(schema=SCHEMA)

credentials = credentials_table(metadata)


def _mode(name: str, nullable: bool = False) -> Column:
    return Column(name, Integer, CheckConstraint(f"{name} BETWEEN 1 AND 6"), nullable=nullable)


roles = Table(
    "roles",
    metadata,
    Column("role_id", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    _mode("default_cap"),
    Column("feature_caps", Text, nullable=False),
)

features = Table(
    "features",
    metadata,
    Column("feature_id", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("description", String(2000), nullable=False),
    _mode("max_mode"),
    Column("metrics", Text, nullable=False),
)

plans = Table(
    "plans",
    metadata,
    Column("plan_id", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    _mode("default_cap"),
    _mode("inactive_cap"),
    Column("feature_caps", Text, nullable=False),
    Column("quotas", Text, nullable=False),
)

tenant_policies = Table(
    "tenant_policies",
    metadata,
    Column("tenant_id", String(128), primary_key=True),
    _mode("max_mode"),
    Column("default_role_id", String(64), ForeignKey("policy.roles.role_id"), nullable=False),
    Column("update_us", BigInteger, nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("tenant_id", String(128), ForeignKey("policy.tenant_policies.tenant_id"), primary_key=True),
    Column("plan_id", String(64), ForeignKey("policy.plans.plan_id"), nullable=False),
    Column("status", Integer, CheckConstraint("status BETWEEN 1 AND 4"), nullable=False),
    Column("feature_flags", Text, nullable=False),
    Column("update_us", BigInteger, nullable=False),
    # NULL: calendar periods in UTC (quotas keep their meaning from before anchors existed).
    Column("billing_anchor_us", BigInteger, nullable=True),
    Column("time_zone", String(64), nullable=False, server_default=""),
)

overrides = Table(
    "overrides",
    metadata,
    Column("tenant_id", String(128), ForeignKey("policy.tenant_policies.tenant_id"), primary_key=True),
    Column("override_id", String(40), primary_key=True),
    Column("role_id", String(64), ForeignKey("policy.roles.role_id"), nullable=False),
    Column("feature_id", String(64), ForeignKey("policy.features.feature_id"), nullable=False),
    _mode("cap"),
    Column("reason", String(500), nullable=False),
    Column("update_us", BigInteger, nullable=False),
    UniqueConstraint("tenant_id", "role_id", "feature_id", name="overrides_tenant_role_feature_key"),
)

bindings = Table(
    "bindings",
    metadata,
    Column("tenant_id", String(128), ForeignKey("policy.tenant_policies.tenant_id"), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("role_id", String(64), ForeignKey("policy.roles.role_id"), primary_key=True),
    Column("create_us", BigInteger, nullable=False),
)
Index("bindings_role_idx", bindings.c.role_id)

# One row per tenant ('' = the catalog): the audit sequence of its latest change.
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("tenant_id", String(128), primary_key=True),
    Column("version", BigInteger, nullable=False),
)
Index("policy_versions_version_idx", policy_versions.c.version)

grants = Table(
    "grants",
    metadata,
    Column("tenant_id", String(128), ForeignKey("policy.tenant_policies.tenant_id"), primary_key=True),
    Column("grant_id", String(40), primary_key=True),
    Column("metric", String(128), nullable=False),
    Column("amount", BigInteger, CheckConstraint("amount > 0"), nullable=False),
    Column("effective_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=True),
    Column("priority", Integer, nullable=False),
    Column("reason", String(500), nullable=False),
    Column("create_us", BigInteger, nullable=False),
    Column("void_us", BigInteger, nullable=True),
    Column("user_id", String(128), nullable=False, server_default=""),  # "": the tenant's grant
)

# One row per (tenant, metric) that has had a reservation: Reserve and Commit lock it FOR UPDATE, so the balance
# they decide on cannot change under them, whichever replica runs them.
entitlement_locks = Table(
    "entitlement_locks",
    metadata,
    Column("tenant_id", String(128), primary_key=True),
    Column("metric", String(128), primary_key=True),
)

reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", String(40), primary_key=True),
    Column("tenant_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("state", Integer, CheckConstraint("state BETWEEN 1 AND 4"), nullable=False),
    Column("create_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("committed_amount", BigInteger, nullable=False),
    Column("finish_us", BigInteger, nullable=True),
    Column("recorded_us", BigInteger, nullable=True),
    # The dimension values of the usage held for, as canonical JSON ('' for none: domain/dimensions.py).
    Column("dimensions", Text, nullable=False, server_default=""),
    UniqueConstraint("tenant_id", "idempotency_key", name="reservations_tenant_key"),
)
# Open reservations only (state 1): what held() sums and the sweep expires, never the idempotency key's lookup.
Index(
    "reservations_open_idx",
    reservations.c.tenant_id,
    reservations.c.metric,
    postgresql_where=reservations.c.state == 1,
    sqlite_where=reservations.c.state == 1,
)

# Committed usage on its way to Usage: written in the commit's transaction, numbered once Usage holds the event,
# deleted by the sweep some time later.
usage_outbox = Table(
    "usage_outbox",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("tenant_id", String(128), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("occurred_us", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("last_error", String(500), nullable=False),
    # Set once Usage holds the event: 1, 2, 3… in the order deliveries are recorded (docs/entitlements.md).
    Column("delivered_seq", BigInteger, nullable=True),
    Column("delivered_us", BigInteger, nullable=True),
    Column("dimensions", Text, nullable=False, server_default=""),  # the reservation's
)
# The outbox loop's question: what is due and not delivered yet.
Index(
    "usage_outbox_due_idx",
    usage_outbox.c.next_attempt_us,
    postgresql_where=usage_outbox.c.delivered_seq.is_(None),
    sqlite_where=usage_outbox.c.delivered_seq.is_(None),
)
Index("usage_outbox_delivered_idx", usage_outbox.c.delivered_seq)
Index("usage_outbox_pending_idx", usage_outbox.c.tenant_id, usage_outbox.c.metric, usage_outbox.c.delivered_seq)

# Threshold crossings (docs/entitlements.md, "Notifications"), numbered per tenant in the order their transactions
# commit: the number is taken from the tenant's head row, locked until the crossing's transaction ends, so a reader
# that has seen N has seen everything before N.
entitlement_notifications = Table(
    "entitlement_notifications",
    metadata,
    Column("tenant_id", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("metric", String(128), nullable=False),
    Column("period", Integer, nullable=False),
    Column("scope", Integer, nullable=False),
    Column("kind", Integer, nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("percent", Integer, nullable=False),
    Column("threshold", BigInteger, nullable=False),
    Column("allowed", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("period_start_us", BigInteger, nullable=False),
    Column("period_end_us", BigInteger, nullable=False),
    Column("observed_by", String(32), nullable=False),
    Column("detail", String(500), nullable=False),
    Column("create_us", BigInteger, nullable=False),
    Column("filters", Text, nullable=False, server_default=""),  # the quota's, canonical JSON ('' for none)
    # A threshold is stored once per quota, user, period and allowance.
    UniqueConstraint(
        "tenant_id",
        "metric",
        "period",
        "scope",
        "user_id",
        "period_start_us",
        "allowed",
        "percent",
        "filters",
        name="entitlement_notifications_once_key",
    ),
)

notification_heads = Table(
    "notification_heads",
    metadata,
    Column("tenant_id", String(128), primary_key=True),
    Column("sequence", BigInteger, nullable=False),
    # Notifications numbered up to this were deleted by retention (migration policy_0009); 0: none.
    Column("purged_through", BigInteger, nullable=False, server_default="0"),
)

# The audit chain of policy admin writes (shared/audit_chain.py).
audit_records, audit_head = audit_tables(metadata)
