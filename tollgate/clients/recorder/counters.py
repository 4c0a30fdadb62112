"""The recorder's counters, as a snapshot the caller can read at any time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Counters:
    """What happened to the events given to record() so far."""

    sent: int  # answered ACCEPTED: stored now, counted once
    duplicate: int  # answered DUPLICATE: stored before (a redelivery), counted once
    conflict: int  # answered CONFLICT: a key reused with other content; logged, removed
    merged: int  # answered DUPLICATE or CONFLICT by another event's key: folded into it, not counted alone;
    # logged (at most once per 5 s), removed
    rejected: int  # answered REJECTED, or refused before sending (bad types); logged, removed
    spooled: int  # held now: in memory or on disk, waiting for an answer
    dropped: int  # refused by record(): spool full or recorder closed; logged
    retries: int  # batches sent again after UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED
    errors: int  # batches refused whole; kept spooled, logged. After UNAUTHENTICATED or PERMISSION_DENIED
    # the recorder stops sending (a new token needs a new recorder)
