"""The audit chain's arithmetic (docs/policy.md, "Audit chain"): canonical JSON, digests, link hashes,
verification. Pure.

Both services keep a chain of their own (Policy's admin writes, Usage's); the arithmetic is one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

ZERO_HASH = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    """One link: what changed, by whom, and the hash that ties it to the link before."""

    sequence: int
    time_us: int
    actor: str
    action: str
    target: str
    tenant_id: str
    change: str  # canonical JSON of the change
    change_digest: str
    previous_hash: str
    hash: str


@dataclass(frozen=True)
class Break:
    """The first link that does not check, and why."""

    sequence: int
    problem: str


@dataclass(frozen=True)
class Verification:
    """The outcome of walking a whole chain."""

    ok: bool
    records_checked: int
    first_break: Break | None


def canonical_json(value) -> str:
    """Sorted keys, no spaces, UTF-8 kept: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def link_hash(
    sequence: int,
    time_us: int,
    actor: str,
    action: str,
    target: str,
    tenant_id: str,
    change_digest: str,
    previous_hash: str,
) -> str:
    """SHA-256 over the record's canonical fields and the previous hash."""
    return sha256(canonical_json([sequence, time_us, actor, action, target, tenant_id, change_digest, previous_hash]))


def new_record(
    *,
    sequence: int,
    time_us: int,
    actor: str,
    action: str,
    target: str,
    tenant_id: str,
    change: dict,
    previous_hash: str,
) -> AuditRecord:
    """The record that follows a link whose hash is `previous_hash`."""
    text = canonical_json(change)
    digest = sha256(text)
    own = link_hash(sequence, time_us, actor, action, target, tenant_id, digest, previous_hash)
    return AuditRecord(sequence, time_us, actor, action, target, tenant_id, text, digest, previous_hash, own)


def check_link(record: AuditRecord, expected_sequence: int, expected_previous: str) -> Break | None:
    """Why `record` does not follow the link before it, or None when it does."""
    if record.sequence != expected_sequence:
        return Break(expected_sequence, f"record {expected_sequence} is missing (next is {record.sequence})")
    if record.previous_hash != expected_previous:
        return Break(record.sequence, "previous_hash does not match the hash of the record before")
    if sha256(record.change) != record.change_digest:
        return Break(record.sequence, "change_digest does not match the stored change")
    recomputed = link_hash(
        record.sequence,
        record.time_us,
        record.actor,
        record.action,
        record.target,
        record.tenant_id,
        record.change_digest,
        record.previous_hash,
    )
    if recomputed != record.hash:
        return Break(record.sequence, "hash does not match the record's fields")
    return None


def check_links(
    records: Iterable[AuditRecord], *, after_sequence: int, after_hash: str
) -> tuple[int, str, Break | None]:
    """Walk a page of records following (after_sequence, after_hash): (last sequence, last hash, first break)."""
    sequence, previous = after_sequence, after_hash
    for record in records:
        broken = check_link(record, sequence + 1, previous)
        if broken is not None:
            return sequence, previous, broken
        sequence, previous = record.sequence, record.hash
    return sequence, previous, None


def head_break(sequence: int, last_hash: str, head_sequence: int, head_hash: str) -> Break | None:
    """Deleting the newest records leaves a valid chain; the head row still knows how long it was."""
    if head_sequence > sequence:
        return Break(sequence + 1, f"record {sequence + 1} is missing (the chain head is at {head_sequence})")
    if head_sequence < sequence:
        return Break(head_sequence + 1, f"record {head_sequence + 1} lies beyond the chain head")
    if head_hash != last_hash:
        return Break(sequence, "the chain head's hash differs from the last record's hash")
    return None
