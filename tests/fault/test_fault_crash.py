"""Four senders stream batches into a Usage process that is killed with SIGKILL mid-ingest, then
restarted on the same port; every unanswered batch (and a share of answered ones) is resent:
the totals are exact by GetUsage and by counting rows — nothing lost, nothing counted twice."""

import threading

import grpc
import pytest

from scripts.pgcluster import free_port
from tests import fault_support as fs
from tests import support
from tests.usage_support import tenant_token, totals
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

pytestmark = pytest.mark.parametrize("dbs", ["postgres"], indirect=True)

SENDERS, BATCHES_PER_SENDER, BATCH_SIZE = 4, 30, 300
KILL_AFTER = 12  # acknowledged batches (of 120) before the kill, so many more are in flight


def send(port: int, token: str, requests: list, answered: dict, stop: threading.Event) -> None:
    """Send batches in order until one is unanswered (the process is gone); note every answer."""
    with support.channel(port) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        for request in requests:
            if stop.is_set():
                return
            try:
                answered[request.events[0].event_id] = stub.RecordEvents(
                    request, metadata=support.bearer(token), timeout=20
                )
            except grpc.RpcError:
                return


@pytest.mark.slow
def test_a_process_killed_under_four_senders_then_resent_counts_every_event_exactly_once(dbs, tenant):
    token = tenant_token(dbs, tenant)
    plans = [[fs.batch(tenant, f"s{s}b{b}", BATCH_SIZE) for b in range(BATCHES_PER_SENDER)] for s in range(SENDERS)]
    everything = [request for plan in plans for request in plan]
    port = free_port()
    process = fs.start_usage(dbs.usage_url, port)
    answered, stop = {}, threading.Event()
    try:
        senders = [threading.Thread(target=send, args=(port, token, plan, answered, stop)) for plan in plans]
        for sender in senders:
            sender.start()
        for _ in range(1500):  # bounded wait (30 s) for the kill point
            if len(answered) >= KILL_AFTER:
                break
            stop.wait(0.02)
        process.kill()
        process.wait(timeout=30)
        stop.set()
        for sender in senders:
            sender.join(timeout=60)
        assert KILL_AFTER <= len(answered) < len(everything), "the kill must land mid-ingest"
        for response in answered.values():
            assert {r.verdict for r in response.results} == {u.VERDICT_ACCEPTED}

        process = fs.start_usage(dbs.usage_url, port)
        unanswered = [r for r in everything if r.events[0].event_id not in answered]
        acknowledged = [r for r in everything if r.events[0].event_id in answered]
        resent_acknowledged = acknowledged[::2]
        with support.channel(port) as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)
            replies = [
                stub.RecordEvents(r, metadata=support.bearer(token), timeout=60)
                for r in unanswered + resent_acknowledged
            ]
            expected = fs.expected_totals(everything)
            assert totals(stub, token, tenant) == expected
        # A batch is stored whole or not at all: even the ones the kill cut off answer all-new or all-seen.
        for reply in replies[: len(unanswered)]:
            assert {r.verdict for r in reply.results} in ({u.VERDICT_ACCEPTED}, {u.VERDICT_DUPLICATE})
        for reply in replies[len(unanswered) :]:
            assert {r.verdict for r in reply.results} == {u.VERDICT_DUPLICATE}
        assert fs.stored_rows(dbs.usage_url, tenant) == expected  # 0 lost, 0 double, counted in the table
        assert sum(count for _, count in expected.values()) == SENDERS * BATCHES_PER_SENDER * BATCH_SIZE
        print(
            f"\ncrash: {len(everything) * BATCH_SIZE} events in {len(everything)} batches from {SENDERS} senders; "
            f"killed after {len(answered)} answered; resent {len(unanswered)} unanswered + "
            f"{len(resent_acknowledged)} answered batches; lost 0, double 0"
        )
    finally:
        stop.set()
        fs.end(process)
