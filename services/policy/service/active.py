"""ListActiveFeatures: a user's features above OFF, ranked by mode and usage (services/policy/ranking.py).

Usage is asked for the tenant's and the user's totals, concurrently, within the call's remaining
budget. The answer is fresh for POLICY_RANKING_CACHE_SECONDS, then served as long again while one
background call refreshes it: a ranking is a soft signal, and seconds of staleness spare Usage two
queries per page view and the caller their wait. If Usage cannot answer, the ranking
falls back to caps alone (a failure is not reused; the client's short circuit handles repeats).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from shared.credentials import Principal
from shared.errors import FieldViolation, InvalidArgument
from services.policy import metrics, ranking
from services.policy.cache import SnapshotCache
from services.policy.domain import HIGHEST, Mode, Resolution
from services.policy.memo import Memo
from services.policy.service import access
from services.policy.service.quotas import QuotaUsage, quota_caps
from services.policy.usage_client import UsageClient, UsageUnavailable, Window

DEFAULT_WINDOW_SECONDS = 30 * 86400
MAX_WINDOW_SECONDS = 400 * 86400


@dataclass(frozen=True)
class ActiveFeatures:
    """The ranking, whether usage went into it, and the policy version it reflects."""

    items: list[tuple[ranking.Scored, Resolution, str]]  # (score, resolution, display name)
    usage_available: bool
    unavailable_reason: str
    version: int


def window_seconds(seconds: int, nanos: int) -> int:
    """The ranking window: default 30 days, at most 400 days, never negative."""
    if seconds < 0 or nanos < 0 or seconds > MAX_WINDOW_SECONDS:
        raise InvalidArgument(FieldViolation("window", f"must be between 0 and {MAX_WINDOW_SECONDS}s"))
    return seconds or DEFAULT_WINDOW_SECONDS


class RankingUsage:
    """The (tenant totals, user totals) of a ranking, fresh for `ttl` seconds per question, then
    served up to `ttl` more while one background call refreshes them."""

    def __init__(self, client: UsageClient | None, *, ttl: float):
        self._client = client
        self._memo: Memo[tuple[dict[str, int], dict[str, int]]] = Memo(ttl, stale_for=ttl)

    def totals(self, tenant_id: str, user_id: str, metric_names: list[str], window: int,
               budget: float | None) -> tuple[dict[str, int], dict[str, int]]:
        def ask(budget: float | None):
            if self._client is None:
                raise UsageUnavailable("no usage service configured")
            now_us = int(datetime.now(timezone.utc).timestamp() * 1_000_000)
            return tuple(self._client.many_totals(
                tenant_id=tenant_id, metrics=metric_names, window=Window(now_us - window * 1_000_000, now_us + 1),
                actor_ids=["", user_id], budget=budget))
        return self._memo.get((tenant_id, user_id, tuple(metric_names), window), lambda: ask(budget),
                              refresh=lambda: ask(None))


def list_active_features(tenant_id: str, user_id: str, window: int, *, cache: SnapshotCache,
                         usage: RankingUsage, quotas: QuotaUsage, caller: Principal,
                         budget: float | None) -> ActiveFeatures:
    """Features whose effective mode is above OFF, best first, ties by feature id."""
    access.tenant(caller, tenant_id)
    if not tenant_id or not user_id:
        raise InvalidArgument([FieldViolation(name, "is required") for name, value in
                               (("tenant_id", tenant_id), ("user_id", user_id)) if not value])
    snapshot = cache.get(tenant_id)
    resolutions = [snapshot.resolve(user_id, feature_id, HIGHEST,
                                    quota_caps(snapshot, feature_id, quotas, budget=budget))
                   for feature_id in sorted(snapshot.features)]
    active = [r for r in resolutions if r.effective > Mode.OFF]
    metric_names = sorted({m for r in active for m in snapshot.features[r.feature_id].metrics})
    try:
        tenant_totals, user_totals = usage.totals(tenant_id, user_id, metric_names, window, budget)
        available, reason = True, ""
    except UsageUnavailable as error:
        metrics.USAGE_FALLBACKS.labels("ranking").inc()
        tenant_totals, user_totals, available, reason = {}, {}, False, error.message
    items = []
    for resolution in active:
        feature = snapshot.features[resolution.feature_id]
        scored = ranking.score(feature.feature_id, int(resolution.effective) - 1,
                               sum(user_totals.get(m, 0) for m in feature.metrics),
                               sum(tenant_totals.get(m, 0) for m in feature.metrics), usage=available)
        items.append((scored, resolution, feature.display_name))
    order = {s.feature_id: i for i, s in enumerate(ranking.rank([item[0] for item in items]))}
    items.sort(key=lambda item: order[item[0].feature_id])
    return ActiveFeatures(items, available, reason, snapshot.version)

