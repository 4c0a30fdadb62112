"""Threshold notifications: stored in the transaction that observes a crossing, offered on WatchEntitlements
(docs/entitlements.md, "Notifications").

A crossing is stored once per quota (metric, filters, period, scope), user (user-scoped quotas), period, allowance and
percentage, numbered from the tenant's head row, which the storing transaction holds locked until it ends: numbers
become visible in order, so a watcher that has seen N has seen everything numbered before N, and resuming after N
misses nothing.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from tollgate.services.policy import metrics, validation
from tollgate.services.policy.domain.entitlements import Balance
from tollgate.services.policy.domain.notifications import Crossing, Notification, crossings
from tollgate.services.policy.repository import Connection, Sessions, notifications
from tollgate.services.policy.service import access
from tollgate.shared.clock import now_micros
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import FieldViolation, InvalidArgument, OutOfRange, ResourceExhausted

log = logging.getLogger("tollgate.policy.notifications")
BATCH = 100
# How often a watcher looks for notifications stored by other processes; those stored by this one wake it at once.
POLL_SECONDS = 0.25
# How often each process deletes the notifications past retention (idempotent: replicas may overlap).
PURGE_SECONDS = 3600


def record(
    connection: Connection, balances: Sequence[Balance], tenant_id: str, user_id: str, observed_by: str, now_us: int
) -> bool:
    """Store, in the caller's transaction, every crossing the balances show that is not stored yet; whether any was.

    Cheap when nothing is crossed (no statement) and when everything crossed is stored (one read per quota); the
    head lock is taken only to store, and what is missing is read again under it, since another transaction
    may have stored it meanwhile."""
    found = shown(balances, tenant_id, user_id, observed_by)
    if not found or not notifications.missing(connection, found):
        return False
    head = notifications.lock_head(connection, tenant_id)
    left = notifications.missing(connection, found)
    if not left:
        return False
    notifications.store(connection, left, head + 1, now_us)
    return True


def shown(balances: Sequence[Balance], tenant_id: str, user_id: str, observed_by: str) -> list[Crossing]:
    """Every threshold the balances show crossed, stored or not (no statement)."""
    found: dict[tuple, Crossing] = {}
    for balance in balances:
        for crossing in crossings(balance, tenant_id, user_id, observed_by):
            key = (
                crossing.metric,
                crossing.filters,
                crossing.period,
                crossing.scope,
                crossing.allowed,
                crossing.percent,
            )
            found.setdefault(key, crossing)  # two quotas alike but for their kind are one threshold
    return list(found.values())


class Notices:
    """Wakes this process's watchers when a crossing is stored here, and ends them when the server stops.

    A watch holds one of the server's worker threads while it waits, so at most `max_watches` are open at once, half
    of them (at least one) of any one tenant: the other calls keep threads to run on, and one tenant's watches leave
    room for the others'. A watch past either limit is refused, RESOURCE_EXHAUSTED."""

    def __init__(self, *, max_watches: int, poll_seconds: float = POLL_SECONDS):
        self._poll = poll_seconds
        self._changed = threading.Condition()
        self._generation = 0
        self._stopped = False
        self._max_watches, self._per_tenant = max_watches, max(1, max_watches // 2)
        self._open: Counter[str] = Counter()

    def run(self, stopping: threading.Event) -> None:
        """A background task of the server: once it is stopping, every watcher ends."""
        stopping.wait()
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _wait(self, seen: int) -> int:
        with self._changed:
            if not self._stopped and self._generation == seen:
                self._changed.wait(self._poll)
            return self._generation

    @property
    def stopped(self) -> bool:
        return self._stopped

    def watch(
        self,
        tenant_id: str,
        after_sequence: int,
        *,
        sessions: Sessions,
        caller: Principal,
        active: Callable[[], bool],
    ) -> Iterator[Notification]:
        """The tenant's notifications numbered after `after_sequence`, then each new one, until `active()` is
        false (cancelled, past its deadline) or the server stops."""
        access.tenant(caller, tenant_id)
        validation.watch(tenant_id, after_sequence)
        with sessions.begin() as session:
            latest, _ = notifications.head(session, tenant_id)
        if after_sequence > latest:
            # A cursor from elsewhere (another tenant, another deployment) would otherwise wait silently for ever.
            raise InvalidArgument(
                FieldViolation("after_sequence", f"is beyond the tenant's latest notification ({latest})")
            )
        self._take_slot(tenant_id)
        try:
            cursor, seen = after_sequence, self._generation
            while active() and not self._stopped:
                with sessions.begin() as session:
                    batch = notifications.after(session, tenant_id, cursor, BATCH)
                    # Read after the batch: a purge that committed before the batch was read shows here.
                    _, purged_through = notifications.head(session, tenant_id)
                if 0 < cursor < purged_through:
                    raise _behind_retention(cursor, purged_through)
                for notification in batch:
                    yield notification
                    cursor = notification.sequence
                if len(batch) < BATCH:
                    seen = self._wait(seen)
        finally:
            with self._changed:
                self._open[tenant_id] -= 1
                if not self._open[tenant_id]:
                    del self._open[tenant_id]

    def _take_slot(self, tenant_id: str) -> None:
        with self._changed:
            if self._open.total() >= self._max_watches:
                raise ResourceExhausted(
                    f"this Policy process holds its most open watches ({self._max_watches}, POLICY_MAX_WATCHES); "
                    "retry later or on another replica",
                    reason="TOO_MANY_WATCHES",
                )
            if self._open[tenant_id] >= self._per_tenant:
                raise ResourceExhausted(
                    f"tenant {tenant_id!r} holds its most open watches on this Policy process ({self._per_tenant}, "
                    "half of POLICY_MAX_WATCHES); close one, or retry later or on another replica",
                    reason="TOO_MANY_WATCHES",
                )
            self._open[tenant_id] += 1


def _behind_retention(cursor: int, purged_through: int) -> OutOfRange:
    return OutOfRange(
        f"notifications numbered after {cursor} up to {purged_through} were deleted by retention (kept "
        f"POLICY_NOTIFICATION_RETENTION_DAYS after the end of the periods they are about); resume after "
        f"{purged_through}, or from 0 for every notification kept",
        reason="NOTIFICATIONS_PURGED",
    )


def purge(sessions: Sessions, *, retention_us: int, now_us: int) -> int:
    """Delete every tenant's notifications about periods that ended more than `retention_us` ago (as a prefix of
    its numbers: notifications.purge_ended), one transaction per tenant; how many were deleted."""
    deleted, ended_before_us = 0, now_us - retention_us
    with sessions.begin() as session:
        tenants = notifications.with_ended(session, ended_before_us)
    for tenant_id in tenants:
        with sessions.begin() as session:
            deleted += notifications.purge_ended(session, tenant_id, ended_before_us)
    metrics.NOTIFICATIONS_PURGED.inc(deleted)
    return deleted


class Retention:
    """A background task of the server: `purge` at start and every PURGE_SECONDS."""

    def __init__(self, sessions: Sessions, *, retention_days: float):
        self._sessions, self._retention_us = sessions, int(retention_days * 86_400_000_000)

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                purge(self._sessions, retention_us=self._retention_us, now_us=now_micros())
            except Exception:  # the task must outlive a lost database connection; the next round retries
                log.exception("notification retention failed; retrying in %ss", PURGE_SECONDS)
            stopping.wait(PURGE_SECONDS)
