"""Quota caps (SPEC §1.2 "quota"): a plan's usage limit on a metric, read from Usage for the current period.

The limit is the quantity allowed: a quota is reached, and caps its features, once the period's
usage reaches the limit, so a limit of 0 always caps (without asking Usage). A plan's quotas apply
whatever the subscription's status: falling behind on payment must never lift a cap. When Usage
cannot answer, the quota fails open (no cap, said in the basis) unless the plan marks it fail_closed.
"""

from __future__ import annotations

from datetime import datetime, timezone

from services.policy import metrics
from services.policy.domain import HIGHEST, Cap, CapSource
from services.policy.memo import Memo
from services.policy.model import QuotaLimit, Snapshot
from services.policy.usage_client import UsageClient, UsageUnavailable, Window

DAY, MONTH = 1, 2  # QuotaPeriod values of the proto


def period_window(period: int, now: datetime) -> Window:
    """[start of the current day or month in UTC, now + 1 µs)."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == MONTH:
        start = start.replace(day=1)
    return Window(int(start.timestamp() * 1_000_000), int(now.timestamp() * 1_000_000) + 1)


def applies(quota: QuotaLimit, snapshot: Snapshot, feature_id: str) -> bool:
    """A quota caps the features it names, or else the features its metric measures."""
    if quota.feature_ids:
        return feature_id in quota.feature_ids
    return quota.metric in snapshot.feature(feature_id).metrics


class QuotaUsage:
    """Period usage per (tenant, metric, period), kept for `ttl` seconds so resolves stay fast."""

    def __init__(self, client: UsageClient | None, *, ttl: float):
        self._client = client
        self._memo: Memo[int] = Memo(ttl)

    def used(self, tenant_id: str, quota: QuotaLimit, *, budget: float | None) -> int:
        """The tenant's usage of the quota's metric in the current period; UsageUnavailable if unknown."""
        def ask() -> int:
            if self._client is None:
                raise UsageUnavailable("no usage service configured")
            window = period_window(quota.period, datetime.now(timezone.utc))
            return self._client.totals(tenant_id=tenant_id, metrics=[quota.metric], window=window,
                                       budget=budget).get(quota.metric, 0)
        return self._memo.get((tenant_id, quota.metric, quota.period), ask)


def quota_caps(snapshot: Snapshot, feature_id: str, usage: QuotaUsage, *, budget: float | None) -> list[Cap]:
    """One QUOTA cap per quota of the subscribed plan on the feature, whatever the subscription's status."""
    plan = snapshot.plan
    if plan is None:
        return []
    return [_cap(snapshot.tenant_id, quota, usage, budget)
            for quota in plan.quotas if applies(quota, snapshot, feature_id)]


def _cap(tenant_id: str, quota: QuotaLimit, usage: QuotaUsage, budget: float | None) -> Cap:
    label = f"quota {quota.metric} {quota.limit}/{'day' if quota.period == DAY else 'month'}"
    if quota.limit == 0:
        return Cap(CapSource.QUOTA, quota.cap, f"{label} reached: a limit of 0 allows nothing")
    try:
        used = usage.used(tenant_id, quota, budget=budget)
    except UsageUnavailable:
        metrics.USAGE_FALLBACKS.labels("quota").inc()
        if quota.fail_closed:
            return Cap(CapSource.QUOTA, quota.cap, f"{label}: usage unavailable, fails closed")
        return Cap(CapSource.QUOTA, HIGHEST, f"{label}: usage unavailable, fails open")
    if used >= quota.limit:
        return Cap(CapSource.QUOTA, quota.cap, f"{label} reached: {used} used of {quota.limit} allowed")
    return Cap(CapSource.QUOTA, HIGHEST, f"{label} not reached: {used} used of {quota.limit} allowed")
