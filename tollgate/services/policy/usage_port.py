"""Policy's one port to Usage: everything Policy reads from Usage, asked as few times as the answers allow.

Use cases call this, never the gRPC client behind it (services/policy/usage_client.py). Each read
takes the caller's `Deadline` and recomputes what is left of it when it asks, so reads made one after
another within a call never outlast the call. Failures raise `UsageUnavailable`; the use case decides
what that means. A quota read and a ranking are reused for their TTLs (POLICY_QUOTA_CACHE_SECONDS,
POLICY_RANKING_CACHE_SECONDS); a ranking is then served as long again while one background call
refreshes it: it is a soft signal, and seconds of staleness spare Usage two queries per page view.
A failure is never reused (the client's short circuit handles repeats). Usage that decides a balance
(Reserve, CheckEntitlement) is reused only within its periods and for POLICY_BALANCE_USAGE_SECONDS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollgate.services.policy.domain import quotas as quota_rules
from tollgate.services.policy.domain.model import QuotaLimit, QuotaScope, Subscription
from tollgate.services.policy.domain.usage import (
    MICROS,
    Delivery,
    FilteredQuery,
    Meter,
    OutboxEvent,
    QuotaUsage,
    RankingTotals,
    UsageKey,
    UsageQuery,
    Window,
)
from tollgate.services.policy.memo import Memo
from tollgate.shared.clock import now_micros

if TYPE_CHECKING:  # the gRPC client is wired in by server.build; this module never speaks gRPC itself
    from tollgate.services.policy.usage_client import UsageClient


# How long Reserve trusts a read of Usage's catalog: a dimension declared in Usage is accepted within it.
CATALOG_TTL = 5.0


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

    def __init__(self, client: UsageClient, *, quota_ttl: float, ranking_ttl: float, balance_ttl: float = 0.0):
        self._client = client
        self._quotas: Memo[QuotaUsage] = Memo(quota_ttl)
        self._rankings: Memo[RankingTotals] = Memo(ranking_ttl, stale_for=ranking_ttl)
        self._balances: Memo[tuple[int, QuotaUsage]] = Memo(balance_ttl, stale_for=balance_ttl)
        self._catalog: Memo[dict[str, Meter]] = Memo(CATALOG_TTL)

    def quota_usage(
        self,
        tenant_id: str,
        quotas: Sequence[QuotaLimit],
        *,
        deadline: Deadline,
        subscription: Subscription | None = None,
        user_id: str = "",
    ) -> QuotaUsage:
        """This period's usage of each quota's metric: one GetUsage per period naming all of its metrics (with
        `user_id`'s own totals in the same call when a quota counts per user), and one QueryUsage per quota with
        dimension filters (per whose usage it counts), all asked concurrently."""
        periods, actor, filtered = _periods(quotas), _actor(quotas, user_id), _filtered(quotas, user_id)
        if not periods and not filtered:
            return QuotaUsage()
        anchor = (subscription.billing_anchor_us, subscription.time_zone) if subscription else None

        def ask() -> QuotaUsage:
            now_us = now_micros()
            windows = {period: quota_rules.period_window(period, now_us, subscription) for period in _every(quotas)}
            return self._ask(tenant_id, periods, filtered, windows, actor, deadline)

        return self._quotas.get((tenant_id, actor, anchor, tuple(periods.items()), filtered), ask)

    def balance_usage(
        self,
        tenant_id: str,
        quotas: Sequence[QuotaLimit],
        *,
        note: Callable[[], int],
        deadline: Deadline,
        subscription: Subscription | None = None,
        user_id: str = "",
    ) -> tuple[int, QuotaUsage]:
        """(`note()` called just before Usage was asked, Usage's answer as in `quota_usage`) for a decision on a
        balance, reused within the current periods for POLICY_BALANCE_USAGE_SECONDS, then served as long again
        while one background call asks anew: the note says which of Policy's own commits the answer may lack,
        so an answer of any age decides exactly (docs/entitlements.md, "The consistency boundary")."""
        periods, actor, filtered = _periods(quotas), _actor(quotas, user_id), _filtered(quotas, user_id)
        if not periods and not filtered:
            return 0, QuotaUsage()
        now_us = now_micros()
        every = _every(quotas)
        bounds = {period: quota_rules.period_bounds(period, now_us, subscription) for period in every}

        def ask(within: Deadline) -> tuple[int, QuotaUsage]:
            noted = note()
            # Asked up to now, read after the note: a commit delivered before the note occurred before now, so it
            # is in the answer. Never past the periods of the key, should one end meanwhile.
            asked_at = now_micros()
            windows = {period: Window(start, min(asked_at + 1, end)) for period, (start, end) in bounds.items()}
            return noted, self._ask(tenant_id, periods, filtered, windows, actor, within)

        key = (tenant_id, actor, tuple((period, periods.get(period), bounds[period]) for period in every), filtered)
        return self._balances.get(key, lambda: ask(deadline), refresh=lambda: ask(NO_DEADLINE))

    def _ask(
        self,
        tenant_id: str,
        periods: dict[int, tuple[str, ...]],
        filtered: tuple[tuple[UsageKey, str], ...],
        windows: dict[int, Window],
        actor: str,
        deadline: Deadline,
    ) -> QuotaUsage:
        queries = [UsageQuery(tenant_id, metrics, windows[period], actor) for period, metrics in periods.items()]
        sums = [FilteredQuery(tenant_id, key[0], windows[key[1]], key[2], whose) for key, whose in filtered]
        answers, filtered_sums = self._client.quota_reads(queries, sums, timeout=deadline.remaining())
        tenant_used: dict[UsageKey, int] = {}
        user_used: dict[UsageKey, int] = {}
        for period, (tenant, user) in zip(periods, answers):
            tenant_used.update(((m, period, ()), q) for m, q in tenant.items())
            user_used.update(((m, period, ()), q) for m, q in user.items())
        for (key, whose), total in zip(filtered, filtered_sums):
            (user_used if whose else tenant_used)[key] = total
        return QuotaUsage(tenant_used, user_used=user_used)

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

    def metric_catalog(self, *, deadline: Deadline) -> dict[str, Meter]:
        """Every metric in Usage's catalog by name, asked afresh (a metric added a moment ago counts)."""
        return self._client.metric_catalog(timeout=deadline.remaining())

    def meter(self, metric: str, dimensions: Sequence[str], *, deadline: Deadline) -> Meter | None:
        """The metric as Usage's catalog holds it (None: not there), read for CATALOG_TTL seconds (Reserve checks its
        dimension values against it on every call that carries some), and afresh when that read lacks the metric or
        one of `dimensions`: one declared a moment ago counts."""

        def ask() -> dict[str, Meter]:
            return self._client.metric_catalog(timeout=deadline.remaining())

        found = self._catalog.get((), ask).get(metric)
        if found is None or not set(dimensions) <= set(found.dimensions):
            fresh = ask()
            self._catalog.put((), fresh)
            found = fresh.get(metric)
        return found


def _every(quotas: Sequence[QuotaLimit]) -> list[int]:
    """The periods whose windows the quotas' reads need, GetUsage's and QueryUsage's."""
    return sorted({q.period for q in quotas})


def _periods(quotas: Sequence[QuotaLimit]) -> dict[int, tuple[str, ...]]:
    """The metrics to ask GetUsage for, by period (quotas without filters)."""
    plain = [q for q in quotas if not q.filters]
    return {
        period: tuple(sorted({q.metric for q in plain if q.period == period}))
        for period in sorted({q.period for q in plain})
    }


def _filtered(quotas: Sequence[QuotaLimit], user_id: str) -> tuple[tuple[UsageKey, str], ...]:
    """The QueryUsage reads the quotas with filters need: (usage key, '' for the tenant's or the user's id)."""
    return tuple(sorted({(q.usage_key, user_id if q.scope == QuotaScope.USER else "") for q in quotas if q.filters}))


def _actor(quotas: Sequence[QuotaLimit], user_id: str) -> str:
    """Whose own totals to ask for too: the user's when a quota counts per user."""
    return user_id if any(q.scope == QuotaScope.USER and not q.filters for q in quotas) else ""
