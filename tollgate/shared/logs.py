"""Structured JSON logs: one object per line on stderr, each naming the service that wrote it.

Loggers are named `tollgate.<package>.<module>` (docs/operations.md#logs).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opentelemetry import trace


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object, with any `fields` passed through `extra`.

    `service` names the process ("usage", "policy") on every line; a record's own `service` field wins,
    as the per-call lines of a server name theirs. A line written inside a traced call names its trace.
    """

    def __init__(self, service: str = ""):
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(trace_ids())
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def trace_ids() -> dict[str, str]:
    """trace_id and span_id of the current span, when one is recording or a caller sent a traceparent."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def configure(level: str = "INFO", *, service: str = "") -> None:
    """Send every log record to stderr as JSON naming `service`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
