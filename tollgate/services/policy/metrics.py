"""Business metrics of the Policy service; labels are bounded (modes, outcomes), never tenant or user ids."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RESOLUTIONS = Counter(
    "tollgate_policy_resolutions_total",
    "Features resolved (ResolveMode and ResolveModes), by resulting effective mode.",
    ["mode"],
)
SNAPSHOTS = Counter(
    "tollgate_policy_snapshot_requests_total",
    "Snapshot lookups of the resolve path, by outcome: hit (served from memory) or load (read from the database).",
    ["outcome"],
)
ADMIN_WRITES = Counter(
    "tollgate_policy_admin_writes_total",
    "Admin writes, by action and outcome: changed (audited, version bumped) or unchanged (nothing written).",
    ["action", "outcome"],
)
POLL_FAILURES = Counter(
    "tollgate_policy_version_poll_failures_total",
    "Failed polls of policy_versions (the cache keeps serving what it has until the next poll succeeds).",
)
USAGE_FALLBACKS = Counter(
    "tollgate_policy_usage_fallbacks_total",
    "Answers given without usage because Usage was down, slow or erroring, by what fell back (ranking, quota).",
    ["purpose"],
)
RESERVATIONS = Counter(
    "tollgate_policy_reservations_total",
    "Reserve answers, by outcome: reserved, refused (a hard quota's balance was short) or replayed (idempotency key).",
    ["outcome"],
)
RESERVE_BATCHES = Histogram(
    "tollgate_policy_reserve_batch_calls",
    "Reserve calls decided together in one transaction (calls that waited for the same tenant and metric).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
CHECK_READS = Histogram(
    "tollgate_policy_check_read_calls",
    "CheckEntitlement calls answered by each read of what Policy holds (calls that asked the same at the same time).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
SNAPSHOT_LOADS = Histogram(
    "tollgate_policy_snapshot_load_calls",
    "Calls answered by each load of a tenant's snapshot from the database (calls that missed it at the same time).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
NOTIFICATIONS_PURGED = Counter(
    "tollgate_policy_notifications_purged_total",
    "Threshold notifications deleted by retention (POLICY_NOTIFICATION_RETENTION_DAYS after their period ended).",
)
OUTBOX_REFUSED = Counter(
    "tollgate_policy_outbox_refused_total",
    "Committed usage events Usage refused, by outcome: kept (a refusal an operator can lift: sent again) or dropped "
    "(refused for good).",
    ["outcome"],
)
OUTBOX_SENT = Counter(
    "tollgate_policy_outbox_delivered_total",
    "Committed usage events Usage confirmed holding, by sender: commit (the Commit itself) or loop (the outbox loop).",
    ["via"],
)
