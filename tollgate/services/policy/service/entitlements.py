"""CheckEntitlement, Reserve, Commit and Release (docs/entitlements.md, "The consistency boundary").

Usage is asked first (never through the resolve path's cache; an answer is reused only within its periods
and for POLICY_BALANCE_USAGE_SECONDS), after noting the latest delivery the outbox recorded. Then Reserve
takes the (tenant, metric) lock row (Commit takes it too) and, in one statement, reads the open reservations
and every committed amount Usage's answer may lack: those not yet delivered, or delivered after the noted
one. A delivery is recorded only once Usage holds the event, so one recorded before the note was in Usage
before the question was sent: every committed amount is counted once, or (for an instant) twice, never zero
times, and the lock is held for a statement and an insert, not for a call to Usage.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from tollgate.services.policy import metrics, validation
from tollgate.services.policy.cache import SnapshotCache
from tollgate.services.policy.domain import entitlements as rules
from tollgate.services.policy.domain.entitlements import Balance, Reservation
from tollgate.services.policy.domain.errors import (
    IdempotencyKeyReused,
    NoQuota,
    ReservationExpired,
    ReservationNotOpen,
    UnknownReservation,
)
from tollgate.services.policy.domain.model import QuotaLimit, QuotaScope, Snapshot
from tollgate.services.policy.domain.modes import Mode, Resolution
from tollgate.services.policy.domain.quotas import applies, period_bounds, quota_caps
from tollgate.services.policy.domain.usage import OutboxEvent, QuotaUsage
from tollgate.services.policy.repository import Connection, Connections, Session, Sessions, entitlements
from tollgate.services.policy.service import access, notifications
from tollgate.services.policy.service.notifications import Notices
from tollgate.services.policy.service.outbox import Dispatcher
from tollgate.services.policy.usage_port import Deadline, UsagePort
from tollgate.shared.clock import now_micros
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import FieldViolation, InvalidArgument

_STATE_NAMES = {rules.OPEN: "open", rules.COMMITTED: "committed", rules.RELEASED: "released", rules.EXPIRED: "expired"}


@dataclass(frozen=True)
class Entitlement:
    has_access: bool
    resolution: Resolution | None
    balances: list[Balance]
    version: int


@dataclass(frozen=True)
class Reserved:
    reservation: Reservation | None
    balances: list[Balance]
    refusal: str
    now_us: int


@dataclass(frozen=True)
class Finished:
    reservation: Reservation
    now_us: int


class _Retried(Exception):
    """A reservation with the idempotency key exists already."""

    def __init__(self, reservation: Reservation):
        super().__init__(reservation.reservation_id)
        self.reservation = reservation


@dataclass(frozen=True)
class _Asked:
    """Usage's answer for some quotas, and the latest delivery recorded before the question was sent."""

    usage: QuotaUsage
    delivered_before: int


def _ask_usage(
    snapshot: Snapshot,
    quotas: Sequence[QuotaLimit],
    user_id: str,
    *,
    usage: UsagePort,
    deadline: Deadline,
    connections: Connections,
    note: Callable[[Connection], int] = entitlements.last_delivered,
) -> _Asked:
    """Usage's answer for the quotas' periods (asked outside any lock, or reused: UsagePort.balance_usage) and the
    latest delivery `note` read just before Usage was asked."""

    def noted() -> int:
        with connections.connect() as connection:
            return note(connection)

    delivered_before, read = usage.balance_usage(
        snapshot.tenant_id,
        quotas,
        note=noted,
        deadline=deadline,
        subscription=snapshot.subscription,
        user_id=user_id,
    )
    return _Asked(read, delivered_before)


def _balances(
    session: Session | Connection,
    snapshot: Snapshot,
    quotas: Sequence[QuotaLimit],
    user_id: str,
    now_us: int,
    asked: _Asked,
    *,
    key: str = "",
    locked: bool = False,
) -> tuple[list[Balance], QuotaUsage, str | None]:
    """Each quota's balance now: Usage's answer plus what Policy holds that the answer may lack; that usage; and
    the reservation that holds `key`, if one does. `locked`: each metric's lock is taken first (held())."""
    windows = {q: period_bounds(q.period, now_us, snapshot.subscription) for q in quotas}
    held_by_metric: dict[str, tuple[int, int, dict[QuotaLimit, tuple[int, int]]]] = {}
    key_taken_by = None
    for metric in sorted({q.metric for q in quotas}):
        mine = [q for q in quotas if q.metric == metric]
        held = entitlements.held(
            session,
            snapshot.tenant_id,
            metric,
            user_id,
            now_us,
            [windows[q] for q in mine],
            delivered_after=asked.delivered_before,
            key=key,
            locked=locked,
        )
        held_by_metric[metric] = (held.reserved, held.user_reserved, dict(zip(mine, held.waiting)))
        key_taken_by = key_taken_by or held.key_taken_by
    used, user_used, balances = dict(asked.usage.used), dict(asked.usage.user_used), []
    for quota in quotas:
        reserved, user_reserved, pending = held_by_metric[quota.metric]
        per_user = quota.scope == QuotaScope.USER
        from_usage = (user_used if per_user else used).get((quota.metric, quota.period), 0)
        waiting = pending[quota][1 if per_user else 0]
        balances.append(
            rules.balance_of(
                quota,
                windows[quota],
                snapshot.grants,
                used=from_usage + waiting,
                reserved=user_reserved if per_user else reserved,
                at_us=now_us,
            )
        )
    for quota, balance in zip(quotas, balances):
        (user_used if quota.scope == QuotaScope.USER else used)[(quota.metric, quota.period)] = balance.used
    return balances, QuotaUsage(used, user_used=user_used), key_taken_by


def check_entitlement(
    tenant_id: str,
    user_id: str,
    feature_id: str,
    metric: str,
    *,
    cache: SnapshotCache,
    sessions: Sessions,
    connections: Connections,
    usage: UsagePort,
    caller: Principal,
    deadline: Deadline,
    notices: Notices | None = None,
) -> Entitlement:
    """The user's balances of the feature's (or metric's) quotas and, with a feature, its mode. Read-only but for
    the threshold crossings it observes (usage recorded straight into Usage), which it stores."""
    access.tenant(caller, tenant_id)
    validation.check_entitlement(tenant_id, user_id, feature_id, metric)
    snapshot = cache.get(tenant_id)
    if feature_id:
        snapshot.feature(feature_id)  # NOT_FOUND before anything is read
    plan_quotas = snapshot.plan.quotas if snapshot.plan else ()
    relevant = [q for q in plan_quotas if (applies(q, snapshot, feature_id) if feature_id else q.metric == metric)]
    shown = [q for q in relevant if not metric or q.metric == metric]
    asked = _ask_usage(snapshot, relevant, user_id, usage=usage, deadline=deadline, connections=connections)
    now_us = now_micros()
    with connections.connect() as connection:
        balances, used, _ = _balances(connection, snapshot, relevant, user_id, now_us, asked)
    stored = False
    if notifications.shown(balances, tenant_id, user_id, "CheckEntitlement"):
        with sessions.begin() as session:
            stored = notifications.record(session, balances, tenant_id, user_id, "CheckEntitlement", now_us)
    if stored and notices is not None:
        notices.wake()
    resolution = None
    if feature_id:
        resolution = snapshot.resolve(
            user_id, feature_id, Mode.AUTONOMOUS, quota_caps(snapshot, feature_id, used, now_us)
        )
    chosen = rules.decide([b for q, b in zip(relevant, balances) if q in shown])
    spent = any(b.hard and b.balance <= 0 for b in chosen)
    has_access = not spent and (resolution is None or resolution.effective > Mode.OFF)
    return Entitlement(has_access, resolution, chosen, snapshot.version)


def reserve(
    tenant_id: str,
    user_id: str,
    metric: str,
    amount: int,
    ttl_seconds: int,
    ttl_nanos: int,
    key: str,
    *,
    cache: SnapshotCache,
    sessions: Sessions,
    connections: Connections,
    usage: UsagePort,
    caller: Principal,
    deadline: Deadline,
    notices: Notices | None = None,
) -> Reserved:
    """Hold `amount` of the metric, or refuse naming the hard quota that is short; a retried key answers the same."""
    access.tenant(caller, tenant_id)
    ttl_us = validation.reserve(tenant_id, user_id, metric, amount, ttl_seconds, ttl_nanos, key)
    snapshot = cache.get(tenant_id)
    quotas = [q for q in (snapshot.plan.quotas if snapshot.plan else ()) if q.metric == metric]
    if not quotas:
        raise NoQuota(tenant_id, metric)

    def note(connection: Connection) -> int:
        """A retry is answered without asking Usage (checked again under the lock below)."""
        existing = entitlements.find_by_key(connection, tenant_id, key)
        if existing is not None:
            raise _Retried(existing)
        return entitlements.last_delivered(connection)

    try:
        asked = _ask_usage(
            snapshot, quotas, user_id, usage=usage, deadline=deadline, connections=connections, note=note
        )
    except _Retried as retried:
        return _replay(retried.reservation, user_id, metric, amount, key)
    with sessions.begin() as session:
        # The lock and the reads after it go in one round trip, so the decision's instant is taken before: an
        # expiry in between still counts as held, which can only refuse, never overshoot.
        now_us = now_micros()
        balances, _, taken_by = _balances(session, snapshot, quotas, user_id, now_us, asked, key=key, locked=True)
        if taken_by is not None:  # the same key always takes the same lock: checked after it
            existing = entitlements.get(session, tenant_id, taken_by)
            assert existing is not None  # reservations are never deleted
            return _replay(existing, user_id, metric, amount, key)
        short = rules.refusal(balances, amount)
        if short is not None:
            metrics.RESERVATIONS.labels("refused").inc()
            refusal = f"{short.detail()}: {amount} asked, {short.balance} left"
            return Reserved(None, rules.decide(balances), refusal, now_us)
        reservation = Reservation(
            f"rsv_{secrets.token_hex(12)}", tenant_id, user_id, metric, amount, key, rules.OPEN, now_us, now_us + ttl_us
        )
        after = [replace(b, reserved=b.reserved + amount) for b in balances]
        # A refusal above stores nothing, crossings included: they are stored by the next Reserve that holds, or
        # the next CheckEntitlement. Commit and Release never raise usage + reserved, so they cross nothing.
        stored = notifications.record(session, after, tenant_id, user_id, "Reserve", now_us)
        entitlements.insert_reservation(session, reservation, commit=True)
    if stored and notices is not None:
        notices.wake()
    metrics.RESERVATIONS.labels("reserved").inc()
    return Reserved(reservation, rules.decide(after), "", now_us)


def _replay(existing: Reservation, user_id: str, metric: str, amount: int, key: str) -> Reserved:
    if (existing.user_id, existing.metric, existing.amount) != (user_id, metric, amount):
        raise IdempotencyKeyReused(key, existing.reservation_id)
    metrics.RESERVATIONS.labels("replayed").inc()
    return Reserved(existing, [], "", now_micros())


def commit(
    tenant_id: str,
    reservation_id: str,
    amount: int,
    *,
    sessions: Sessions,
    dispatcher: Dispatcher,
    caller: Principal,
    deadline: Deadline,
) -> Finished:
    """Record `amount` (at most the reserved one) as usage exactly once and free the rest; a retried Commit with
    the same amount answers the same commit."""
    access.tenant(caller, tenant_id)
    validation.reference(tenant_id, "reservation_id", reservation_id, amount)
    with sessions.begin() as session:
        current = entitlements.locked_reservation(session, tenant_id, reservation_id)
        if current is None:
            raise UnknownReservation(tenant_id, reservation_id)
        now_us = now_micros()
        state = current.state_at(now_us)
        if state == rules.COMMITTED:
            if current.committed_amount != amount:
                raise ReservationNotOpen(
                    reservation_id, "committed", f" with amount {current.committed_amount}, not {amount}"
                )
            committed = current
        else:
            if state == rules.EXPIRED:
                raise ReservationExpired(reservation_id)
            if state != rules.OPEN:
                raise ReservationNotOpen(reservation_id, _STATE_NAMES[state])
            if amount > current.amount:
                raise InvalidArgument(FieldViolation("amount", f"must be at most the reserved {current.amount}"))
            event = None
            if amount:
                event = OutboxEvent(
                    rules.event_id_of(reservation_id), tenant_id, current.metric, current.user_id, amount, now_us
                )
            entitlements.finish(
                session,
                reservation_id,
                state=rules.COMMITTED,
                committed=amount,
                now_us=now_us,
                recorded=False,
                event=event,
                commit=True,
            )
            committed = replace(
                current,
                state=rules.COMMITTED,
                committed_amount=amount,
                finish_us=now_us,
                recorded_us=None if amount else now_us,
            )
    if committed.committed_amount and committed.recorded_us is None:
        event = OutboxEvent(
            rules.event_id_of(reservation_id),
            tenant_id,
            committed.metric,
            committed.user_id,
            committed.committed_amount,
            committed.finish_us or now_us,
        )
        if dispatcher.send([event], deadline=deadline):
            committed = replace(committed, recorded_us=now_micros())
    return Finished(committed, now_micros())


def release(tenant_id: str, reservation_id: str, *, sessions: Sessions, caller: Principal) -> Finished:
    """Free a reservation's whole amount; releasing a released or expired one answers it as it is."""
    access.tenant(caller, tenant_id)
    validation.reference(tenant_id, "reservation_id", reservation_id)
    with sessions.begin() as session:
        current = entitlements.get(session, tenant_id, reservation_id, for_update=True)
        if current is None:
            raise UnknownReservation(tenant_id, reservation_id)
        now_us = now_micros()
        state = current.state_at(now_us)
        if state == rules.COMMITTED:
            raise ReservationNotOpen(reservation_id, "committed")
        if state == rules.OPEN:
            entitlements.finish(
                session, reservation_id, state=rules.RELEASED, committed=0, now_us=now_us, recorded=False
            )
            current = replace(current, state=rules.RELEASED, finish_us=now_us)
    return Finished(current, now_us)
