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


def report(rows: list[tuple[str, list[float], float | None]], *, in_flight_reference: int, width: int) -> None:
    """Print each (label, samples, calls/s or None) with its p50 and p99 beside those of the empty RPC: rows[0] for a
    sequential row, rows[in_flight_reference] for a row whose label says "in flight"."""
    base = {"sequential": rows[0][1], "in flight": rows[in_flight_reference][1]}
    print(f"{'case':{width}} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'x empty p50':>12} {'x empty p99':>12}")
    for label, samples, rate in rows:
        reference = base["in flight" if "in flight" in label else "sequential"]
        rate = rate or len(samples) / sum(samples)
        p50, p99 = pct(samples, 50), pct(samples, 99)
        print(
            f"{label:{width}} {p50:8.3f} {p99:8.3f} {rate:9.0f} "
            f"{p50 / pct(reference, 50):12.2f} {p99 / pct(reference, 99):12.2f}"
        )
