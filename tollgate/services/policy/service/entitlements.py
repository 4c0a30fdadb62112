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

import itertools
import secrets
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import NamedTuple

from tollgate.services.policy import metrics, validation
from tollgate.services.policy.cache import SnapshotCache
from tollgate.services.policy.combiner import Combiner
from tollgate.services.policy.domain import dimensions
from tollgate.services.policy.domain import entitlements as rules
from tollgate.services.policy.domain.entitlements import Balance, Reservation
from tollgate.services.policy.domain.errors import (
    IdempotencyKeyReused,
    NoQuota,
    ReservationExpired,
    ReservationNotOpen,
    UnknownReservation,
)
from tollgate.services.policy.domain.model import LimitKind, QuotaLimit, QuotaScope, Snapshot
from tollgate.services.policy.domain.modes import Mode, Resolution
from tollgate.services.policy.domain.notifications import threshold
from tollgate.services.policy.domain.quotas import applies, period_bounds, quota_caps
from tollgate.services.policy.domain.usage import OutboxEvent, QuotaUsage
from tollgate.services.policy.repository import Connection, Connections, Transactions, entitlements
from tollgate.services.policy.service import access, notifications
from tollgate.services.policy.service.notifications import Notices
from tollgate.services.policy.service.outbox import Dispatcher
from tollgate.services.policy.usage_port import Deadline, UsagePort
from tollgate.shared.clock import now_micros
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import FieldViolation, InvalidArgument, TollgateError

_STATE_NAMES = {rules.OPEN: "open", rules.COMMITTED: "committed", rules.RELEASED: "released", rules.EXPIRED: "expired"}


@dataclass(frozen=True)
class Entitlement:
    has_access: bool
    resolution: Resolution | None
    balances: list[Balance]
    version: int
    answer: int | None = None  # kept and given before (CheckAnswers): a number no other answer has


class _Kept(NamedTuple):
    """An answer of CheckEntitlement and what it was made from: the policy version, Usage's answer (the numbers
    UsagePort.balance_usage gave) with the delivery noted before it, what Policy held, and the first instant after
    which time alone changes it (a period ends, a grant starts, ends or is voided)."""

    version: int
    usage: QuotaUsage
    delivered_before: int
    held: dict[str, entitlements.Held]
    until_us: int
    entitlement: Entitlement


class CheckAnswers:
    """CheckEntitlement's answers by question (tenant, user, feature or metric, dimension values), the most recent
    `most`: a question asked again is given the kept answer when what it is made from is the same, what Policy
    holds read again for every question. Shared by the RPC threads."""

    def __init__(self, most: int = 4096):
        self.most = most
        self._kept: OrderedDict[tuple, _Kept] = OrderedDict()
        self._lock = threading.Lock()
        self._serials = itertools.count(1)

    def given(
        self, question: tuple, version: int, asked: _Asked, held: dict[str, entitlements.Held], now_us: int
    ) -> Entitlement | None:
        """The answer kept of `question` if it was made from these, and `now_us` is before its `until_us`."""
        with self._lock:
            kept = self._kept.get(question)
        if (
            kept is None
            or (kept.version, kept.usage, kept.delivered_before, kept.held)
            != (version, asked.usage, asked.delivered_before, held)
            or now_us >= kept.until_us
        ):
            return None
        return kept.entitlement

    def keep(self, question: tuple, kept: _Kept) -> None:
        with self._lock:
            self._kept.pop(question, None)
            self._kept[question] = kept._replace(entitlement=replace(kept.entitlement, answer=next(self._serials)))
            while len(self._kept) > self.most:
                self._kept.popitem(last=False)


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


def _windows(snapshot: Snapshot, quotas: Sequence[QuotaLimit], now_us: int) -> dict[QuotaLimit, tuple[int, int]]:
    return {q: period_bounds(q.period, now_us, snapshot.subscription) for q in quotas}


def _asked_of(metric: str, quotas, windows, user_id: str, asked: _Asked, key: str = "") -> entitlements.Asked:
    """The question for held() about the metric's quotas (their windows in quota order)."""
    return entitlements.Asked(
        user_id, tuple(windows[q] for q in quotas if q.metric == metric), asked.delivered_before, key
    )


def _balances(
    snapshot: Snapshot,
    quotas: Sequence[QuotaLimit],
    now_us: int,
    asked: _Asked,
    held_by_metric: dict[str, entitlements.Held],
    user_id: str,
) -> tuple[list[Balance], QuotaUsage]:
    """Each quota's balance for `user_id` now: Usage's answer plus what Policy holds that the answer may lack
    (`held`, read for the quotas' windows in quota order); and that usage."""
    windows = _windows(snapshot, quotas, now_us)
    window_of: dict[QuotaLimit, int] = {}  # the quota's window in held()'s question: its place among its metric's
    for metric in held_by_metric:
        window_of.update((q, n) for n, q in enumerate(q for q in quotas if q.metric == metric))
    used, user_used, balances = dict(asked.usage.used), dict(asked.usage.user_used), []
    for quota in quotas:
        held = held_by_metric[quota.metric]
        mine = 1 if quota.scope == QuotaScope.USER else 0
        from_usage = (user_used if mine else used).get(quota.usage_key, 0)
        balances.append(
            rules.balance_of(
                quota,
                windows[quota],
                snapshot.grants,
                used=from_usage + held.waiting_in(quota.filters, window_of[quota])[mine],
                reserved=held.reserved_in(quota.filters)[mine],
                at_us=now_us,
                user_id=user_id,
            )
        )
    for quota, balance in zip(quotas, balances):
        (user_used if quota.scope == QuotaScope.USER else used)[quota.usage_key] = balance.used
    return balances, QuotaUsage(used, user_used=user_used)


def check_entitlement(
    tenant_id: str,
    user_id: str,
    feature_id: str,
    metric: str,
    *,
    cache: SnapshotCache,
    transactions: Transactions,
    connections: Connections,
    usage: UsagePort,
    caller: Principal,
    deadline: Deadline,
    notices: Notices | None = None,
    dimension_values: Mapping[str, str] | None = None,
    answers: CheckAnswers | None = None,
    reads: HeldReads | None = None,
) -> Entitlement:
    """The user's balances of the feature's (or metric's) quotas and, with a feature, its mode; with
    `dimension_values`, only the quotas whose filters count such usage. Read-only but for the threshold crossings
    it observes (usage recorded straight into Usage), which it stores. With `answers`, a question asked again whose
    policy, Usage's answer and held amounts are the same as when it was last answered, before a period ends or a
    grant changes, is given that answer (its crossings were stored then). With `reads`, the questions asking what
    Policy holds of the same quotas at once share one read (HeldReads)."""
    access.tenant(caller, tenant_id)
    given = dimension_values or {}
    validation.check_entitlement(tenant_id, user_id, feature_id, metric, given)
    snapshot = cache.get(tenant_id)
    if feature_id:
        snapshot.feature(feature_id)  # NOT_FOUND before anything is read
    plan_quotas = snapshot.plan.quotas if snapshot.plan else ()
    stored = dimensions.canonical(given)
    relevant = [
        q
        for q in plan_quotas
        if (applies(q, snapshot, feature_id) if feature_id else q.metric == metric)
        and (not stored or dimensions.matches(q.filters, stored))
    ]
    shown = [q for q in relevant if not metric or q.metric == metric]
    asked = _ask_usage(snapshot, relevant, user_id, usage=usage, deadline=deadline, connections=connections)
    now_us, windows, held = _held_now(snapshot, relevant, user_id, asked, reads or HeldReads(), connections)
    question = (tenant_id, user_id, feature_id, metric, stored)
    if answers is not None:
        given_before = answers.given(question, snapshot.version, asked, held, now_us)
        if given_before is not None:
            return given_before
    balances, used = _balances(snapshot, relevant, now_us, asked, held, user_id)
    noticed = False
    if notifications.shown(balances, tenant_id, user_id, "CheckEntitlement"):
        with transactions.begin() as connection:
            noticed = notifications.record(connection, balances, tenant_id, user_id, "CheckEntitlement", now_us)
    if noticed and notices is not None:
        notices.wake()
    resolution = None
    if feature_id:
        resolution = snapshot.resolve(
            user_id, feature_id, Mode.AUTONOMOUS, quota_caps(snapshot, feature_id, used, now_us, user_id)
        )
    chosen = rules.decide([b for q, b in zip(relevant, balances) if q in shown])
    spent = any(b.hard and b.balance <= 0 for b in chosen)
    has_access = not spent and (resolution is None or resolution.effective > Mode.OFF)
    found = Entitlement(has_access, resolution, chosen, snapshot.version)
    if answers is not None:
        until_us = _changes_after(snapshot, windows.values(), now_us)
        answers.keep(question, _Kept(snapshot.version, asked.usage, asked.delivered_before, held, until_us, found))
    return found


class HeldReads:
    """What Policy holds, read once for the CheckEntitlements that ask the same question at the same time (flat
    combining, combiner.py): a call waits for a read that starts after it arrived, so each answer is as exact as a
    read of its own. The question names the user only for a metric one of whose quotas counts per user: calls about
    a tenant's quotas share a read whoever the user is."""

    def __init__(self) -> None:
        self._reads: Combiner[None, tuple[int, dict[str, entitlements.Held]]] = Combiner()

    def read(
        self, connections: Connections, tenant_id: str, questions: dict[str, entitlements.Asked]
    ) -> tuple[int, dict[str, entitlements.Held]]:
        """(the instant of the read, what Policy held then of each metric for its question)."""

        def read_once(calls: int) -> tuple[int, dict[str, entitlements.Held]]:
            with connections.connect() as connection:
                now_us = now_micros()
                found = {
                    metric: entitlements.held(connection, tenant_id, metric, now_us, question)
                    for metric, question in questions.items()
                }
            metrics.CHECK_READS.observe(calls)
            return now_us, found

        return self._reads.shared(_read_key(tenant_id, questions), read_once)

    def callers(self, tenant_id: str, questions: dict[str, entitlements.Asked]) -> int:
        """How many calls are reading or waiting to read these questions now."""
        return self._reads.callers(_read_key(tenant_id, questions))


def _read_key(tenant_id: str, questions: dict[str, entitlements.Asked]) -> tuple:
    return tenant_id, tuple(questions.items())


def _held_now(
    snapshot: Snapshot,
    quotas: Sequence[QuotaLimit],
    user_id: str,
    asked: _Asked,
    reads: HeldReads,
    connections: Connections,
) -> tuple[int, dict[QuotaLimit, tuple[int, int]], dict[str, entitlements.Held]]:
    """(an instant, the quotas' windows then, what Policy held then of each of their metrics): the instant is the
    read's, and the windows asked are those of that instant (asked again in the rare case a period ended between)."""
    per_user = {q.metric for q in quotas if q.scope == QuotaScope.USER}
    now_us = now_micros()
    while True:
        windows = _windows(snapshot, quotas, now_us)
        questions = {
            metric: _asked_of(metric, quotas, windows, user_id if metric in per_user else "", asked)
            for metric in sorted({q.metric for q in quotas})
        }
        read_at, held = reads.read(connections, snapshot.tenant_id, questions)
        if _windows(snapshot, quotas, read_at) == windows:
            return read_at, windows, held
        now_us = read_at


def _changes_after(snapshot: Snapshot, windows, now_us: int) -> int:
    """The first instant after `now_us` at which time alone changes an answer: the end of one of the quotas'
    `windows`, or a grant's start, end or void."""
    instants = [end for _, end in windows]
    for grant in snapshot.grants:
        instants += [at for at in (grant.effective_us, grant.expires_us, grant.void_us) if at is not None]
    return min((at for at in instants if at > now_us), default=now_us + 1)


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
    transactions: Transactions,
    connections: Connections,
    usage: UsagePort,
    caller: Principal,
    deadline: Deadline,
    notices: Notices | None = None,
    combiner: Combiner | None = None,
    dimension_values: Mapping[str, str] | None = None,
) -> Reserved:
    """Hold `amount` of the metric (for usage with `dimension_values`, which the quotas whose filters they match
    count), or refuse naming the hard quota that is short; a retried key answers the same. With a `combiner`, the
    calls waiting for the same metric's lock are decided together (combiner.py)."""
    access.tenant(caller, tenant_id)
    given = dimension_values or {}
    ttl_us = validation.reserve(tenant_id, user_id, metric, amount, ttl_seconds, ttl_nanos, key, given)
    snapshot = cache.get(tenant_id)
    stored = dimensions.canonical(given)
    quotas = [
        q
        for q in (snapshot.plan.quotas if snapshot.plan else ())
        if q.metric == metric and dimensions.matches(q.filters, stored)
    ]
    if not quotas:
        raise NoQuota(tenant_id, metric)
    if stored:  # what the commit's event carries must be what Usage stores: checked against its catalog
        _check_declared(metric, given, usage=usage, deadline=deadline)

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
        return _replay(retried.reservation, user_id, metric, amount, key, stored)
    ask = _Reserve(snapshot, quotas, user_id, amount, ttl_us, key, asked, stored)
    decide = partial(_reserve_together, tenant_id, metric, transactions=transactions, notices=notices)
    return (combiner or Combiner()).run((tenant_id, metric), ask, decide)


def _check_declared(metric: str, given: Mapping[str, str], *, usage: UsagePort, deadline: Deadline) -> None:
    """INVALID_ARGUMENT naming each dimension the metric does not declare in Usage's catalog: Usage would reject the
    commit's event, and the committed amount would never reach it."""
    meter = usage.meter(metric, sorted(given), deadline=deadline)
    declared = meter.dimensions if meter else ()
    undeclared = [name for name in sorted(given) if name not in declared]
    if undeclared:
        raise InvalidArgument(
            [
                FieldViolation(
                    f"dimensions[{name}]", f"is not declared by metric {metric!r} (it declares {list(declared)})"
                )
                for name in undeclared
            ]
        )


@dataclass(frozen=True)
class _Reserve:
    """One Reserve call waiting for its metric's turn (combiner.py)."""

    snapshot: Snapshot
    quotas: Sequence[QuotaLimit]
    user_id: str
    amount: int
    ttl_us: int
    key: str
    asked: _Asked
    dimensions: str  # canonical JSON ('' for none)


def _reserve_together(
    tenant_id: str, metric: str, asks: list[_Reserve], *, transactions: Transactions, notices: Notices | None
) -> list[Reserved | Exception]:
    """Decide the Reserves of one metric in order, each seeing the ones before it: first in one message
    (`_reserve_at_once`), then those it leaves undecided in one transaction here (in arrival order, after the
    others: every decision is taken under the lock on what it reads, so the order within a batch is free).

    The lock and each call's read after it go in one round trip, so the decision's instant is taken before: an
    expiry in between still counts as held, which can only refuse, never overshoot. A key held before (or
    earlier in the batch) answers that reservation; only calls with a new key hold anything."""
    outcomes: list[Reserved | Exception | None] = list(_reserve_at_once(tenant_id, metric, asks, transactions))
    undecided = [n for n, outcome in enumerate(outcomes) if outcome is None]
    if undecided:
        late = _reserve_under_lock(tenant_id, metric, [asks[n] for n in undecided], transactions, notices)
        for n, outcome in zip(undecided, late):
            outcomes[n] = outcome
    metrics.RESERVE_BATCHES.observe(len(asks))
    decided = [o for o in outcomes if o is not None]
    assert len(decided) == len(asks), "every ask is decided by one message or under the lock"
    return decided


def _counted(outcomes: Sequence[Reserved | Exception | None], reserved: int) -> None:
    """Count `reserved` new reservations and the refusals among `outcomes` (replays are counted by _replay)."""
    refused = sum(1 for o in outcomes if isinstance(o, Reserved) and o.refusal)
    for outcome, count in {"refused": refused, "reserved": reserved}.items():
        if count:  # a label appears once used
            metrics.RESERVATIONS.labels(outcome).inc(count)


def _reserve_under_lock(
    tenant_id: str, metric: str, asks: list[_Reserve], transactions: Transactions, notices: Notices | None
) -> list[Reserved | Exception]:
    """The asks decided in one transaction, in order, from what Policy held once the lock was taken."""
    outcomes: list[Reserved | Exception] = []
    with transactions.begin() as connection:
        now_us = now_micros()
        windows = [_windows(ask.snapshot, ask.quotas, now_us) for ask in asks]
        questions = [
            _asked_of(metric, ask.quotas, window, ask.user_id, ask.asked, ask.key) for ask, window in zip(asks, windows)
        ]
        helds = entitlements.held_under_lock(connection, tenant_id, metric, now_us, questions)
        taken: dict[str, Reservation] = {}
        granted = defaultdict[str, int](int)  # by dimension values, in this batch
        granted_to = defaultdict[tuple[str, str], int](int)  # by user and dimension values
        stored = False
        for ask, held in zip(asks, helds):
            try:
                earlier = taken.get(ask.key)
                if earlier is None and held.key_taken_by is not None:
                    earlier = entitlements.get(connection, tenant_id, held.key_taken_by)
                    assert earlier is not None  # reservations are never deleted
                if earlier is not None:
                    outcomes.append(_replay(earlier, ask.user_id, metric, ask.amount, ask.key, ask.dimensions))
                    continue
            except IdempotencyKeyReused as error:
                outcomes.append(error)
                continue
            for dims, amount in granted.items():
                held = held.plus(dims, amount, granted_to[(ask.user_id, dims)])
            balances, _ = _balances(ask.snapshot, ask.quotas, now_us, ask.asked, {metric: held}, ask.user_id)
            short = rules.refusal(balances, ask.amount)
            if short is not None:
                outcomes.append(_refused(balances, short, ask.amount, now_us))
                continue
            reservation = _new_reservation(tenant_id, metric, ask, now_us)
            after = [replace(b, reserved=b.reserved + ask.amount) for b in balances]
            # A refusal above stores nothing, crossings included: they are stored by the next Reserve that holds,
            # or the next CheckEntitlement. Commit and Release never raise usage + reserved, so they cross nothing.
            stored = notifications.record(connection, after, tenant_id, ask.user_id, "Reserve", now_us) or stored
            taken[ask.key] = reservation
            granted[ask.dimensions] += ask.amount
            granted_to[(ask.user_id, ask.dimensions)] += ask.amount
            outcomes.append(Reserved(reservation, rules.decide(after), "", now_us))
        entitlements.insert_reservations(connection, list(taken.values()), commit=True)
    _counted(outcomes, len(taken))
    if stored and notices is not None:
        notices.wake()
    return outcomes


def _reserve_at_once(
    tenant_id: str, metric: str, asks: list[_Reserve], transactions: Transactions
) -> list[Reserved | None]:
    """The asks tried in one message (entitlements.reserve_if_room), in order: each statement inserts its
    reservation only within each quota's room (`_rooms`), the bounds of the decision `_reserve_under_lock` takes,
    and what it read under the lock (with the earlier asks' inserts) decides a refusal as that decision would (a
    refusal stores nothing). None for an ask neither is the answer to (a crossing to store, a retried key, quotas
    with filters, or a room Usage's answer alone leaves negative, as past a threshold: it is not sent then), and
    for every ask where nothing can be sent (SQLite, a lock row not seen yet): `_reserve_under_lock` decides those
    afresh."""
    now_us = now_micros()
    tries: list[entitlements.Try] = []
    sent: list[int] = []  # the asks tried, by their place
    for n, ask in enumerate(asks):
        if any(q.filters for q in ask.quotas):  # what they count depends on each held row's dimension values
            continue
        windows = _windows(ask.snapshot, ask.quotas, now_us)
        rooms = _rooms(ask, windows, now_us)
        if any(room.room < 0 for room in rooms):  # the statement could not insert: nothing sent for nothing
            continue
        question = _asked_of(metric, ask.quotas, windows, ask.user_id, ask.asked, ask.key)
        tries.append(entitlements.Try(_new_reservation(tenant_id, metric, ask, now_us), question, rooms))
        sent.append(n)
    outcomes: list[Reserved | None] = [None] * len(asks)
    if not tries or not entitlements.reserves_at_once(transactions, tenant_id, metric):
        return outcomes
    with transactions.begin() as connection:
        found = entitlements.reserve_if_room(connection, tenant_id, metric, now_us, tries)
    for n, one, (held, inserted) in zip(sent, tries, found or ()):
        ask = asks[n]
        if held.key_taken_by is not None:
            continue
        balances, _ = _balances(ask.snapshot, ask.quotas, now_us, ask.asked, {metric: held}, ask.user_id)
        if inserted:
            after = [replace(b, reserved=b.reserved + ask.amount) for b in balances]
            outcomes[n] = Reserved(one.reservation, rules.decide(after), "", now_us)
            continue
        short = rules.refusal(balances, ask.amount)
        if short is not None:
            outcomes[n] = _refused(balances, short, ask.amount, now_us)
    _counted(outcomes, sum(inserted for _, inserted in found or ()))
    return outcomes


def _refused(balances: list[Balance], short: Balance, amount: int, now_us: int) -> Reserved:
    """The answer to a Reserve of `amount` that the hard quota `short` refuses."""
    return Reserved(None, rules.decide(balances), f"{short.detail()}: {amount} asked, {short.balance} left", now_us)


def _rooms(ask: _Reserve, windows: dict[QuotaLimit, tuple[int, int]], now_us: int) -> list[entitlements.Room]:
    """How much may be held for each quota (its place among the metric's quotas is its window in `held`'s
    question) for the reservation to hold and cross none of its thresholds: the consumption after it (usage +
    reservations + the amount) at most the allowance of a hard quota, and below the lowest threshold of one
    that notifies; less Usage's answer and the amount. A soft quota that notifies of nothing bounds nothing."""
    rooms = []
    for window, quota in enumerate(ask.quotas):
        allowed = rules.balance_of(
            quota, windows[quota], ask.snapshot.grants, used=0, reserved=0, at_us=now_us, user_id=ask.user_id
        ).allowed
        ceilings = [allowed] if quota.kind == LimitKind.HARD else []
        if quota.notify_at:
            ceilings.append(min(threshold(allowed, percent) for percent in quota.notify_at) - 1)
        if not ceilings:
            continue
        per_user = quota.scope == QuotaScope.USER
        from_usage = (ask.asked.usage.user_used if per_user else ask.asked.usage.used).get(quota.usage_key, 0)
        rooms.append(entitlements.Room(window, per_user, min(ceilings) - from_usage - ask.amount))
    return rooms


def _new_reservation(tenant_id: str, metric: str, ask: _Reserve, now_us: int) -> Reservation:
    return Reservation(
        f"rsv_{secrets.token_hex(12)}",
        tenant_id,
        ask.user_id,
        metric,
        ask.amount,
        ask.key,
        rules.OPEN,
        now_us,
        now_us + ask.ttl_us,
        dimensions=ask.dimensions,
    )


def _replay(existing: Reservation, user_id: str, metric: str, amount: int, key: str, dims: str) -> Reserved:
    if (existing.user_id, existing.metric, existing.amount, existing.dimensions) != (user_id, metric, amount, dims):
        raise IdempotencyKeyReused(key, existing.reservation_id)
    metrics.RESERVATIONS.labels("replayed").inc()
    return Reserved(existing, [], "", now_micros())


def commit(
    tenant_id: str,
    reservation_id: str,
    amount: int,
    *,
    transactions: Transactions,
    dispatcher: Dispatcher,
    caller: Principal,
    deadline: Deadline,
    combiner: Combiner | None = None,
) -> Finished:
    """Record `amount` (at most the reserved one) as usage exactly once and free the rest; a retried Commit with
    the same amount answers the same commit. With a `combiner`, the tenant's Commits waiting for their turn are
    decided together (combiner.py)."""
    access.tenant(caller, tenant_id)
    validation.reference(tenant_id, "reservation_id", reservation_id, amount)
    decide = partial(_commit_together, tenant_id, transactions=transactions)
    committed, now_us = (combiner or Combiner()).run(tenant_id, (reservation_id, amount), decide)
    if committed.committed_amount and committed.recorded_us is None:
        if dispatcher.send(_usage_event(committed, now_us), deadline=deadline):
            committed = replace(committed, recorded_us=now_micros())
    return Finished(committed, now_micros())


def _commit_together(
    tenant_id: str, asks: list[tuple[str, int]], *, transactions: Transactions
) -> list[tuple[Reservation, int] | Exception]:
    """Decide a tenant's Commits in one transaction, holding the locks of their metrics once, in order: a
    reservation asked twice in the batch is answered the second time as the first left it. In one message where
    the database allows (`_commit_at_once`), else, or when that message met a change it could not foresee, here.

    The metric's lock, not only the reservation's row, because of expiry: a Reserve that found the reservation
    expired (its instant taken before its lock) has let others take its amount, and a Commit that could decide
    meanwhile, at an instant still before the expiry, would add that amount as usage the Reserve never saw.
    Behind the lock, the Commit finds the reservation marked expired by that Reserve, or its outbox row is in that
    Reserve's read; here its instant is also taken after the lock. Release needs no lock: it only frees."""
    at_once = _commit_at_once(tenant_id, asks, transactions)
    if at_once is not None:
        return at_once
    with transactions.begin() as connection:
        current = entitlements.locked_reservations(connection, tenant_id, [rid for rid, _ in asks])
        now_us = now_micros()
        outcomes, committing = _decided(tenant_id, asks, current, now_us)
        finishing = [
            entitlements.Finishing(
                c.reservation_id,
                rules.COMMITTED,
                c.committed_amount,
                _usage_event(c, now_us) if c.committed_amount else None,
            )
            for c in committing
        ]
        entitlements.finish(connection, finishing, now_us=now_us, commit=True)
    return outcomes


def _decided(
    tenant_id: str, asks: list[tuple[str, int]], current: dict[str, Reservation], now_us: int
) -> tuple[list[tuple[Reservation, int] | Exception], list[Reservation]]:
    """Each ask's answer at `now_us`, in order, from `current` (the reservations by id, updated as the batch commits
    them: a reservation asked twice is answered the second time as the first left it); and those it commits."""
    outcomes: list[tuple[Reservation, int] | Exception] = []
    committing: list[Reservation] = []
    for reservation_id, amount in asks:
        try:
            found = current.get(reservation_id)
            if found is None:
                raise UnknownReservation(tenant_id, reservation_id)
            committed = _committed(found, amount, now_us)
        except TollgateError as error:  # this call's own answer; the others' stand
            outcomes.append(error)
            continue
        if committed is not found:
            current[reservation_id] = committed
            committing.append(committed)
        outcomes.append((committed, now_us))
    return outcomes, committing


def _commit_at_once(
    tenant_id: str, asks: list[tuple[str, int]], transactions: Transactions
) -> list[tuple[Reservation, int] | Exception] | None:
    """The asks decided as `_committed` decides them, from the reservations as one message found them before its
    statement committed those still open (entitlements.commit_if_open); None where nothing can be sent (SQLite), or
    where what the statement committed is not what that decision says (a Release or the sweep came between the
    read and the write): `_commit_together` decides again, and answers what this message committed as a retry."""
    if not entitlements.commits_at_once(transactions):
        return None
    now_us = now_micros()
    first = dict(reversed(asks))  # each reservation once, with its first ask's amount
    with transactions.begin() as connection:
        current, done = entitlements.commit_if_open(connection, tenant_id, list(first.items()), now_us)
    outcomes, committing = _decided(tenant_id, asks, current, now_us)
    return outcomes if {c.reservation_id for c in committing} == done else None


def _committed(current: Reservation, amount: int, now_us: int) -> Reservation:
    """The reservation committed with `amount` at `now_us`: `current` itself if it already was, with that amount."""
    state = current.state_at(now_us)
    if state == rules.COMMITTED:
        if current.committed_amount != amount:
            raise ReservationNotOpen(
                current.reservation_id, "committed", f" with amount {current.committed_amount}, not {amount}"
            )
        return current
    if state == rules.EXPIRED:
        raise ReservationExpired(current.reservation_id)
    if state != rules.OPEN:
        raise ReservationNotOpen(current.reservation_id, _STATE_NAMES[state])
    if amount > current.amount:
        raise InvalidArgument(FieldViolation("amount", f"must be at most the reserved {current.amount}"))
    return replace(
        current,
        state=rules.COMMITTED,
        committed_amount=amount,
        finish_us=now_us,
        recorded_us=None if amount else now_us,
    )


def _usage_event(committed: Reservation, now_us: int) -> OutboxEvent:
    """The usage event of a committed reservation, occurring when it was committed (`now_us` for a row that does
    not say): derived from the reservation, so every send of it is the same event."""
    return OutboxEvent(
        rules.event_id_of(committed.reservation_id),
        committed.tenant_id,
        committed.metric,
        committed.user_id,
        committed.committed_amount,
        committed.finish_us or now_us,
        committed.dimensions,
    )


def release(tenant_id: str, reservation_id: str, *, transactions: Transactions, caller: Principal) -> Finished:
    """Free a reservation's whole amount; releasing a released or expired one answers it as it is."""
    access.tenant(caller, tenant_id)
    validation.reference(tenant_id, "reservation_id", reservation_id)
    with transactions.begin() as connection:
        current = entitlements.get(connection, tenant_id, reservation_id, for_update=True)
        if current is None:
            raise UnknownReservation(tenant_id, reservation_id)
        now_us = now_micros()
        state = current.state_at(now_us)
        if state == rules.COMMITTED:
            raise ReservationNotOpen(reservation_id, "committed")
        if state == rules.OPEN:
            entitlements.finish(connection, [entitlements.Finishing(reservation_id, rules.RELEASED, 0)], now_us=now_us)
            current = replace(current, state=rules.RELEASED, finish_us=now_us)
    return Finished(current, now_us)
