"""ListActiveFeatures: a user's features above OFF, ranked by mode and usage (services/policy/domain/ranking.py).

The quotas' usage and then the ranking's totals are read through the Usage port within the call's
deadline. If Usage cannot answer, the ranking falls back to caps alone and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollgate.services.policy import metrics, validation
from tollgate.services.policy.cache import SnapshotCache
from tollgate.services.policy.domain import ranking
from tollgate.services.policy.domain.errors import UsageUnavailable
from tollgate.services.policy.domain.modes import HIGHEST
from tollgate.services.policy.domain.quotas import quota_caps
from tollgate.services.policy.domain.usage import RankingTotals
from tollgate.services.policy.service import access
from tollgate.services.policy.service.quotas import read_usage
from tollgate.services.policy.usage_port import Deadline, UsagePort
from tollgate.shared.clock import now_micros
from tollgate.shared.credentials import Principal


@dataclass(frozen=True)
class ActiveFeatures:
    """The ranking, whether usage went into it (and why not), and the policy version it reflects."""

    items: list[ranking.ActiveFeature]
    usage_available: bool
    unavailable_reason: str
    version: int


def list_active_features(
    tenant_id: str,
    user_id: str,
    window_seconds: int,
    window_nanos: int,
    *,
    cache: SnapshotCache,
    usage: UsagePort,
    caller: Principal,
    deadline: Deadline,
) -> ActiveFeatures:
    """Features whose effective mode is above OFF, best first, ties by feature id."""
    access.tenant(caller, tenant_id)
    window = validation.active_features(tenant_id, user_id, window_seconds, window_nanos)
    snapshot = cache.get(tenant_id)
    features = sorted(snapshot.features)
    now_us = now_micros()
    used = read_usage(snapshot, features, now_us, usage=usage, deadline=deadline, user_id=user_id)
    resolutions = ranking.active(
        [
            snapshot.resolve(user_id, feature_id, HIGHEST, quota_caps(snapshot, feature_id, used, now_us, user_id))
            for feature_id in features
        ]
    )
    metric_names = sorted({metric for r in resolutions for metric in snapshot.features[r.feature_id].metrics})
    totals: RankingTotals | None
    try:
        totals, reason = usage.ranking_totals(tenant_id, user_id, metric_names, window, deadline=deadline), ""
    except UsageUnavailable as error:
        metrics.USAGE_FALLBACKS.labels("ranking").inc()
        totals, reason = None, error.message
    return ActiveFeatures(
        ranking.rank_active(snapshot, resolutions, totals), totals is not None, reason, snapshot.version
    )
