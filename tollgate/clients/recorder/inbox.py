"""The hand-off between callers and the background thread, and the one place the bound is checked."""

from __future__ import annotations

import threading
from collections import deque


class Inbox:
    """An in-memory queue plus the counts of events held elsewhere, so put() sees the whole backlog."""

    def __init__(self, *, capacity: int, on_disk: int):
        self._lock = threading.Lock()
        self._items: deque = deque()
        self._in_transit = 0  # taken by the background thread, not yet committed to the spool
        self._on_disk = on_disk  # committed to the spool, not yet answered by the server
        self.capacity = capacity
        self.dropped = 0
        self.closed = False
        self.wake = threading.Event()

    def put(self, item) -> bool:
        """Queue an item unless the backlog is at capacity or the recorder is closed; never blocks on I/O."""
        with self._lock:
            if self.closed or len(self._items) + self._in_transit + self._on_disk >= self.capacity:
                self.dropped += 1
                return False
            self._items.append(item)
            first = len(self._items) == 1
        if first:  # only the empty -> non-empty edge wakes the thread: one Event.set per group, not per call
            self.wake.set()
        return True

    def take(self) -> list:
        """Every queued item; they count as in transit until stored() says where they went."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._in_transit = len(items)
        return items

    def stored(self, count: int) -> None:
        """The items in transit are settled: `count` of them are now on disk, the rest were refused."""
        with self._lock:
            self._in_transit = 0
            self._on_disk += count

    def removed(self, count: int) -> None:
        """`count` spooled events were answered and deleted from disk."""
        with self._lock:
            self._on_disk -= count

    def restore(self, items: list) -> None:
        """Put back items the spool could not take, ahead of anything queued since."""
        with self._lock:
            self._items.extendleft(reversed(items))
            self._in_transit = 0

    def close(self) -> None:
        """From now on put() refuses (and counts) every item."""
        with self._lock:
            self.closed = True

    def in_memory(self) -> int:
        with self._lock:
            return len(self._items) + self._in_transit

    def held(self) -> int:
        with self._lock:
            return len(self._items) + self._in_transit + self._on_disk

    def on_disk(self) -> int:
        with self._lock:
            return self._on_disk
