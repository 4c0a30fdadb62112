"""Soak: sustained ingest into a Usage server process for BENCH_SOAK_SECONDS (default 600), its RSS
sampled from /proc every few seconds; after the warm-up (the first 20%) memory must stay within
±10% of the post-warm-up median. Prints start, peak and end RSS, the verdict and events/s.

Runs only when asked (`BENCH_SOAK=1 make bench` or `python -m bench soak`): it takes ten minutes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc

from bench import tokens
from scripts.pgcluster import create_postgres_database, drop_postgres_database, free_port
from tollgate.shared import migrate
from tollgate.usage.v1 import usage_pb2, usage_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", "600"))
SAMPLE_EVERY = max(1.0, min(5.0, SECONDS / 60))
SENDERS, BATCH = 2, 500
WARM_UP, BAND = 0.2, 0.10
METRICS = ("api.requests", "leads.processed", "scoring.requests")


def run(admin_url: str) -> None:
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    process = None
    try:
        migrate.upgrade("usage", url)
        token = tokens.token(url, {"usage:write", "usage:read"}, tenant="soak", label="bench soak")
        port = free_port()
        process = _start(url, port)
        samples, sent = _soak(process.pid, port, token)
        _report(samples, sent)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        drop_postgres_database(admin_url, url)


def _start(url: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "USAGE_DATABASE_URL": url,
        "USAGE_PORT": str(port),
        "USAGE_HOST": "127.0.0.1",
        "USAGE_METRICS_PORT": "-1",
        "USAGE_HTTP_PORT": "-1",
        "USAGE_LOG_LEVEL": "WARNING",
        "USAGE_ROLLUP_INTERVAL_SECONDS": "30",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tollgate.services.usage"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    return process


def rss_kib(pid: int) -> int:
    """The process's resident set size in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _batch(sender: int, number: int) -> usage_pb2.RecordEventsRequest:
    now = time.time_ns() // 1000 - 60_000_000
    request = usage_pb2.RecordEventsRequest(tenant_id="soak")
    for n in range(BATCH):
        e = request.events.add(
            event_id=f"{sender}-{number}-{n}-{uuid.uuid4().hex[:8]}",
            metric=METRICS[n % 3],
            quantity=1 + n % 5,
            source_service="soak",
            actor_id=f"actor-{n % 50}",
            correlation_id=f"c-{sender}-{number}-{n}",
            idempotency_key=f"k-{sender}-{number}-{n}",
        )
        e.occurred_at.FromMicroseconds(now - n)
        e.metadata.update({"n": n, "tag": "soak"})
    return request


def _send(port: int, token: str, sender: int, until: float, counts: list[int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        number = 0
        while time.monotonic() < until:
            response = stub.RecordEvents(
                _batch(sender, number), metadata=(("authorization", f"Bearer {token}"),), timeout=60
            )
            counts[sender] += sum(r.verdict == usage_pb2.VERDICT_ACCEPTED for r in response.results)
            number += 1


def _soak(pid: int, port: int, token: str) -> tuple[list[tuple[float, int]], int]:
    started = time.monotonic()
    until = started + SECONDS
    counts = [0] * SENDERS
    senders = [
        threading.Thread(target=_send, args=(port, token, s, until, counts), daemon=True) for s in range(SENDERS)
    ]
    for sender in senders:
        sender.start()
    samples = []
    while time.monotonic() < until:
        samples.append((time.monotonic() - started, rss_kib(pid)))
        time.sleep(SAMPLE_EVERY)
    for sender in senders:
        sender.join(timeout=120)
    samples.append((time.monotonic() - started, rss_kib(pid)))
    return samples, sum(counts)


def verdict(samples: list[tuple[float, int]]) -> tuple[bool, float, float]:
    """(flat, lowest and highest deviation from the post-warm-up median) over the samples after the warm-up."""
    steady = [rss for at, rss in samples if at >= WARM_UP * SECONDS]
    median = statistics.median(steady)
    low, high = min(steady) / median - 1, max(steady) / median - 1
    return -BAND <= low and high <= BAND, low, high


def _report(samples: list[tuple[float, int]], sent: int) -> None:
    flat, low, high = verdict(samples)
    peak = max(samples, key=lambda s: s[1])
    print(f"soak: {SECONDS:.0f} s of ingest, {SENDERS} senders, batches of {BATCH}, {len(samples)} RSS samples")
    print(
        f"RSS start {samples[0][1] / 1024:.1f} MiB, after warm-up "
        f"{next(r for a, r in samples if a >= WARM_UP * SECONDS) / 1024:.1f} MiB, peak {peak[1] / 1024:.1f} MiB "
        f"at {peak[0]:.0f} s, end {samples[-1][1] / 1024:.1f} MiB"
    )
    print(
        f"after warm-up: {low:+.1%} .. {high:+.1%} of the median (band ±{BAND:.0%}): {'FLAT' if flat else 'NOT FLAT'}"
    )
    print(f"ingest: {sent:,} events accepted, {sent / SECONDS:,.0f} events/s")
    curve = " ".join(f"{rss / 1024:.0f}" for _, rss in samples[:: max(1, len(samples) // 20)])
    print(f"RSS curve (MiB): {curve}")
