"""Conversions between google.protobuf.Timestamp and epoch microseconds (UTC), for the converters."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def nanos_in_range(ts: Timestamp) -> bool:
    """Whether the nanos make an instant: other values would count as a different second."""
    return 0 <= ts.nanos < 1_000_000_000


def to_micros(ts: Timestamp) -> int:
    """Epoch microseconds; digits below the microsecond are dropped, toward the past."""
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def from_micros(micros: int) -> Timestamp:
    """The Timestamp of an instant in epoch microseconds."""
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def set_micros(ts: Timestamp, micros: int) -> None:
    """Set `ts` (a field of a message being built) to an instant in epoch microseconds, in place."""
    seconds, rest = divmod(micros, 1_000_000)
    ts.seconds = seconds
    ts.nanos = rest * 1000
