"""source_hash, the digest of the events a bucket covers, as stored and shown. Pure.

It is the same function of the events on both backends: 16 lower-case hex digits (zero-padded) of

    ( sum over the bucket's events e of H(utf8(e.event_id + ":" + e.content_hash)) ) mod 2**64

where H(b) is PostgreSQL's hashtextextended(b, 0) read as an unsigned 64-bit integer (SQLite's rollup
computes it in Python: repository/sqlite/source_hash.py). A bucket without events has EMPTY. The sum is a
digest of the set (event ids are unique per tenant), needs no sort, and composes: a day's is the sum of
its hours', a week's of its days', so one read of the events serves the four periods. It detects change,
not tampering (64 bits, not a cryptographic hash).
"""

from __future__ import annotations

EMPTY = "0000000000000000"


def shown(total: int) -> str:
    """The source_hash of a sum of event hashes (of any size, or negative: it is taken mod 2**64)."""
    return format(total % 2**64, "016x")


def value(source_hash: str) -> int:
    """The sum mod 2**64 a source_hash shows, to add to others."""
    return int(source_hash, 16)
