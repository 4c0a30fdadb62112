"""Threshold crossings of a quota's allowance (docs/entitlements.md, "Notifications"). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from tollgate.services.policy.domain.dimensions import Filters
from tollgate.services.policy.domain.entitlements import Balance, label
from tollgate.services.policy.domain.model import QuotaScope

MIN_PERCENT, MAX_PERCENT = 1, 1000


@dataclass(frozen=True)
class Crossing:
    """A quota's usage + reserved at or past `percent` of its allowance in one period: stored once per
    (tenant, quota, user for a user-scoped quota, period, allowance, percent)."""

    tenant_id: str
    metric: str
    period: int
    scope: int
    kind: int
    user_id: str
    percent: int
    threshold: int
    allowed: int
    used: int
    reserved: int
    start_us: int
    end_us: int
    observed_by: str
    detail: str
    filters: Filters = ()


@dataclass(frozen=True)
class Notification:
    sequence: int
    crossing: Crossing
    create_us: int


def threshold(allowed: int, percent: int) -> int:
    """The quantity that reaches `percent` of `allowed`: rounded up, so 80 % of 101 is 81."""
    return -(-allowed * percent // 100)


def crossings(balance: Balance, tenant_id: str, user_id: str, observed_by: str) -> list[Crossing]:
    """Every threshold of the quota that usage + reserved has reached, lowest first. Nothing consumed crosses
    nothing, even against an allowance of 0."""
    consumed = balance.used + balance.reserved
    quota = balance.quota
    if consumed <= 0 or not quota.notify_at:
        return []
    per_user = quota.scope == QuotaScope.USER
    return [
        Crossing(
            tenant_id,
            quota.metric,
            quota.period,
            int(quota.scope),
            int(quota.kind),
            user_id if per_user else "",
            percent,
            threshold(balance.allowed, percent),
            balance.allowed,
            balance.used,
            balance.reserved,
            balance.start_us,
            balance.end_us,
            observed_by,
            f"{label(quota)}: {percent}% of {balance.allowed} allowed reached: "
            f"{balance.used} used + {balance.reserved} reserved",
            quota.filters,
        )
        for percent in sorted(quota.notify_at)
        if consumed >= threshold(balance.allowed, percent)
    ]
