"""Policy's one port to Usage: everything Policy reads from Usage, asked as few times as the answers allow.

Use cases call this, never the gRPC client behind it (services/policy/usage_client.py). Each read
takes the caller's `Deadline` and recomputes what is left of it when it asks, so reads made one after
another within a call never outlast the call. Failures raise `UsageUnavailable`; the use case decides
what that means. A quota read and a ranking are reused for their TTLs (POLICY_QUOTA_CACHE_SECONDS,
POLICY_RANKING_CACHE_SECONDS); a ranking is then served as long again while one background call
refreshes it: it is a soft signal, and seconds of staleness spare Usage two queries per page view.
A failure is never reused (the client's short circuit handles repeats).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollgate.services.policy.domain import quotas as quota_rules
from tollgate.services.policy.domain.model import QuotaLimit, QuotaScope, Subscription
from tollgate.services.policy.domain.usage import (
    MICROS,
    Delivery,
    OutboxEvent,
    QuotaUsage,
    RankingTotals,
    UsageQuery,
    Window,
)
from tollgate.services.policy.memo import Memo
from tollgate.shared.clock import now_micros

if TYPE_CHECKING:  # the gRPC client is wired in by server.build; this module never speaks gRPC itself
    from tollgate.services.policy.usage_client import UsageClient


@dataclass(frozen=True)
class Deadline:
    """When the caller stops waiting, on time.monotonic(); `at` None: the caller set no deadline."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """The deadline `seconds` from now (None: none)."""
        return cls(None if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float | None:
        """Seconds left now (never negative); None without a deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())


NO_DEADLINE = Deadline()


class UsagePort:
    """Quota usage per period, ranking totals and the metric catalog, read from Usage through `client`."""

    def __init__(self, client: UsageClient, *, quota_ttl: float, ranking_ttl: float):
        self._client = client
        self._quotas: Memo[QuotaUsage] = Memo(quota_ttl)
        self._rankings: Memo[RankingTotals] = Memo(ranking_ttl, stale_for=ranking_ttl)

    def quota_usage(
        self,
        tenant_id: str,
        quotas: Sequence[QuotaLimit],
        *,
        deadline: Deadline,
        subscription: Subscription | None = None,
        user_id: str = "",
        fresh: bool = False,
    ) -> QuotaUsage:
        """This period's usage of each quota's metric: one GetUsage per period naming all of its metrics (with
        `user_id`'s own totals in the same call when a quota counts per user), the periods asked concurrently.
        `fresh` skips the reuse: what decides a reservation or answers CheckEntitlement is read now."""
        periods = {
            period: tuple(sorted({q.metric for q in quotas if q.period == period}))
            for period in sorted({q.period for q in quotas})
        }
        if not periods:
            return QuotaUsage()
        actor = user_id if any(q.scope == QuotaScope.USER for q in quotas) else ""

        def ask() -> QuotaUsage:
            now_us = now_micros()
            queries = [
                UsageQuery(tenant_id, metrics, quota_rules.period_window(period, now_us, subscription), actor)
                for period, metrics in periods.items()
            ]
            answers = self._client.get_split_usage(queries, timeout=deadline.remaining())
            return QuotaUsage(
                {(metric, period): q for period, (tenant, _) in zip(periods, answers) for metric, q in tenant.items()},
                user_used={
                    (metric, period): q for period, (_, user) in zip(periods, answers) for metric, q in user.items()
                },
            )

        if fresh:
            return ask()
        anchor = (subscription.billing_anchor_us, subscription.time_zone) if subscription else None
        return self._quotas.get((tenant_id, actor, anchor, tuple(periods.items())), ask)

    def record(
        self, tenant_id: str, events: Sequence[OutboxEvent], *, timeout: float | None, fail_fast: bool = False
    ) -> list[Delivery]:
        """Send committed usage to Usage; one Delivery per event, in order (UsageUnavailable when not sent;
        `fail_fast`: at once while Usage is known to be down)."""
        return self._client.record_events(tenant_id, list(events), timeout=timeout, fail_fast=fail_fast)

    def ranking_totals(
        self, tenant_id: str, user_id: str, metrics: Sequence[str], window_seconds: int, *, deadline: Deadline
    ) -> RankingTotals:
        """The tenant's and the user's totals of `metrics` over the last `window_seconds`, asked in one call."""
        names = tuple(sorted(set(metrics)))
        if not names:
            return RankingTotals({}, {})

        def ask(within: Deadline) -> RankingTotals:
            window = Window.ending_at(int(time.time() * MICROS), window_seconds)
            tenant, user = self._client.get_tenant_and_actor_usage(
                UsageQuery(tenant_id, names, window, user_id), timeout=within.remaining()
            )
            return RankingTotals(tenant, user)

        return self._rankings.get(
            (tenant_id, user_id, names, window_seconds), lambda: ask(deadline), refresh=lambda: ask(NO_DEADLINE)
        )

    def metric_names(self, *, deadline: Deadline) -> set[str]:
        """Every metric name in Usage's catalog, asked afresh (a metric added a moment ago counts)."""
        return self._client.metric_names(timeout=deadline.remaining())
