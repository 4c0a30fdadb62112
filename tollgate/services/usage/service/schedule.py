"""Background work run on an interval inside the Usage process (rollups, retention)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from functools import partial

from tollgate.services.usage.repository import DatabaseError, Sessions, in_transaction, leases
from tollgate.services.usage.repository.storage import Storage
from tollgate.shared import clock

log = logging.getLogger("tollgate.usage.schedule")

# A holder that dies leaves its job idle this long at most; a run that outlasts it may overlap the
# next holder's, which stays correct (rollups and purges are safe to run at once), only wasteful.
LEASE_SECONDS = 300.0


def every(
    seconds: float,
    name: str,
    work: Callable[[], dict],
    *,
    sessions: Sessions,
    storage: Storage,
    skipped: Callable[[], None] | None = None,
):
    """A job for ServerSpec.background running `work` every `seconds` until stopped, on one instance at a time.

    Each round first takes the job's lease: with several replicas, one runs it and the others skip the
    round instead of computing the same work (and call `skipped`, if given). `work` returns the fields
    to log. A database failure is logged and the job tries again at the next interval, so an outage
    never ends the job.
    """
    holder = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"

    def job(stopping: threading.Event) -> None:
        while not stopping.wait(seconds):
            try:
                if not run_once(name, work, sessions=sessions, storage=storage, holder=holder) and skipped is not None:
                    skipped()
            except DatabaseError:
                log.exception(f"{name} failed; will retry at the next interval")

    return job


def run_once(name: str, work: Callable[[], dict], *, sessions: Sessions, storage: Storage, holder: str) -> bool:
    """One round: `work` under the job's lease; False when another instance holds it."""
    taken = in_transaction(
        sessions,
        partial(
            leases.take,
            name=name,
            holder=holder,
            now_us=clock.now_micros(),
            ttl_us=int(LEASE_SECONDS * 1_000_000),
            storage=storage,
        ),
    )
    if not taken:
        log.debug(f"{name} skipped: another instance holds its lease")
        return False
    try:
        fields = work()
        # A round that found nothing to do logs at DEBUG: an idle service's INFO log stays quiet.
        log.log(logging.INFO if any(fields.values()) else logging.DEBUG, name, extra={"fields": fields})
    finally:
        in_transaction(sessions, partial(leases.give_back, name=name, holder=holder))
    return True
