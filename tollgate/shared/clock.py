"""The clock: instants as epoch microseconds (UTC), the one representation below the transport layer."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

# google.protobuf.Timestamp allows years 1..9999, as datetime does: the instants any field can carry.
MIN_MICROS = -62_135_596_800 * 1_000_000
MAX_MICROS = 253_402_300_800 * 1_000_000 - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_micros() -> int:
    """The current instant."""
    return time.time_ns() // 1000


def iso(micros: int) -> str:
    """RFC 3339 in UTC, as grpcurl and protobuf JSON print a Timestamp: 2026-11-01T00:00:00Z."""
    seconds, fraction = divmod(micros, 1_000_000)
    text = (_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()
    if fraction:
        text += f".{fraction // 1000:03d}" if fraction % 1000 == 0 else f".{fraction:06d}"
    return text + "Z"
