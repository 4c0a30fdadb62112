"""The Usage recorder: `UsageRecorder(...).record(metric, quantity)` never raises, never blocks, never loses."""

from tollgate.clients.recorder.counters import Counters
from tollgate.clients.recorder.recorder import UsageRecorder

__all__ = ["Counters", "UsageRecorder"]
