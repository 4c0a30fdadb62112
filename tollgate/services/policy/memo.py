"""A small thread-safe memo whose entries expire: usage totals Policy reuses for a few seconds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

V = TypeVar("V")

MAX_ENTRIES = 100_000  # bounded memory: past this the memo starts over (entries are cheap to refetch)
log = logging.getLogger("tollgate.policy.memo")


class Memo(Generic[V]):
    """Values by key, each fresh for `ttl` seconds after it was computed; ttl 0 reuses nothing.

    With `stale_for` > 0 an expired value is still served for that long while one background
    refresh per key computes the next (stale-while-revalidate): a key in steady use never makes a
    caller wait for the computation again.
    """

    def __init__(self, ttl: float, *, stale_for: float = 0.0):
        self._ttl, self._stale_for = ttl, stale_for
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._refreshing: set[Hashable] = set()
        self._lock = threading.Lock()
        self._refresher = ThreadPoolExecutor(2, thread_name_prefix="memo-refresh") if stale_for > 0 else None

    def get(self, key: Hashable, compute: Callable[[], V], refresh: Callable[[], V] | None = None) -> V:
        """The value of `key`, computing it (outside the lock) when missing or too old.

        `refresh` computes it in the background (default: `compute`). A failure of `compute`
        propagates and stores nothing, so the next call asks again.
        """
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(key)
        if found and self._ttl > 0:
            age = now - found[0]
            if age < self._ttl:
                return found[1]
            if self._refresher is not None and age < self._ttl + self._stale_for:
                self._refresh_soon(self._refresher, key, refresh or compute)
                return found[1]
        value = compute()
        self._store(key, now, value)
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Keep `value` for `key` as if computed now (a caller that had to ask afresh)."""
        self._store(key, time.monotonic(), value)

    def _store(self, key: Hashable, at: float, value: V) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (at, value)

    def _refresh_soon(self, refresher: ThreadPoolExecutor, key: Hashable, compute: Callable[[], V]) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def run() -> None:
            started = time.monotonic()
            try:
                self._store(key, started, compute())
            except Exception:  # noqa: BLE001 - the stale value stays until it expires; then callers ask inline
                log.debug("background refresh failed", exc_info=True)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        refresher.submit(run)
