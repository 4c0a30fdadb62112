"""tollgate.shared.clock (instants as epoch microseconds) and tollgate.shared.proto_time (Timestamp conversions)."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given
from hypothesis import strategies as st

from tollgate.shared import clock, proto_time

INSTANTS = st.integers(clock.MIN_MICROS, clock.MAX_MICROS)


@given(micros=INSTANTS)
@example(0)
@example(clock.MIN_MICROS)
@example(clock.MAX_MICROS)
@example(1_000)
@example(-1)
def test_iso_prints_an_instant_as_protobuf_json_prints_its_timestamp(micros):
    assert clock.iso(micros) == proto_time.from_micros(micros).ToJsonString()


@given(micros=INSTANTS)
def test_an_instant_survives_the_round_trip_through_a_timestamp(micros):
    ts = proto_time.from_micros(micros)
    assert proto_time.nanos_in_range(ts) and proto_time.to_micros(ts) == micros


@given(seconds=st.integers(-(10**11), 10**11), nanos=st.integers(0, 999_999_999))
def test_digits_below_the_microsecond_are_dropped_toward_the_past(seconds, nanos):
    micros = proto_time.to_micros(Timestamp(seconds=seconds, nanos=nanos))
    assert micros * 1000 <= seconds * 10**9 + nanos < (micros + 1) * 1000


def test_nanos_outside_one_second_are_not_an_instant():
    assert [proto_time.nanos_in_range(Timestamp(nanos=n)) for n in (-1, 0, 999_999_999, 1_000_000_000)] == [
        False,
        True,
        True,
        False,
    ]


def test_the_clock_reads_microseconds_near_the_system_time():
    before = time.time_ns() // 1000
    assert before <= clock.now_micros() <= time.time_ns() // 1000
