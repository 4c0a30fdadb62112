"""Quota caps (docs/policy.md, "Quotas"): a plan's usage limit on a metric for the current day or month. Pure.

The limit is the quantity allowed: a quota is reached, and caps its features, once the period's
usage reaches the limit, so a limit of 0 always caps (without asking Usage). A plan's quotas apply
whatever the subscription's status: falling behind on payment must never lift a cap. When Usage
cannot answer, the quota fails open (no cap, said in the basis) unless the plan marks it fail_closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from tollgate.services.policy.domain.model import QuotaLimit, Snapshot
from tollgate.services.policy.domain.modes import HIGHEST, Cap, CapSource
from tollgate.services.policy.domain.usage import MICROS, QuotaUsage, Window

DAY, MONTH = 1, 2  # QuotaPeriod values of the proto


def period_window(period: int, now: datetime) -> Window:
    """[start of the current day or month of `now` (UTC), now + 1 µs)."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == MONTH:
        start = start.replace(day=1)
    return Window(int(start.timestamp() * MICROS), int(now.timestamp() * MICROS) + 1)


def applies(quota: QuotaLimit, snapshot: Snapshot, feature_id: str) -> bool:
    """A quota caps the features it names, or else the features its metric measures."""
    if quota.feature_ids:
        return feature_id in quota.feature_ids
    return quota.metric in snapshot.feature(feature_id).metrics


def to_read(snapshot: Snapshot, feature_ids: Iterable[str]) -> tuple[QuotaLimit, ...]:
    """The quotas whose usage resolving `feature_ids` needs: none when no quota with a limit applies to
    them, else every quota of the plan with a limit, so that one read serves every feature of the tenant."""
    counted = tuple(quota for quota in (snapshot.plan.quotas if snapshot.plan else ()) if quota.limit > 0)
    if any(applies(quota, snapshot, feature_id) for feature_id in feature_ids for quota in counted):
        return counted
    return ()


def quota_caps(snapshot: Snapshot, feature_id: str, usage: QuotaUsage) -> list[Cap]:
    """One QUOTA cap per quota of the subscribed plan on the feature, whatever the subscription's status."""
    plan = snapshot.plan
    if plan is None:
        return []
    return [quota_cap(quota, usage) for quota in plan.quotas if applies(quota, snapshot, feature_id)]


def quota_cap(quota: QuotaLimit, usage: QuotaUsage) -> Cap:
    """The quota's cap: its own once reached (or unknown and failing closed), else HIGHEST; the detail says why."""
    label = f"quota {quota.metric} {quota.limit}/{'day' if quota.period == DAY else 'month'}"
    if quota.limit == 0:
        return Cap(CapSource.QUOTA, quota.cap, f"{label} reached: a limit of 0 allows nothing")
    used = usage.of(quota.metric, quota.period)
    if used is None:
        if quota.fail_closed:
            return Cap(CapSource.QUOTA, quota.cap, f"{label}: usage unavailable, fails closed")
        return Cap(CapSource.QUOTA, HIGHEST, f"{label}: usage unavailable, fails open")
    if used >= quota.limit:
        return Cap(CapSource.QUOTA, quota.cap, f"{label} reached: {used} used of {quota.limit} allowed")
    return Cap(CapSource.QUOTA, HIGHEST, f"{label} not reached: {used} used of {quota.limit} allowed")
