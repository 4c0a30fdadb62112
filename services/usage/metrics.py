"""Business metrics of the Usage service; labels are bounded enums, never tenant ids."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import Counter

from services.usage.domain import EventResult, Verdict

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


def count(results: list[EventResult], classification_of: dict[int, str]) -> None:
    """Count one batch's verdicts; `classification_of` maps a result index to its metric's classification."""
    tally = Tally((r.verdict.name, classification_of.get(r.index, "UNKNOWN")) for r in results)
    for (verdict, classification), n in tally.items():
        EVENTS.labels(verdict, classification).inc(n)
    for reason, n in Tally(r.reason.name for r in results if r.verdict is Verdict.REJECTED).items():
        REJECTIONS.labels(reason).inc(n)
