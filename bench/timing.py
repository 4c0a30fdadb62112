"""Latency sampling shared by the benches: sequential, with calls in flight, and percentiles."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor


def timed(call, count: int) -> list[float]:
    """Seconds taken by each of `count` sequential calls of call(n)."""
    samples = []
    for n in range(count):
        started = time.perf_counter()
        call(n)
        samples.append(time.perf_counter() - started)
    return samples


def concurrent(call, count: int, in_flight: int) -> tuple[list[float], float]:
    """Latencies and throughput (calls/s) with `in_flight` calls outstanding (one thread per slot)."""
    per_slot = count // in_flight
    started = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        batches = list(pool.map(lambda slot: timed(lambda n: call(slot * per_slot + n), per_slot), range(in_flight)))
    elapsed = time.perf_counter() - started
    return [s for batch in batches for s in batch], per_slot * in_flight / elapsed


def pct(samples: list[float], q: int) -> float:
    """The q-th percentile in milliseconds (q = 100: the maximum)."""
    return statistics.quantiles(samples, n=100)[q - 1] * 1000 if q < 100 else max(samples) * 1000
