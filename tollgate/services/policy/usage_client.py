"""The gRPC side of Policy's one door to Usage: a long-lived channel, a timeout on every call, a short circuit.

Failures become the domain's `UsageUnavailable`; the caller decides what that means (rank by caps
alone, or apply a quota's fail-open/fail-closed rule). services/policy/usage_port.py is what use
cases call; this module is the only one of Policy that speaks Usage's protocol.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tollgate.services.policy.domain.dimensions import parsed
from tollgate.services.policy.domain.errors import UsageRefused, UsageUnavailable
from tollgate.services.policy.domain.usage import Delivery, FilteredQuery, Meter, OutboxEvent, UsageQuery, Window
from tollgate.shared import tracing
from tollgate.shared.tls import ClientTls
from tollgate.usage.v1 import usage_pb2, usage_pb2_grpc

log = logging.getLogger("tollgate.policy.usage_client")
CATALOG_PAGE = 1000  # ListMetrics' largest page

# GetUsage is a read, so a transparent retry on UNAVAILABLE is safe; the deadline still bounds it.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "tollgate.usage.v1.UsageService", "method": "GetUsage"}],
                "retryPolicy": {
                    "maxAttempts": 2,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.05s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


_REFUSALS = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)
# Answers that say Usage cannot answer anyone now. Any other refusal is about the question (one tenant's range
# past the purge horizon, say): it fails that call alone, and proves Usage reachable.
_OUTAGES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
)

# Refusals of a committed event that an operator's change lifts: the catalog's metric or dimension declared
# again, the combination limit raised. The event is kept and sent again, never dropped.
_FIXABLE = frozenset(
    {
        usage_pb2.REJECT_REASON_UNKNOWN_METRIC,
        usage_pb2.REJECT_REASON_UNDECLARED_DIMENSION,
        usage_pb2.REJECT_REASON_TOO_MANY_DIMENSION_COMBINATIONS,
    }
)


class CircuitBreaker:
    """After a failure, fail fast for `cooldown` seconds, then let one probe call through.

    It also knows whether Usage is down (failed since its last success), so that each outage is
    reported once when it begins and once when it ends, however many calls fail in between.
    """

    def __init__(self, cooldown: float):
        self._cooldown = cooldown
        self._open_until = 0.0
        self._probing = False
        self._down = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now >= self._open_until and not self._probing:
                self._probing = self._open_until > 0
                return True
            return False

    def is_open(self) -> bool:
        """Whether calls fail fast now (read-only: no probe is let through)."""
        with self._lock:
            return time.monotonic() < self._open_until

    def succeeded(self) -> bool:
        """Close the circuit; True when this success ends an outage."""
        with self._lock:
            recovered, self._down = self._down, False
            self._open_until, self._probing = 0.0, False
            return recovered

    def failed(self) -> bool:
        """Open the circuit; True when this failure begins an outage."""
        with self._lock:
            began, self._down = not self._down, True
            self._open_until, self._probing = time.monotonic() + self._cooldown, False
            return began


class UsageClient:
    """Reads usage totals from the Usage service with Policy's own service token."""

    def __init__(
        self,
        address: str,
        token: str,
        *,
        max_timeout: float,
        cooldown: float = 2.0,
        tracer_provider=None,
        tls: ClientTls | None = None,
    ):
        self._channel = (tls or ClientTls()).channel(
            address,
            [
                ("grpc.service_config", _SERVICE_CONFIG),
                ("grpc.enable_retries", 1),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ],
        )
        self._address = address
        # Each call is a client span under the call Policy is serving, and carries its traceparent to Usage.
        self._stub = usage_pb2_grpc.UsageServiceStub(tracing.traced_channel(self._channel, tracer_provider))
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._max_timeout = max_timeout
        self.breaker = CircuitBreaker(cooldown)

    def get_usage(self, queries: list[UsageQuery], *, timeout: float | None) -> list[dict[str, int]]:
        """Quantity per metric of each query, all asked concurrently within one timeout (None: the longest)."""
        calls = [("GetUsage", _request(q)) for q in queries]
        return [_quantities(answer.totals) for answer in self._call_many(calls, timeout)]

    def quota_reads(
        self, queries: list[UsageQuery], filtered: list[FilteredQuery], *, timeout: float | None
    ) -> tuple[list[tuple[dict, dict]], list[int]]:
        """(the tenant's, the actor's) quantity per metric of each query (the actor's empty without an actor_id),
        one GetUsage per query; and the sum of each filtered query, one QueryUsage each; all asked concurrently
        within one timeout. A filtered query's metric must be a SUM: its value is then the quantities' sum."""
        calls: list[tuple[str, Any]] = []
        for query in queries:
            request = _request(query)
            request.include_tenant_totals = bool(query.actor_id)
            calls.append(("GetUsage", request))
        calls += [("QueryUsage", _query_request(q)) for q in filtered]
        answers = self._call_many(calls, timeout)
        split = [
            (
                _quantities(t for t in answer.totals if not t.actor_id),
                _quantities(t for t in answer.totals if t.actor_id),
            )
            for answer in answers[: len(queries)]
        ]
        return split, [_sum_of(query, answer) for query, answer in zip(filtered, answers[len(queries) :])]

    def _call_many(self, calls: list[tuple[str, Any]], timeout: float | None) -> list:
        """The answers of unary calls (method name, request), all asked concurrently within one timeout."""
        seconds = self._timeout(timeout)
        self._allow()
        if len(calls) == 1:  # a blocking call: a future would start a thread of its own to drive the channel
            method, request = calls[0]
            return [self._call_one(method, request, seconds)]
        futures = [
            getattr(self._stub, method).future(request, timeout=seconds, metadata=self._metadata)
            for method, request in calls
        ]
        answers = []
        for (method, _), future in zip(calls, futures):
            try:
                answers.append(future.result())
            except grpc.RpcError as error:
                for other in futures:
                    other.cancel()
                raise self._failed(method, error) from None
        self._succeeded()
        return answers

    def get_tenant_and_actor_usage(self, query: UsageQuery, *, timeout: float | None) -> tuple[dict, dict]:
        """(the tenant's, query.actor_id's) quantity per metric, in one GetUsage."""
        request = _request(query)
        request.include_tenant_totals = True
        self._allow()
        totals = self._call_one("GetUsage", request, self._timeout(timeout)).totals
        return (
            _quantities(t for t in totals if not t.actor_id),
            _quantities(t for t in totals if t.actor_id),
        )

    def _call_one(self, method: str, request, seconds: float):
        try:
            answer = getattr(self._stub, method)(request, timeout=seconds, metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._failed(method, error) from None
        self._succeeded()
        return answer

    def record_events(
        self, tenant_id: str, events: list[OutboxEvent], *, timeout: float | None, fail_fast: bool = False
    ) -> list[Delivery]:
        """RecordEvents of committed usage; ACCEPTED and DUPLICATE mean Usage holds the event (a resend after a
        lost answer is a DUPLICATE, so sending again is always safe).

        Sends stay out of the circuit and the outage log, which are about reads: the outbox retries on its own
        schedule, and a token without usage:write is a configuration to fix, not an outage. `fail_fast` (a
        Commit's own send) gives up at once while the circuit is open; the outbox loop always tries."""
        if fail_fast and self.breaker.is_open():
            raise UsageUnavailable("usage service unavailable (circuit open after a recent failure)")
        request = usage_pb2.RecordEventsRequest(tenant_id=tenant_id, events=[_event(e) for e in events])
        try:
            answer = self._stub.RecordEvents(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            if error.code() in _REFUSALS:
                raise UsageRefused(f"usage service refused RecordEvents: {error.code().name}") from None
            raise UsageUnavailable(f"usage service answered {error.code().name} to RecordEvents") from None
        held = (usage_pb2.VERDICT_ACCEPTED, usage_pb2.VERDICT_DUPLICATE)
        return [
            Delivery(
                r.event_id,
                r.verdict in held,
                "" if r.verdict in held else f"{usage_pb2.Verdict.Name(r.verdict)}: {r.message}",
                r.verdict == usage_pb2.VERDICT_REJECTED and r.reason in _FIXABLE,
            )
            for r in answer.results
        ]

    def metric_catalog(self, *, timeout: float | None) -> dict[str, Meter]:
        """Every metric in Usage's catalog by name, page by page, all within one timeout (None: the longest)."""
        meters: dict[str, Meter] = {}
        token, deadline = "", time.monotonic() + self._timeout(timeout)
        self._allow()
        while True:
            try:
                page = self._stub.ListMetrics(
                    usage_pb2.ListMetricsRequest(page_size=CATALOG_PAGE, page_token=token),
                    timeout=max(0.0, deadline - time.monotonic()),
                    metadata=self._metadata,
                )
            except grpc.RpcError as error:
                raise self._failed("ListMetrics", error) from None
            meters.update(
                (m.name, Meter(m.aggregation in (usage_pb2.AGGREGATION_SUM, 0), tuple(m.dimensions)))
                for m in page.metrics
            )
            token = page.next_page_token
            if not token:
                self._succeeded()
                return meters

    def _timeout(self, remaining: float | None) -> float:
        if remaining is None:
            return self._max_timeout
        if remaining <= 0:  # the caller has stopped waiting: asking would only count against Usage's health
            raise UsageUnavailable("the call's deadline passed before Usage could be asked")
        return min(remaining, self._max_timeout)

    def _allow(self) -> None:
        if not self.breaker.allow():
            raise UsageUnavailable("usage service unavailable (circuit open after a recent failure)")

    def _failed(self, rpc: str, error: grpc.RpcError) -> UsageUnavailable:
        if error.code() not in _OUTAGES:
            self._succeeded()
            return UsageUnavailable(f"usage service refused {rpc}: {error.code().name}: {error.details()}")
        if self.breaker.failed():
            log.warning(
                "usage service at %s became unreachable (%s answered %s); until it answers again, "
                "rankings use caps alone and quotas fail open or closed as their plans say",
                self._address,
                rpc,
                error.code().name,
            )
        return UsageUnavailable(f"usage service answered {error.code().name}")

    def _succeeded(self) -> None:
        if self.breaker.succeeded():
            log.info("usage service at %s is reachable again", self._address)

    def close(self) -> None:
        self._channel.close()


def _quantities(totals) -> dict[str, int]:
    return {total.metric: total.quantity for total in totals}


def _event(event: OutboxEvent) -> usage_pb2.UsageEvent:
    occurred = Timestamp()
    occurred.FromMicroseconds(event.occurred_us)
    return usage_pb2.UsageEvent(
        event_id=event.event_id,
        metric=event.metric,
        quantity=event.quantity,
        occurred_at=occurred,
        actor_id=event.user_id,
        source_service="tollgate-policy",
        dimensions=parsed(event.dimensions),
    )


def _bounds(window: Window) -> tuple[Timestamp, Timestamp]:
    start, end = Timestamp(), Timestamp()
    start.FromMicroseconds(window.start_us)
    end.FromMicroseconds(window.end_us)
    return start, end


def _query_request(query: FilteredQuery) -> usage_pb2.QueryUsageRequest:
    """The whole window as one row (no window, no group): the sum of the usage the filters allow."""
    start, end = _bounds(query.window)
    return usage_pb2.QueryUsageRequest(
        tenant_id=query.tenant_id,
        metric=query.metric,
        start_time=start,
        end_time=end,
        filters={name: usage_pb2.DimensionValues(values=list(values)) for name, values in query.filters},
        actor_ids=[query.actor_id] if query.actor_id else [],
    )


def _sum_of(query: FilteredQuery, answer: usage_pb2.QueryUsageResponse) -> int:
    """The quantities' sum a QueryUsage answered: its value, which is that sum only for a SUM metric."""
    if answer.aggregation != usage_pb2.AGGREGATION_SUM:
        raise UsageUnavailable(
            f"a quota with dimension filters counts a SUM metric; {query.metric} is "
            f"{usage_pb2.Aggregation.Name(answer.aggregation)}"
        )
    return sum(row.value for row in answer.rows)


def _request(query: UsageQuery) -> usage_pb2.GetUsageRequest:
    start, end = _bounds(query.window)
    return usage_pb2.GetUsageRequest(
        tenant_id=query.tenant_id,
        metrics=sorted(set(query.metrics)),
        start_time=start,
        end_time=end,
        actor_id=query.actor_id,
    )
