"""The same calls over HTTP/JSON (Connect) and over gRPC, in one run, against the issue's goals.

1. Ingest: RecordEvents through Usage in its own process (as bench/ingest.py: batches of 1,000 with all
   three dedup keys, the same number in flight, each client thread on its own keep-alive connection),
   gRPC and HTTP/JSON alternating over ROUNDS rounds on an emptied events table, medians compared. The
   JSON bodies are encoded before the clock starts, as the gRPC requests are built before it, and the
   answers are read with json.loads: the figure is the server's, not the client's JSON encoder's.
2. ResolveMode: bench/resolve.py's tenant on a Policy server in its own process (as deployed) serving both
   ports; p50/p99 sequential and with calls in flight, the transports taking turns in TURNS rounds on the
   same server. In the bench's process, 64 Python client threads would share the HTTP server's GIL (its
   selector thread and workers) while gRPC's clients wait in C: a cost of the bench, not of the server.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
from types import SimpleNamespace

import grpc
from google.protobuf import json_format

from bench import ingest, resolve, timing, tokens
from bench.processes import UsageProcess
from scripts.pgcluster import create_postgres_database, drop_postgres_database, free_port
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.shared import migrate
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

RECORD_EVENTS = "/tollgate.usage.v1.UsageService/RecordEvents"
RESOLVE_MODE = "/tollgate.policy.v1.PolicyService/ResolveMode"
TURNS = 6  # ResolveMode's calls over each transport come in this many alternating rounds


class JsonStub:
    """Calls a Connect JSON path like a gRPC stub's method, over keep-alive connections kept as an HTTP client
    library keeps them: a call takes an idle connection (a new one when none is idle) and gives it back. A gRPC
    channel keeps its connection across threads and rounds alike; a connection per calling thread would open 64
    new ones at every round of calls in flight, and time their connects as calls."""

    def __init__(self, port: int):
        self._port, self._lock = port, threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []

    def call(self, path: str, body: bytes, metadata) -> dict:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=120)
        connection.request("POST", path, body=body, headers={"content-type": "application/json", **dict(metadata)})
        response = connection.getresponse()
        answer = response.read()
        with self._lock:
            self._idle.append(connection)
        assert response.status == 200, answer[:500]
        return json.loads(answer)

    def RecordEvents(self, body: bytes, metadata, timeout: float) -> SimpleNamespace:  # noqa: N802 - a stub's name
        """The answer's verdicts in the shape ingest._send checks (results[i].verdict as the enum's number)."""
        results = self.call(RECORD_EVENTS, body, metadata)["results"]
        return SimpleNamespace(results=[SimpleNamespace(verdict=u.Verdict.Value(r["verdict"])) for r in results])


def run(admin_url: str) -> None:
    _ingest(admin_url)
    _resolve(admin_url)


def _ingest(admin_url: str) -> None:
    url = create_postgres_database(admin_url, prefix="tollgate_bench")
    try:
        migrate.upgrade("usage", url)
        requests = ingest._requests(ingest._rows(ingest.EVENTS))
        bodies = [json_format.MessageToJson(r, indent=None).encode() for r in requests]
        http_port = free_port()
        usage = UsageProcess(
            url,
            USAGE_DB_POOL_SIZE=str(ingest.IN_FLIGHT),
            USAGE_HEALTH_INTERVAL_SECONDS="5",
            USAGE_AUTH_CACHE_SECONDS="60",
            USAGE_HTTP_PORT=str(http_port),
        )
        rates: dict[str, list[float]] = {"gRPC": [], "HTTP/JSON": []}
        try:
            token = tokens.token(url, {"usage:write"})
            with grpc.insecure_channel(f"127.0.0.1:{usage.port}") as channel:
                senders = {
                    "gRPC": (usage_pb2_grpc.UsageServiceStub(channel), requests),
                    "HTTP/JSON": (JsonStub(http_port), bodies),
                }
                for _ in range(ingest.ROUNDS):
                    for transport, (stub, sent) in senders.items():
                        ingest._truncate(url)
                        print(f"  {transport}:", end="")
                        rates[transport].append(ingest._send(stub, token, sent, "ACCEPTED"))
        finally:
            usage.stop()
    finally:
        drop_postgres_database(admin_url, url)
    grpc_rate, http_rate = statistics.median(rates["gRPC"]), statistics.median(rates["HTTP/JSON"])
    print(
        f"ingest: {ingest.EVENTS:,} events, batches of {ingest.MAX_BATCH:,}, {ingest.IN_FLIGHT} in flight, "
        f"median of {ingest.ROUNDS} alternating rounds"
    )
    for transport, rate in (("gRPC", grpc_rate), ("HTTP/JSON", http_rate)):
        print(f"  RecordEvents via {transport:10} {rate:>10,.0f} events/s   rounds: {ingest._each(rates[transport])}")
    ratio = http_rate / grpc_rate
    print(f"  HTTP/JSON / gRPC             {ratio:>10.2f}x          (goal >= 0.5x: {_met(ratio >= 0.5)})")


def _resolve(admin_url: str) -> None:
    with (
        resolve.seeded_policy(admin_url, http=True, own_process=True) as (port, http_port, metadata),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        assert http_port is not None
        stub, json_stub = policy_pb2_grpc.PolicyServiceStub(channel), JsonStub(http_port)

        def asked(n: int) -> tuple[str, str]:
            """(user, feature) of call n, as bench/resolve.py's ResolveMode asks them."""
            return f"user{n % (resolve.USERS + 50)}", resolve.FEATURES[n % 20]

        def over_grpc(n: int) -> None:
            user, feature = asked(n)
            ask = pb.ResolveModeRequest(tenant_id=resolve.TENANT, user_id=user, feature_id=feature)
            stub.ResolveMode(ask, metadata=metadata, timeout=5)

        def over_http(n: int) -> None:
            user, feature = asked(n)
            body = json.dumps({"tenantId": resolve.TENANT, "userId": user, "featureId": feature}).encode()
            assert "resolution" in json_stub.call(RESOLVE_MODE, body, metadata)

        calls = {"gRPC": over_grpc, "HTTP/JSON": over_http}
        for call in calls.values():
            timing.timed(call, resolve.WARMUP)
            timing.concurrent(call, resolve.IN_FLIGHT * 4, resolve.IN_FLIGHT)  # every connection opened untimed
        # The transports take turns in short rounds, so both meet the same load from whatever else runs.
        sequential: dict[str, list[float]] = {transport: [] for transport in calls}
        in_flight: dict[str, list[float]] = {transport: [] for transport in calls}
        for _ in range(TURNS):
            for transport, call in calls.items():
                sequential[transport] += timing.timed(call, resolve.SEQUENTIAL // TURNS)
                in_flight[transport] += timing.concurrent(call, resolve.CONCURRENT // TURNS, resolve.IN_FLIGHT)[0]
    rows = [(f"ResolveMode via {t}, sequential", sequential[t]) for t in calls]
    rows += [(f"ResolveMode via {t}, {resolve.IN_FLIGHT} in flight", in_flight[t]) for t in calls]
    print(f"{'case':46} {'p50 ms':>8} {'p99 ms':>8} {'x gRPC p50':>11} {'x gRPC p99':>11}")
    for index, (label, samples) in enumerate(rows):
        reference = rows[index - index % 2][1]  # the gRPC row of the same case
        p50, p99 = timing.pct(samples, 50), timing.pct(samples, 99)
        print(
            f"{label:46} {p50:8.3f} {p99:8.3f} "
            f"{p50 / timing.pct(reference, 50):11.2f} {p99 / timing.pct(reference, 99):11.2f}"
        )
    worst = max(timing.pct(rows[i + 1][1], 99) / timing.pct(rows[i][1], 99) for i in (0, 2))
    print(f"goal: ResolveMode over HTTP p99 <= 2x gRPC's: {_met(worst <= 2)} (worst {worst:.2f}x)")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"
