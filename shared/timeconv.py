"""Conversions between google.protobuf.Timestamp, datetime and epoch microseconds (UTC)."""

from __future__ import annotations

from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp

# Timestamps outside years 1..9999 cannot become datetimes; the proto allows 1..9999 too.
MIN_SECONDS = -62135596800
MAX_SECONDS = 253402300799


def nanos_in_range(ts: Timestamp) -> bool:
    """Whether the nanos make an instant: other values would count as a different second."""
    return 0 <= ts.nanos < 1_000_000_000


def in_range(ts: Timestamp) -> bool:
    return MIN_SECONDS <= ts.seconds <= MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000


def to_micros(ts: Timestamp) -> int:
    """Epoch microseconds; digits below the microsecond are dropped, toward the past."""
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def from_micros(micros: int) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def to_datetime(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ts.seconds, timezone.utc).replace(microsecond=ts.nanos // 1000)


def from_datetime(value: datetime) -> Timestamp:
    if value.tzinfo is None:  # SQLite returns naive datetimes; everything stored is UTC
        value = value.replace(tzinfo=timezone.utc)
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def micros_of(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp()) * 1_000_000 + value.microsecond


def now_micros() -> int:
    return micros_of(datetime.now(timezone.utc))


def iso(micros: int) -> str:
    """RFC 3339 in UTC, as grpcurl and protobuf JSON print a Timestamp: 2026-11-01T00:00:00Z."""
    return from_micros(micros).ToJsonString()
