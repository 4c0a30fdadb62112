"""UsageRecorder: record usage from a hot path without ever breaking it or losing what it accepted."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import grpc

from tollgate.clients.recorder.counters import Counters
from tollgate.clients.recorder.events import Pending
from tollgate.clients.recorder.inbox import Inbox
from tollgate.clients.recorder.sender import SendConfig, Sender
from tollgate.clients.recorder.spool import Spool
from tollgate.usage.v1 import usage_pb2_grpc

log = logging.getLogger("tollgate.recorder.recorder")


class UsageRecorder:
    """Fire-and-forget usage recording through a durable SQLite spool; see docs/recorder.md."""

    def __init__(
        self,
        target: str,
        token: str,
        tenant_id: str,
        spool_path: str,
        *,
        batch_size: int = 500,
        max_batch_age: float = 0.5,
        max_spool_events: int = 100_000,
        deadline: float = 5.0,
        source_service: str = "tollgate-recorder",
        backoff_base: float = 0.1,
        backoff_cap: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
    ):
        if not 1 <= batch_size <= 1000:
            raise ValueError(f"batch_size must be 1 to 1000 (RecordEvents' limit), got {batch_size}")
        self._spool = Spool(spool_path, tenant_id=tenant_id)
        self._inbox = Inbox(capacity=max_spool_events, on_disk=self._spool.count())
        # gRPC's own reconnect backoff (up to 120 s by default) would keep failing calls fast long after
        # the server is back; bound it by ours so recovery follows the recorder's backoff.
        options = [
            ("grpc.initial_reconnect_backoff_ms", max(1, int(backoff_base * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(1, int(backoff_base * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(backoff_cap * 1000))),
        ]
        self._channel = (
            grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
        )
        config = SendConfig(
            tenant_id=tenant_id,
            source_service=source_service,
            metadata=(("authorization", f"Bearer {token}"),),
            batch_size=batch_size,
            max_batch_age=max_batch_age,
            deadline=deadline,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        self._sender = Sender(
            spool=self._spool, stub=usage_pb2_grpc.UsageServiceStub(self._channel), inbox=self._inbox, config=config
        )
        self._closed_logged = False
        self._sender.start()

    def record(
        self,
        metric: str,
        quantity: int,
        *,
        occurred_at=None,
        actor_id: str = "",
        correlation_id: str = "",
        idempotency_key: str = "",
        metadata: dict | None = None,
        event_id: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> bool:
        """Queue one event; True when accepted (it will be delivered), False when dropped. Never raises.

        `dimensions` are the event's values of its metric's declared dimensions (`{"model": "gpt-4o"}`); they are
        copied here, so the caller may reuse its mapping, and spooled with the event.
        """
        try:
            accepted = self._inbox.put(
                Pending(
                    metric,
                    quantity,
                    time.time() if occurred_at is None else occurred_at,
                    actor_id,
                    correlation_id,
                    idempotency_key,
                    metadata,
                    event_id,
                    dict(dimensions) if dimensions else None,
                )
            )
        except Exception:  # noqa: BLE001 - the contract: recording never breaks the caller's business logic
            self._inbox.dropped += 1
            return False
        if not accepted and self._inbox.closed and not self._closed_logged:
            self._closed_logged = True  # the thread is gone, so this one line is said on the caller's thread
            log.warning("usage recorder is closed: record() drops events (%d so far)", self._inbox.dropped)
        return accepted

    def persist(self, timeout: float = 5.0) -> bool:
        """Wait until every event accepted so far is committed to the spool file (survives a crash)."""
        return self._wait(lambda: self._inbox.in_memory() == 0, timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Send everything now and wait until the server has answered for all of it, or timeout.

        Once the server has refused the credential nothing more is sent: then it waits only until every event
        is in the spool, and answers False.
        """
        with self._sender.changed:
            self._sender.flushing += 1
        self._inbox.wake.set()
        try:
            self._wait(
                lambda: self._inbox.held() == 0 or (self._sender.refused is not None and self._inbox.in_memory() == 0),
                timeout,
            )
            return self._inbox.held() == 0
        finally:
            with self._sender.changed:
                self._sender.flushing -= 1

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, stop the thread and release the file; whatever is unanswered stays spooled for next time."""
        if self._inbox.closed:
            return self._inbox.held() == 0
        flushed = self.flush(timeout)
        self._inbox.close()
        self._sender.stopping = True
        self._inbox.wake.set()
        self._sender.join(timeout=max(1.0, timeout))
        self._channel.close()
        if not self._sender.is_alive():
            self._spool.close()
        return flushed

    def counters(self) -> Counters:
        """A snapshot of the counters."""
        counts = dict(self._sender.counts)
        return Counters(spooled=self._inbox.held(), dropped=self._inbox.dropped, **counts)

    def __enter__(self) -> UsageRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wait(self, done, timeout: float) -> bool:
        if not self._sender.is_alive():
            return done()
        with self._sender.changed:
            return self._sender.changed.wait_for(done, timeout)
