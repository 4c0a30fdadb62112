"""source_hash's per-event hash in Python: PostgreSQL's hashtextextended(text, 0), for SQLite.

Bob Jenkins' lookup3 hash_bytes_extended with seed 0, as PostgreSQL computes it on a little-endian
machine; tests/usage/test_usage_rollups.py holds it to PostgreSQL's. The definition of source_hash is in
repository/rollups.py; PostgreSQL computes it in SQL, so only SQLite's rollup (rollup_serial.py) needs this.
"""

from __future__ import annotations

import struct

_M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    for x, y, z in ((4, 6, 8), (16, 19, 4)):
        a = ((a - c) & _M32) ^ _rot(c, x)
        c = (c + b) & _M32
        b = ((b - a) & _M32) ^ _rot(a, y)
        a = (a + c) & _M32
        c = ((c - b) & _M32) ^ _rot(b, z)
        b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    for x, y, z in ((14, 11, 25), (16, 4, 14)):
        c = ((c ^ b) - _rot(b, x)) & _M32
        a = ((a ^ c) - _rot(c, y)) & _M32
        b = ((b ^ a) - _rot(a, z)) & _M32
    c = ((c ^ b) - _rot(b, 24)) & _M32
    return a, b, c


def pg_hash_text(data: bytes) -> int:
    """PostgreSQL's hashtextextended(data, 0) as an unsigned 64-bit integer (hash_bytes_extended, little-endian)."""
    a = b = c = (0x9E3779B9 + len(data) + 3923095) & _M32
    whole = len(data) - len(data) % 12
    words = struct.unpack_from(f"<{whole // 4}I", data)
    for i in range(0, len(words), 3):
        a, b, c = _mix((a + words[i]) & _M32, (b + words[i + 1]) & _M32, (c + words[i + 2]) & _M32)
    # The last 0..11 bytes, little-endian; the lowest byte of c is left for the length, as in lookup2.
    tail_a, tail_b, tail_c = struct.unpack("<3I", data[whole:].ljust(12, b"\0"))
    a, b, c = _final((a + tail_a) & _M32, (b + tail_b) & _M32, (c + (tail_c << 8)) & _M32)
    return (b << 32) | c
