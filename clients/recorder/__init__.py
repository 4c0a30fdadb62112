"""The Usage recorder: `UsageRecorder(...).record(metric, quantity)` never raises, never blocks, never loses."""

from clients.recorder.counters import Counters
from clients.recorder.recorder import UsageRecorder

__all__ = ["Counters", "UsageRecorder"]
