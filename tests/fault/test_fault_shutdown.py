"""SIGTERM to a Usage process under load (drain 1 s, grace 5 s): health reads NOT_SERVING first
while calls still succeed, calls in flight complete, every acknowledged event is stored, and the
process exits 0."""

import signal
import threading
import time

import grpc
import pytest

from scripts.pgcluster import free_port
from tests import fault_support as fs
from tests import support
from tests.usage_support import tenant_token
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

SENDERS, MAX_BATCHES, BATCH_SIZE = 4, 400, 200
DRAIN, GRACE = 1.0, 5.0


class Log:
    """Every call's (start, end, code, response) and every health reading (time, status), thread-safe."""

    def __init__(self):
        self.calls, self.health, self.lock = [], [], threading.Lock()

    def call(self, *entry):
        with self.lock:
            self.calls.append(entry)


def send(port: int, token: str, tenant: str, sender: int, log: Log, stop: threading.Event) -> None:
    """Send batches one after another until the server refuses one (bounded by MAX_BATCHES)."""
    with support.channel(port) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        for b in range(MAX_BATCHES):
            if stop.is_set():
                return
            request = fs.batch(tenant, f"s{sender}b{b}", BATCH_SIZE)
            started = time.monotonic()
            try:
                response = stub.RecordEvents(request, metadata=support.bearer(token), timeout=10)
                log.call(started, time.monotonic(), grpc.StatusCode.OK, response)
            except grpc.RpcError as error:
                log.call(started, time.monotonic(), error.code(), None)
                return


def watch_health(port: int, log: Log, stop: threading.Event) -> None:
    while not stop.is_set():
        log.health.append((time.monotonic(), fs.health_of(port, timeout=0.5)))
        stop.wait(0.05)


@pytest.mark.slow
def test_sigterm_under_load_turns_not_serving_first_completes_in_flight_calls_loses_nothing_and_exits_zero(dbs, tenant):
    token = tenant_token(dbs, tenant)
    port = free_port()
    process = fs.start_usage(dbs.usage_url, port, drain_seconds=DRAIN, grace_seconds=GRACE)
    log, stop = Log(), threading.Event()
    threads = [threading.Thread(target=send, args=(port, token, tenant, s, log, stop)) for s in range(SENDERS)]
    threads.append(threading.Thread(target=watch_health, args=(port, log, stop)))
    try:
        for thread in threads:
            thread.start()
        for _ in range(500):  # bounded: wait until the load is flowing
            if len(log.calls) >= 8:
                break
            time.sleep(0.02)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=DRAIN + GRACE + 10)
        exited = time.monotonic()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
        fs.end(process)

    assert exit_code == 0
    assert exited - signalled < DRAIN + GRACE + 3
    # Health: after the signal, the first reading that is not SERVING is NOT_SERVING (the port still answers).
    after = [status for at, status in log.health if at > signalled and status != fs.SERVING]
    assert after and after[0] == fs.NOT_SERVING
    not_serving_at = min(at for at, status in log.health if at > signalled and status == fs.NOT_SERVING)
    # While draining, calls keep succeeding: some began after NOT_SERVING was seen and were answered.
    assert any(code == grpc.StatusCode.OK and start > not_serving_at for start, _, code, _ in log.calls)
    # Every call that began before the drain ended (less 10% for signal delivery) was answered OK.
    assert all(code == grpc.StatusCode.OK for start, _, code, _ in log.calls if start < signalled + DRAIN * 0.9)
    # A call reaching the server as it stops accepting is refused: UNAVAILABLE, or CANCELLED when it
    # races gRPC's own shutdown; either way it began after the drain and stored nothing (checked below).
    late = {code for start, _, code, _ in log.calls if start >= signalled + DRAIN * 0.9}
    assert late <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    acknowledged = {
        r.event_id
        for *_, response in log.calls
        if response is not None
        for r in response.results
        if r.verdict in (u.VERDICT_ACCEPTED, u.VERDICT_DUPLICATE)
    }
    sent_ok = sum(len(response.results) for *_, response in log.calls if response is not None)
    assert len(acknowledged) == sent_ok > 0
    stored = fs.stored_event_ids(dbs.usage_url, tenant)
    assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged events lost"
    # A refused batch stored nothing: the table holds exactly the acknowledged events.
    assert stored == acknowledged
    refused = sum(code != grpc.StatusCode.OK for *_, code, _ in log.calls)
    print(
        f"\nshutdown ({dbs.backend}): {len(log.calls)} calls, {refused} refused after the drain, "
        f"{len(acknowledged)} events acknowledged and stored; exit 0 after {exited - signalled:.1f} s"
    )
