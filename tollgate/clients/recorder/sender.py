"""The background thread: moves queued events to the spool, sends spooled batches, settles verdicts."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from dataclasses import dataclass

import grpc

from tollgate.clients.recorder import events
from tollgate.clients.recorder.inbox import Inbox
from tollgate.clients.recorder.spool import Spool
from tollgate.usage.v1 import usage_pb2

log = logging.getLogger("tollgate.recorder.sender")

RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
# The credential itself is refused: no later attempt of this recorder can succeed, so it stops sending.
REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
IDLE_TICK = 0.25  # longest sleep: bounds how late a drop is reported
REPORT_EVERY = 5.0  # at most one "dropped" (or "merged") warning per this many seconds (plus the first)


def backoff_delay(attempt: int, *, base: float, cap: float, rng=random.random) -> float:
    """Equal jitter: half of min(cap, base·2^(attempt-1)) fixed, half random, so delays grow yet spread out."""
    step = min(cap, base * 2 ** min(attempt - 1, 60))
    return step / 2 + rng() * step / 2


@dataclass(frozen=True)
class SendConfig:
    """How the thread batches and retries."""

    tenant_id: str
    source_service: str
    metadata: tuple[tuple[str, str], ...]
    batch_size: int
    max_batch_age: float
    deadline: float
    backoff_base: float
    backoff_cap: float


class Sender(threading.Thread):
    """One RecordEvents call in flight at a time, as a future, so spooling never waits for the network."""

    def __init__(self, *, spool: Spool, stub, inbox: Inbox, config: SendConfig):
        super().__init__(name="tollgate-recorder", daemon=True)
        self.spool, self.stub, self.inbox, self.config = spool, stub, inbox, config
        self.changed = threading.Condition()
        self.counts = dict(sent=0, duplicate=0, conflict=0, merged=0, rejected=0, retries=0, errors=0)
        self.flushing = 0
        self.stopping = False
        self.refused: str | None = None  # why the server refused the credential; nothing is sent from then on
        self._inflight: tuple[list[int], usage_pb2.RecordEventsRequest, grpc.Future] | None = None
        self._attempt = 0
        self._retry_at = 0.0
        self._batch_since = None if inbox.on_disk() == 0 else float("-inf")  # leftovers go at once
        self._dropped_reported = 0
        self._drop_reported_at = float("-inf")
        self._merged_reported = 0
        self._merge_reported_at = float("-inf")
        self._merge_example = ""

    def run(self) -> None:
        try:
            while True:
                self.inbox.wake.wait(self._sleep_for())
                self.inbox.wake.clear()
                if not self._step():
                    break
                with self.changed:
                    self.changed.notify_all()
        finally:
            self._shut()

    def _step(self) -> bool:
        """One turn of the loop; False once stopping has been honoured."""
        try:
            self._persist()
            self._collect()
            if self.stopping:
                return False
            self._send()
        except sqlite3.Error as error:
            # A full disk or a locked file must not kill the thread: the events stay queued in memory.
            log.error("usage recorder spool error: %s; retrying in %.1fs", error, self.config.backoff_cap)
            self._retry_at = time.monotonic() + self.config.backoff_cap
            time.sleep(IDLE_TICK)
        self._report_drops()
        self._report_merges()
        return True

    def _sleep_for(self) -> float:
        now = time.monotonic()
        if self._inflight is not None or self.stopping or self.refused:
            return IDLE_TICK
        if self._retry_at > now:
            return min(IDLE_TICK, self._retry_at - now)
        if self._batch_since is not None and not self.flushing:
            return max(0.0, min(IDLE_TICK, self._batch_since + self.config.max_batch_age - now))
        return 0.0 if self._batch_since is not None else IDLE_TICK

    def _persist(self) -> None:
        """Serialize what record() queued and commit it to the spool in one transaction."""
        items = self.inbox.take()
        if not items:
            return
        rows = []
        for pending in items:
            try:
                rows.append(events.to_payload(pending, source_service=self.config.source_service))
            except Exception as error:  # noqa: BLE001 - one caller's value must not stop the thread sending them all
                self.counts["rejected"] += 1
                log.warning("usage event refused before sending: metric=%r: %s", pending.metric, error)
        if rows:
            try:
                self.spool.append(rows)
            except sqlite3.Error:
                self.inbox.restore(items)
                raise
            if self._batch_since is None:
                self._batch_since = time.monotonic()
        self.inbox.stored(len(rows))

    def _send(self) -> None:
        now = time.monotonic()
        if self._inflight is not None or now < self._retry_at or self._batch_since is None or self.refused:
            return
        rows = self.spool.peek(self.config.batch_size)
        if not rows:
            self._batch_since = None
            return
        young = now - self._batch_since < self.config.max_batch_age
        if len(rows) < self.config.batch_size and young and not self.flushing:
            return
        request = events.to_request(self.config.tenant_id, [payload for _seq, payload in rows])
        future = self.stub.RecordEvents.future(request, timeout=self.config.deadline, metadata=self.config.metadata)
        future.add_done_callback(lambda _f: self.inbox.wake.set())
        self._inflight = ([seq for seq, _payload in rows], request, future)

    def _collect(self) -> None:
        if self._inflight is None or not self._inflight[2].done():
            return
        seqs, request, future = self._inflight
        self._inflight = None
        try:
            response = future.result()
        except grpc.RpcError as error:
            self._failed(error.code(), error.details(), len(seqs))
            return
        except grpc.FutureCancelledError:
            return
        if self._attempt:
            log.info("usage service answered again after %d failed attempts", self._attempt)
        self._attempt = 0
        answered = [seqs[r.index] for r in response.results if self._settle(r, request)]
        self.spool.delete(answered)
        self.inbox.removed(len(answered))
        if self.inbox.on_disk() == 0 and self.inbox.in_memory() == 0:
            self._batch_since = None

    def _settle(self, result, request) -> bool:
        """Count one verdict; True when the event is done with (delivered, or refused for good)."""
        if not 0 <= result.index < len(request.events):
            return False
        verdict = result.verdict
        event = request.events[result.index]
        if verdict == usage_pb2.VERDICT_ACCEPTED:
            self.counts["sent"] += 1
        elif verdict in (usage_pb2.VERDICT_DUPLICATE, usage_pb2.VERDICT_CONFLICT) and result.existing_event_id not in (
            "",
            event.event_id,
        ):
            # Matched another event through a shared key: not a redelivery, a unit that will not count alone.
            self.counts["merged"] += 1
            self._merge_example = (
                f"event {event.event_id} into {result.existing_event_id} by "
                f"{usage_pb2.DedupKey.Name(result.dedup_key)}: {result.message}"
            )
        elif verdict == usage_pb2.VERDICT_DUPLICATE:
            self.counts["duplicate"] += 1
        elif verdict in (usage_pb2.VERDICT_CONFLICT, usage_pb2.VERDICT_REJECTED):
            name = "conflict" if verdict == usage_pb2.VERDICT_CONFLICT else "rejected"
            self.counts[name] += 1
            log.warning(
                "usage event %s %s: metric=%r reason=%s: %s",
                event.event_id,
                name,
                event.metric,
                usage_pb2.RejectReason.Name(result.reason),
                result.message,
            )
        else:
            return False  # no verdict we know: keep it spooled and send it again
        return True

    def _failed(self, code: grpc.StatusCode, details: str, size: int) -> None:
        self._attempt += 1
        if code in REFUSED:
            # Retrying cannot help and dropping would lose accepted events: stop sending, keep them spooled for a
            # recorder with a valid credential, and say so once.
            self.counts["errors"] += 1
            self.refused = f"{code.name}: {details}"
            log.error(
                "RecordEvents refused the credential (%s); the recorder stops sending: %d events stay spooled "
                "for a recorder with a valid token",
                self.refused,
                self.inbox.held(),
            )
            return
        if code in RETRYABLE:
            self.counts["retries"] += 1
            delay = backoff_delay(self._attempt, base=self.config.backoff_base, cap=self.config.backoff_cap)
            level = logging.WARNING if self._attempt == 1 else logging.DEBUG
            log.log(
                level,
                "RecordEvents failed (%s: %s); %d events stay spooled; retry %d in %.3fs",
                code.name,
                details,
                size,
                self._attempt,
                delay,
            )
        else:
            # The whole batch was refused (bad token, wrong tenant, …): retrying soon cannot help, and
            # dropping would lose accepted events, so keep them spooled and wait the longest step.
            self.counts["errors"] += 1
            delay = self.config.backoff_cap
            log.error(
                "RecordEvents refused the batch (%s: %s); %d events stay spooled; next try in %.1fs",
                code.name,
                details,
                size,
                delay,
            )
        self._retry_at = time.monotonic() + delay

    def _report_drops(self) -> None:
        dropped, now = self.inbox.dropped, time.monotonic()
        if dropped > self._dropped_reported and now - self._drop_reported_at >= REPORT_EVERY:
            log.warning(
                "usage recorder dropped %d events: spool full (%d held, max_spool_events=%d)",
                dropped - self._dropped_reported,
                self.inbox.held(),
                self.inbox.capacity,
            )
            self._dropped_reported, self._drop_reported_at = dropped, now

    def _report_merges(self) -> None:
        merged, now = self.counts["merged"], time.monotonic()
        if merged > self._merged_reported and now - self._merge_reported_at >= REPORT_EVERY:
            log.warning(
                "usage recorder: %d events were merged into other events through a shared key and do not "
                "count on their own (last: %s); give distinct units distinct correlation_ids "
                '(docs/recorder.md, "Keys")',
                merged - self._merged_reported,
                self._merge_example,
            )
            self._merged_reported, self._merge_reported_at = merged, now

    def _shut(self) -> None:
        if self._inflight is not None:
            self._inflight[2].cancel()  # the server may have stored it: the next recorder gets DUPLICATE
        self._drop_reported_at = self._merge_reported_at = float("-inf")
        self._report_drops()
        self._report_merges()
        with self.changed:
            self.changed.notify_all()
