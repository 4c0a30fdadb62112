"""Flat combining: the calls of one key queue their items, and whichever call holds the key's turn decides
every item queued so far in one go, for all of them.

Reserve uses it per (tenant, metric): the Reserves waiting for one hot limit are then decided in one
transaction, holding the limit's lock row once, instead of queueing on that row one transaction each. A lone
call is a batch of one, decided at once as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


@dataclass
class _Slot(Generic[Item]):
    item: Item
    done: bool = False
    outcome: object = None


@dataclass
class _Turn:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[_Slot] = field(default_factory=list)
    callers: int = 0


class Combiner(Generic[Item, Outcome]):
    """`run(key, item, decide)`: the item's outcome, decided by `decide` in a batch of at most `most` items of
    the same key (in arrival order), on whichever caller's thread got the key's turn first. `decide` answers one
    outcome per item: a value, or an exception for that item alone; an exception it raises fails the batch."""

    def __init__(self, most: int = 64):
        self._most = most
        self._guard = threading.Lock()
        self._turns: dict[Hashable, _Turn] = {}

    def run(
        self, key: Hashable, item: Item, decide: Callable[[list[Item]], Sequence[Outcome | BaseException]]
    ) -> Outcome:
        slot = _Slot(item)
        with self._guard:
            turn = self._turns.setdefault(key, _Turn())
            turn.queue.append(slot)
            turn.callers += 1
        try:
            with turn.lock:
                while not slot.done:  # a batch is at most `most` items: this one may be in a later one
                    with self._guard:
                        batch, turn.queue = turn.queue[: self._most], turn.queue[self._most :]
                    self._decide(batch, decide)
        finally:
            with self._guard:
                turn.callers -= 1
                if not turn.callers:
                    del self._turns[key]
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]

    def shared(self, key: Hashable, make: Callable[[int], Outcome]) -> Outcome:
        """One outcome for every call of `key` queued together: `make(calls)`, made once per batch by a call that
        arrived after each of them (so none is answered by work begun before it asked)."""
        # The calls bring no item of their own: None stands for each (the combiner's Item is None for such keys).
        return self.run(key, None, lambda items: [make(len(items))] * len(items))  # type: ignore[arg-type]

    def callers(self, key: Hashable) -> int:
        """How many calls of `key` hold or wait for its turn now."""
        with self._guard:
            turn = self._turns.get(key)
            return turn.callers if turn else 0

    @staticmethod
    def _decide(batch: list[_Slot], decide: Callable[[list], Sequence]) -> None:
        try:
            outcomes = list(decide([slot.item for slot in batch]))
        except BaseException as error:  # the batch's transaction failed: every caller in it hears why
            outcomes = [error] * len(batch)
        for slot, outcome in zip(batch, outcomes, strict=True):
            slot.outcome, slot.done = outcome, True
