"""Balances of quotas (docs/entitlements.md): allowance, grants, usage, reservations, burn order. Pure.

balance = limit + active grants − usage − open reservations, never below 0. Usage is what Usage holds for
the period plus amounts committed through Policy that Usage does not hold yet, so a commit never makes
the balance rise while its event is on its way. A quota is *exhausted* once usage alone reaches
limit + grants: reservations are claims, not usage, so they refuse further reservations on a hard quota
but do not cap a feature's mode.

Burn order (what the period's consumption takes first): the plan's allowance, then the active grants by
priority (lower first), then earliest expiry (a grant that never expires last), then earliest effective
time, then grant id. So what expires soonest is used before it is lost, and a promotion given a low
priority number is spent before a paid top-up. A tenant's grants add to its tenant-scoped quotas; a grant for
one user adds to that user's user-scoped quotas, each user's own allowance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tollgate.services.policy.domain.dimensions import describe
from tollgate.services.policy.domain.model import Grant, LimitKind, QuotaLimit, QuotaScope
from tollgate.services.policy.domain.periods import NAMES

NEVER = 2**63 - 1
OPEN, COMMITTED, RELEASED, EXPIRED = 1, 2, 3, 4  # ReservationState values of the proto
EVENT_PREFIX = "tollgate.reservation."  # a commit's usage event id: this and the reservation id


def event_id_of(reservation_id: str) -> str:
    """The usage event id a commit records: derived from the reservation, so every resend is the same event."""
    return EVENT_PREFIX + reservation_id


def reservation_of_event(event_id: str) -> str:
    return event_id.removeprefix(EVENT_PREFIX)


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    tenant_id: str
    user_id: str
    metric: str
    amount: int
    idempotency_key: str
    state: int
    create_us: int
    expires_us: int
    committed_amount: int = 0
    finish_us: int | None = None
    recorded_us: int | None = None
    dimensions: str = ""  # the usage's dimension values, canonical JSON ('' for none: dimensions.canonical)

    def state_at(self, now_us: int) -> int:
        """The state as callers see it: an open reservation past its expiry is EXPIRED before any sweep runs."""
        return EXPIRED if self.state == OPEN and self.expires_us <= now_us else self.state


@dataclass(frozen=True)
class GrantPart:
    grant: Grant
    remaining: int


@dataclass(frozen=True)
class Balance:
    """One quota in its current period."""

    quota: QuotaLimit
    start_us: int
    end_us: int
    granted: int
    used: int
    reserved: int
    grants: tuple[GrantPart, ...]
    decides: bool = False

    @property
    def allowed(self) -> int:
        return self.quota.limit + self.granted

    @property
    def balance(self) -> int:
        return max(0, self.allowed - self.used - self.reserved)

    @property
    def overage(self) -> int:
        return max(0, self.used - self.allowed)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.allowed

    @property
    def hard(self) -> bool:
        return self.quota.kind == LimitKind.HARD

    def takes(self, amount: int) -> bool:
        """Whether a reservation of `amount` fits: a soft quota takes anything."""
        return not self.hard or amount <= self.balance

    def detail(self) -> str:
        kind = "hard" if self.hard else "soft"
        return f"{label(self.quota)} {kind}: {numbers(self.used, self.quota.limit, self.granted)}"


def label(quota: QuotaLimit) -> str:
    per_user = " per user" if quota.scope == QuotaScope.USER else ""
    return f"quota {quota.metric}{describe(quota.filters)} {quota.limit}/{NAMES.get(quota.period, '?')}{per_user}"


def numbers(used: int, limit: int, granted: int) -> str:
    allowed = f"{limit + granted} allowed ({limit} + {granted} granted)" if granted else f"{limit} allowed"
    return f"{used} used of {allowed}"


def burn_order(grants: Iterable[Grant]) -> list[Grant]:
    """The order grants burn in, after the plan's allowance."""
    return sorted(
        grants,
        key=lambda g: (g.priority, NEVER if g.expires_us is None else g.expires_us, g.effective_us, g.grant_id),
    )


def active_grants(quota: QuotaLimit, grants: Iterable[Grant], at_us: int, user_id: str) -> list[Grant]:
    """The grants counting in the quota at `at_us` for `user_id`, in burn order: the tenant's own in a tenant-scoped
    quota, the user's own in a user-scoped one."""
    owner = user_id if quota.scope == QuotaScope.USER else ""
    if quota.scope == QuotaScope.USER and not owner:
        return []
    return burn_order(g for g in grants if g.metric == quota.metric and g.user_id == owner and g.active(at_us))


def balance_of(
    quota: QuotaLimit,
    window: tuple[int, int],
    grants: Iterable[Grant],
    *,
    used: int,
    reserved: int,
    at_us: int,
    user_id: str,
) -> Balance:
    """The quota's balance for `user_id`; the consumption (usage and reservations) burns the allowance, then the
    grants in order."""
    active = active_grants(quota, grants, at_us, user_id)
    left = max(0, used + reserved - quota.limit)
    parts = []
    for grant in active:
        burned = min(left, grant.amount)
        left -= burned
        parts.append(GrantPart(grant, grant.amount - burned))
    return Balance(quota, window[0], window[1], sum(g.amount for g in active), used, reserved, tuple(parts))


def decide(balances: Sequence[Balance]) -> list[Balance]:
    """The balances with `decides` set on the one with the least balance (hard before soft, then plan order)."""
    if not balances:
        return []
    chosen = min(range(len(balances)), key=lambda i: (balances[i].balance, not balances[i].hard, i))
    return [
        Balance(b.quota, b.start_us, b.end_us, b.granted, b.used, b.reserved, b.grants, i == chosen)
        for i, b in enumerate(balances)
    ]


def refusal(balances: Sequence[Balance], amount: int) -> Balance | None:
    """The hard quota that refuses a reservation of `amount` (the one with the least balance), or None."""
    short = [b for b in balances if not b.takes(amount)]
    return min(short, key=lambda b: b.balance) if short else None
