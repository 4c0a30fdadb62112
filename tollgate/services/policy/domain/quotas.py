"""Quota caps (docs/policy.md, "Quotas"): a plan's usage limit on a metric for the current period. Pure.

The limit (plus the metric's active grants, docs/entitlements.md) is the quantity allowed: a quota is
reached, and caps its features, once the period's usage reaches it, so a limit of 0 without grants always
caps (without asking Usage). Soft and hard quotas cap alike; a hard one also refuses reservations. A plan's
quotas apply whatever the subscription's status: falling behind on payment must never lift a cap. When
Usage cannot answer, the quota fails open (no cap, said in the basis) unless the plan marks it fail_closed.
"""

from __future__ import annotations

from collections.abc import Iterable

from tollgate.services.policy.domain import periods
from tollgate.services.policy.domain.entitlements import active_grants, label, numbers
from tollgate.services.policy.domain.model import QuotaLimit, QuotaScope, Snapshot, Subscription
from tollgate.services.policy.domain.modes import HIGHEST, Cap, CapSource
from tollgate.services.policy.domain.usage import QuotaUsage, Window

DAY, MONTH, WEEK, YEAR = periods.DAY, periods.MONTH, periods.WEEK, periods.YEAR


def period_bounds(period: int, now_us: int, subscription: Subscription | None) -> tuple[int, int]:
    """[start, end) of the quota period holding `now_us`: from the subscription's anchor in its zone, else UTC."""
    anchor, zone = None, ""  # UTC calendar periods
    if subscription is not None and subscription.billing_anchor_us is not None:
        anchor, zone = subscription.billing_anchor_us, subscription.time_zone
    key = (period, anchor, zone)
    # A given period, anchor and zone tile time, so the period last computed is the answer while it holds now.
    found = _LAST_BOUNDS.get(key)
    if found is not None and found[0] <= now_us < found[1]:
        return found
    found = periods.bounds(period, now_us) if anchor is None else periods.bounds(period, now_us, anchor, zone)
    if len(_LAST_BOUNDS) >= 4096:
        _LAST_BOUNDS.clear()
    _LAST_BOUNDS[key] = found
    return found


_LAST_BOUNDS: dict[tuple[int, int | None, str], tuple[int, int]] = {}


def period_window(period: int, now_us: int, subscription: Subscription | None = None) -> Window:
    """What GetUsage is asked for: [start of the current period, now + 1 µs)."""
    return Window(period_bounds(period, now_us, subscription)[0], now_us + 1)


def applies(quota: QuotaLimit, snapshot: Snapshot, feature_id: str) -> bool:
    """A quota caps the features it names, or else the features its metric measures."""
    if quota.feature_ids:
        return feature_id in quota.feature_ids
    return quota.metric in snapshot.feature(feature_id).metrics


def counted(quota: QuotaLimit, snapshot: Snapshot, now_us: int, user_id: str) -> bool:
    """Whether the quota's usage must be read for `user_id`: a limit of 0 without an active grant caps without it."""
    return quota.limit > 0 or bool(active_grants(quota, snapshot.grants, now_us, user_id))


def to_read(snapshot: Snapshot, feature_ids: Iterable[str], now_us: int, user_id: str) -> tuple[QuotaLimit, ...]:
    """The quotas whose usage resolving `feature_ids` for `user_id` needs: none when no counted quota applies to
    them, else every counted quota of the plan, so that one read serves every feature of the tenant."""
    plan_quotas = snapshot.plan.quotas if snapshot.plan else ()
    read = tuple(quota for quota in plan_quotas if counted(quota, snapshot, now_us, user_id))
    if any(applies(quota, snapshot, feature_id) for feature_id in feature_ids for quota in read):
        return read
    return ()


def quota_caps(snapshot: Snapshot, feature_id: str, usage: QuotaUsage, now_us: int, user_id: str) -> list[Cap]:
    """One QUOTA cap per quota of the subscribed plan on the feature for `user_id`, whatever the subscription's
    status."""
    plan = snapshot.plan
    if plan is None:
        return []
    return [
        quota_cap(quota, usage, sum(g.amount for g in active_grants(quota, snapshot.grants, now_us, user_id)))
        for quota in plan.quotas
        if applies(quota, snapshot, feature_id)
    ]


def quota_cap(quota: QuotaLimit, usage: QuotaUsage, granted: int = 0) -> Cap:
    """The quota's cap: its own once reached (or unknown and failing closed), else HIGHEST; the detail says why."""
    name = label(quota)
    if quota.limit == 0 and granted == 0:
        return Cap(CapSource.QUOTA, quota.cap, f"{name} reached: a limit of 0 allows nothing")
    used = usage.of(quota.usage_key, user=quota.scope == QuotaScope.USER)
    if used is None:
        if quota.fail_closed:
            return Cap(CapSource.QUOTA, quota.cap, f"{name}: usage unavailable, fails closed")
        return Cap(CapSource.QUOTA, HIGHEST, f"{name}: usage unavailable, fails open")
    if used >= quota.limit + granted:
        return Cap(CapSource.QUOTA, quota.cap, f"{name} reached: {numbers(used, quota.limit, granted)}")
    return Cap(CapSource.QUOTA, HIGHEST, f"{name} not reached: {numbers(used, quota.limit, granted)}")
