"""Pure rules of exactly-once: the three keys of an event, rounds that keep a batch's order, judging."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from tollgate.services.usage.domain.model import Candidate, DedupKey, EventResult, StoredKeys, Verdict

# Keys are tagged with short strings, not DedupKey members: enum hashing is a Python call, and
# a batch hashes thousands of keys.
_KINDS = {"id": DedupKey.EVENT_ID, "key": DedupKey.IDEMPOTENCY_KEY, "corr": DedupKey.CORRELATION}
KEY_NAMES = {"id": "event_id", "key": "idempotency_key", "corr": "(correlation_id, metric, occurred_at)"}


def keys_of(candidate: Candidate) -> list[tuple]:
    """The tenant-scoped keys of an event, tagged by kind; empty optional keys, and the business key of a metric
    that turned it off, are no keys."""
    event = candidate.event
    keys: list[tuple] = [("id", event.event_id)]
    if event.idempotency_key:
        keys.append(("key", event.idempotency_key))
    if event.correlation_id and candidate.business_key:
        keys.append(("corr", event.correlation_id, event.metric, event.occurred_at_us))
    return keys


def plan_round(pending: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """Split pending events into those that can be stored together now and those that must wait.

    An event sharing a key with an earlier pending event waits until that one is judged, so
    collisions inside a batch are judged in order and the first wins.
    """
    if _all_distinct(pending):
        return pending, []  # the usual case, checked fast
    seen: set[tuple] = set()
    now: list[Candidate] = []
    later: list[Candidate] = []
    for candidate in pending:
        keys = keys_of(candidate)
        (later if any(key in seen for key in keys) else now).append(candidate)
        seen.update(keys)
    return now, later


def _all_distinct(pending: list[Candidate]) -> bool:
    events = [candidate.event for candidate in pending]
    for keys in ([e.event_id for e in events], [e.idempotency_key for e in events if e.idempotency_key]):
        if len(set(keys)) != len(keys):
            return False
    business = [(e.correlation_id, e.metric, e.occurred_at_us) for e in events if e.correlation_id]
    if len(set(business)) == len(business):
        return True
    # Rare: a shared business key; it counts only between events whose metric keeps the key.
    business = [
        (c.event.correlation_id, c.event.metric, c.event.occurred_at_us)
        for c in pending
        if c.event.correlation_id and c.business_key
    ]
    return len(set(business)) == len(business)


class StoredIndex:
    """Stored events by each of their keys, to judge events the database refused to insert."""

    def __init__(self, rows: Iterable[StoredKeys]):
        self._by_key: dict[tuple, StoredKeys] = {}
        for row in rows:
            self._by_key[("id", row.event_id)] = row
            if row.idempotency_key is not None:
                self._by_key[("key", row.idempotency_key)] = row
            if row.correlation_id is not None and row.business_key:
                self._by_key[("corr", row.correlation_id, row.metric, row.occurred_at_us)] = row

    def judge(self, candidate: Candidate) -> EventResult | None:
        """DUPLICATE or CONFLICT against the first key that matches, or None when none does."""
        for key in keys_of(candidate):
            row = self._by_key.get(key)
            if row is None:
                continue
            same = row.content_hash == candidate.content_hash
            verdict = Verdict.DUPLICATE if same else Verdict.CONFLICT
            what = "the same content" if same else "different content"
            message = f"event {row.event_id!r} has the same {KEY_NAMES[key[0]]} and {what}; nothing changed"
            return EventResult(
                candidate.index, candidate.event.event_id, verdict, None, message, _KINDS[key[0]], row.event_id
            )
        return None


def accepted(candidate: Candidate) -> EventResult:
    """The ACCEPTED result of a stored candidate."""
    return EventResult(candidate.index, candidate.event.event_id, Verdict.ACCEPTED)


class LookupKeys(NamedTuple):
    """The keys whose stored events may have refused some candidates: to look up, each list in candidate order."""

    event_ids: list[str]
    idempotency_keys: list[str]
    correlation_ids: list[str]  # only of candidates whose metric keeps the business key


def refused(candidates: list[Candidate], inserted: set[str]) -> list[Candidate]:
    """The candidates of a round the database did not insert: some stored event shares a key with each."""
    return [c for c in candidates if c.event.event_id not in inserted]


def lookup_keys(candidates: list[Candidate]) -> LookupKeys:
    """The keys of the candidates to look up among stored events (empty optional keys are no keys)."""
    return LookupKeys(
        [c.event.event_id for c in candidates],
        [c.event.idempotency_key for c in candidates if c.event.idempotency_key],
        [c.event.correlation_id for c in candidates if c.event.correlation_id and c.business_key],
    )


def judge_round(
    candidates: list[Candidate], inserted: set[str], stored: Iterable[StoredKeys]
) -> tuple[list[EventResult], list[Candidate]]:
    """The results of a round's candidates: ACCEPTED when inserted, else DUPLICATE or CONFLICT against the stored
    event sharing a key; and the candidates no stored event matches (it went away meanwhile: a concurrent purge),
    to try again."""
    index = StoredIndex(stored)
    results, unresolved = [], []
    for candidate in candidates:
        result = accepted(candidate) if candidate.event.event_id in inserted else index.judge(candidate)
        if result is None:
            unresolved.append(candidate)
        else:
            results.append(result)
    return results, unresolved
