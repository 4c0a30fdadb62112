"""Committed usage on its way to Usage (docs/entitlements.md, "Exactly once").

A Commit writes its usage event to the outbox in the same transaction as the commit itself, then asks
this dispatcher to send it at once; whatever is not sent then (Usage down, slow, Policy killed) is sent by
the background loop, retried with backoff for as long as it takes. The Commits of one tenant that ask while
a send is under way are sent together next (combiner.py): one call to Usage and one transaction marking
their deliveries, however many callers commit at once. Every send of one event carries the
same event_id, derived from the reservation, so Usage stores it once and answers a resend DUPLICATE.
An event leaves the count of what Usage lacks only once Usage holds it (its delivery is then numbered,
and the row deleted an hour later), or refused it for good (logged as an error, deleted): until then it
counts against the balance as usage Usage does not hold yet. A refusal an operator can lift (the metric or a
dimension missing from Usage's catalog, the tenant's dimension combinations at their limit) is not for good:
the event stays and is sent again, backing off, until Usage holds it.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence

from tollgate.services.policy import metrics
from tollgate.services.policy.combiner import Combiner
from tollgate.services.policy.domain.errors import UsageRefused, UsageUnavailable
from tollgate.services.policy.domain.usage import OutboxEvent
from tollgate.services.policy.repository import Transactions, entitlements
from tollgate.services.policy.usage_port import Deadline, UsagePort
from tollgate.shared.clock import now_micros

log = logging.getLogger("tollgate.policy.outbox")
BATCH = 500
MAX_BACKOFF_US = 30_000_000
# Delivered rows are kept this long: far longer than any Reserve takes between noting the latest delivery and
# reading the outbox, which is all they are kept for.
FORGET_AFTER_US = 3_600_000_000


class Dispatcher:
    """Sends the outbox to Usage; `run` is the background loop, `deliver` the commit's own first attempt."""

    def __init__(self, transactions: Transactions, usage: UsagePort, *, interval: float):
        self._transactions, self._usage, self._interval = transactions, usage, interval
        self._commits: Combiner[tuple[OutboxEvent, Deadline], bool] = Combiner()

    def send(self, event: OutboxEvent, *, deadline: Deadline) -> bool:
        """Send a commit's own event now, with those of the tenant's commits waiting beside it (within the
        deadline of the first of them); whether Usage holds it afterwards (if not, it stays for the loop)."""
        return self._commits.run(event.tenant_id, (event, deadline), self._send_commits)

    def _send_commits(self, asked: list[tuple[OutboxEvent, Deadline]]) -> list[bool]:
        held = self._send([event for event, _ in asked], asked[0][1], "commit")
        return [event.event_id in held for event, _ in asked]

    def run(self, stopping: threading.Event) -> None:
        """Until stopping: send what is due, mark expired reservations, sleep."""
        while not stopping.wait(self._interval):
            try:
                self.pass_once()
            except Exception:  # the loop must outlive a lost database connection; the next pass retries
                log.exception("outbox pass failed; retrying in %.1fs", self._interval)

    def pass_once(self) -> int:
        """One pass: every due event sent, expired reservations marked; how many events Usage now holds."""
        now_us = now_micros()
        with self._transactions.begin() as connection:
            events = entitlements.outbox_pass(connection, now_us, now_us - FORGET_AFTER_US, BATCH, commit=True)
        return len(self._send(events, Deadline(), "loop"))

    def _send(self, events: Sequence[OutboxEvent], deadline: Deadline, via: str) -> set[str]:
        by_tenant: dict[str, list[OutboxEvent]] = defaultdict(list)
        for event in events:
            by_tenant[event.tenant_id].append(event)
        held: set[str] = set()
        for tenant_id, batch in by_tenant.items():
            kept: list[tuple[OutboxEvent, str]] = []
            try:
                deliveries = self._usage.record(
                    tenant_id, batch, timeout=deadline.remaining(), fail_fast=via == "commit"
                )
            except UsageUnavailable as error:
                if isinstance(error, UsageRefused):
                    log.error("committed usage of tenant %s not delivered: %s; retrying", tenant_id, error.message)
                self._postpone([(event, error.message) for event in batch])
                continue
            now_us = now_micros()
            with self._transactions.begin() as connection:
                arrived = [event.event_id for event, delivery in zip(batch, deliveries) if delivery.held]
                held.update(arrived)
                for event, delivery in zip(batch, deliveries):
                    if delivery.held:
                        continue
                    if delivery.fixable:
                        kept.append((event, delivery.problem))
                    elif entitlements.drop(connection, event.event_id):
                        # Usage will refuse every resend alike (a metric removed, a conflicting event): keeping it
                        # would hold the balance down for ever, so it is dropped, loudly (once, by whichever send
                        # deleted it).
                        log.error(
                            "usage refused committed event %s of tenant %s for good (%s); dropped from the outbox",
                            event.event_id,
                            tenant_id,
                            delivery.problem,
                        )
                        metrics.OUTBOX_REFUSED.labels("dropped").inc()
                entitlements.delivered(connection, arrived, now_us, commit=True)  # with the COMMIT: one round trip
            for event, problem in kept:
                # The usage happened: it keeps counting against the balance, and is sent again until Usage holds
                # it, once an operator lifts the refusal.
                log.error(
                    "usage refused committed event %s of tenant %s (%s); kept in the outbox and sent again",
                    event.event_id,
                    tenant_id,
                    problem,
                )
                metrics.OUTBOX_REFUSED.labels("kept").inc()
            self._postpone(kept)
            metrics.OUTBOX_SENT.labels(via).inc(len(held))
        return held

    def _postpone(self, events: Sequence[tuple[OutboxEvent, str]]) -> None:
        """Each event sent again later, backing off, with why it was not held."""
        if not events:
            return
        now_us = now_micros()
        with self._transactions.begin() as connection:
            for event, error in events:
                attempts = entitlements.attempts(connection, event.event_id)
                backoff = min(MAX_BACKOFF_US, 100_000 * 2 ** min(attempts, 20))
                entitlements.postpone(connection, event.event_id, now_us + backoff, error)
