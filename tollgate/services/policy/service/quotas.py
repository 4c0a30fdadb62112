"""The quota usage of a resolve: read from Usage once per call, for every quota it needs (domain/quotas.py rules)."""

from __future__ import annotations

from collections.abc import Iterable

from tollgate.services.policy import metrics
from tollgate.services.policy.domain import quotas
from tollgate.services.policy.domain.errors import UsageUnavailable
from tollgate.services.policy.domain.model import Snapshot
from tollgate.services.policy.domain.usage import QuotaUsage
from tollgate.services.policy.usage_port import Deadline, UsagePort


def read_usage(
    snapshot: Snapshot,
    feature_ids: Iterable[str],
    now_us: int,
    *,
    usage: UsagePort,
    deadline: Deadline,
    user_id: str = "",
) -> QuotaUsage:
    """The usage the quotas on `feature_ids` need; unknown (and counted as a fallback) when Usage does not answer."""
    needed = quotas.to_read(snapshot, feature_ids, now_us, user_id)
    if not needed:
        return QuotaUsage()
    try:
        return usage.quota_usage(
            snapshot.tenant_id, needed, deadline=deadline, subscription=snapshot.subscription, user_id=user_id
        )
    except UsageUnavailable as error:
        metrics.USAGE_FALLBACKS.labels("quota").inc()
        return QuotaUsage(unavailable=error.message)
