"""Business metrics of the Usage service; labels are bounded enums, never tenant ids."""

from __future__ import annotations

import weakref
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tollgate.services.usage.domain.model import EventResult, Verdict

EVENTS = Counter(
    "tollgate_usage_events_total",
    "Usage events judged, by verdict and by the classification of their metric.",
    ["verdict", "classification"],
)
REJECTIONS = Counter(
    "tollgate_usage_rejections_total",
    "Usage events rejected, by reason.",
    ["reason"],
)

STREAM_BATCHES_REFUSED = Counter(
    "tollgate_usage_stream_batches_refused_total",
    "StreamEvents batches refused whole, by status code: each is answered on the stream, which goes on, so the "
    "RPC's own status does not show it.",
    ["grpc_code"],
)
for _code in ("INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAVAILABLE"):  # exposed at 0 from the start, for alerts
    STREAM_BATCHES_REFUSED.labels(_code)


def count(results: list[EventResult], classification_of: dict[int, str]) -> None:
    """Count one batch's verdicts; `classification_of` maps a result index to its metric's classification."""
    tally = Tally((r.verdict.name, classification_of.get(r.index, "UNKNOWN")) for r in results)
    for (verdict, classification), n in tally.items():
        EVENTS.labels(verdict, classification).inc(n)
    # A REJECTED result always names its reason (admission.rejected): `is not None` only narrows the type.
    rejected = Tally(r.reason.name for r in results if r.verdict is Verdict.REJECTED and r.reason is not None)
    for reason, n in rejected.items():
        REJECTIONS.labels(reason).inc(n)


ROLLUP_DIRTY_BUCKETS = Gauge(
    "tollgate_rollup_dirty_buckets",
    "Rollup buckets waiting to be recomputed, every tenant, as this instance last saw them.",
)
ROLLUP_REFUSED_BUCKETS = Counter(
    "tollgate_rollup_refused_buckets_total",
    "Buckets a rollup left dirty because their total does not fit in int64, by period; counted at each run that "
    "meets one (it is tried again at the next).",
    ["period"],
)
for _period in ("DAY", "WEEK", "MONTH"):  # exposed at 0 from the start, so that an alert on its increase works
    ROLLUP_REFUSED_BUCKETS.labels(_period)
ROLLUP_OLDEST_DIRTY_SECONDS = Gauge(
    "tollgate_rollup_oldest_dirty_seconds",
    "Age of the oldest dirty rollup bucket (0 when none), as this instance last saw it.",
)


def observe_backlog(dirty_buckets: int, oldest_dirty_us: int | None, now_us: int) -> None:
    """Record the rollup backlog of every tenant (reads stay exact whatever it is; they get slower)."""
    ROLLUP_DIRTY_BUCKETS.set(dirty_buckets)
    ROLLUP_OLDEST_DIRTY_SECONDS.set(0 if oldest_dirty_us is None else max(0, now_us - oldest_dirty_us) / 1e6)


class _Memory(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def evicted(self) -> int: ...


class _MeterMemory(Collector):
    """What QueryUsage's memory of days and answers holds and how much it let go past its bound
    (USAGE_METER_MEMORY_MB), read from the memories themselves at each scrape, summed over this process's servers."""

    def __init__(self) -> None:
        self.memories: weakref.WeakSet = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        memories: list[_Memory] = list(self.memories)
        yield GaugeMetricFamily(
            "tollgate_usage_meter_memory_bytes",
            "Bytes QueryUsage's memory of days and answers holds now (about; bounded by USAGE_METER_MEMORY_MB).",
            value=sum(memory.size for memory in memories),
        )
        yield CounterMetricFamily(
            "tollgate_usage_meter_memory_evictions",
            "Days and answers QueryUsage's memory let go to stay within USAGE_METER_MEMORY_MB, least recently read "
            "first: each is read from the database again when next asked.",
            value=sum(memory.evicted for memory in memories),
        )


_METER_MEMORY = _MeterMemory()
REGISTRY.register(_METER_MEMORY)


def watch_meter_memory(memory: _Memory) -> None:
    """Expose `memory`'s bytes and evictions (see _MeterMemory) for as long as it lives."""
    _METER_MEMORY.memories.add(memory)
