"""Background work run on an interval inside the Usage process (rollups, retention)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy.exc

log = logging.getLogger(__name__)


def every(seconds: float, name: str, work: Callable[[], dict]):
    """A job for ServerSpec.background running `work` every `seconds` until stopped.

    `work` returns the fields to log. A database failure is logged and the job tries again at the
    next interval, so an outage never ends the job.
    """
    def job(stopping: threading.Event) -> None:
        while not stopping.wait(seconds):
            try:
                log.info(name, extra={"fields": work()})
            except sqlalchemy.exc.SQLAlchemyError:
                log.exception(f"{name} failed; will retry at the next interval")
    return job
