"""The bound on distinct dimension combinations per tenant and metric (USAGE_MAX_DIMENSION_COMBINATIONS), through
real Usage servers over gRPC: past the limit a new combination is REJECTED with its own reason and changes nothing,
while known combinations, events without dimensions, other metrics and other tenants go on; two servers (replicas
with their own caches) sending new combinations at once never let in more than the limit (PostgreSQL)."""

import threading
import uuid

import pytest

from tests import support
from tests.usage_support import event, list_all, record, tenant_token, totals, verdicts
from tollgate.services.usage.config import Settings
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

LIMIT = 3


def _limited_server(url: str, limit: int = LIMIT):
    from tollgate.services.usage import server as usage_server

    settings = support.test_settings(
        Settings(), database_url=url, rollup_interval_seconds=0, max_dimension_combinations=limit
    )
    return usage_server.build(settings)


@pytest.fixture(scope="module")
def limited_stub(dbs):
    """A Usage server of this backend whose limit is LIMIT combinations."""
    running = _limited_server(dbs.usage_url)
    with support.channel(running.port) as channel:
        yield usage_pb2_grpc.UsageServiceStub(channel)
    running.stop(grace=1)


def _declare(stub, admin_token: str) -> str:
    name = f"ai.tokens.{uuid.uuid4().hex[:10]}"
    stub.UpsertMetric(
        u.UpsertMetricRequest(
            metric=u.Metric(
                name=name, classification=u.CLASSIFICATION_BILLABLE, unit="token", dimensions=["model", "token_type"]
            )
        ),
        metadata=support.bearer(admin_token),
        timeout=30,
    )
    return name


@pytest.fixture
def meter(usage_admin_stub, admin_token) -> str:
    """A fresh metric declaring model and token_type (the catalog is global: each test makes its own)."""
    return _declare(usage_admin_stub, admin_token)


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


def _tokens(model: str, token_type: str = "prompt") -> dict[str, str]:
    return {"model": model, "token_type": token_type}


def test_past_the_limit_new_combinations_are_rejected_and_known_ones_accepted(
    limited_stub, usage_admin_stub, admin_token, dbs, token, tenant, meter
):
    first = record(
        limited_stub, token, tenant, [event(f"a{n}", metric=meter, dimensions=_tokens(f"m{n}")) for n in range(2)]
    )
    assert verdicts(first) == ["ACCEPTED"] * 2
    results = record(
        limited_stub,
        token,
        tenant,
        [
            event("b0", metric=meter, dimensions=_tokens("m2")),  # the third: fits
            event("b1", metric=meter, dimensions=_tokens("m3")),  # a fourth: beyond
            event("b2", metric=meter, dimensions=_tokens("m0")),  # known
            event("b3", metric=meter, dimensions=_tokens("m3")),  # beyond, again in the batch
            event("b4", metric=meter),  # no dimensions: no combination
            event("b5", metric=meter, dimensions=_tokens("m2")),  # let in by b0
        ],
    )
    assert verdicts(results) == ["ACCEPTED", "REJECTED", "ACCEPTED", "REJECTED", "ACCEPTED", "ACCEPTED"]
    assert {r.reason for r in results if r.verdict == u.VERDICT_REJECTED} == {
        u.REJECT_REASON_TOO_MANY_DIMENSION_COMBINATIONS
    }
    assert '"model":"m3"' in results[1].message and f"{LIMIT} distinct combinations" in results[1].message
    # Later batches: still refused, known ones still in; another metric and another tenant have their own room.
    later = record(
        limited_stub,
        token,
        tenant,
        [
            event("c0", metric=meter, dimensions=_tokens("m1", "completion")),
            event("c1", metric=meter, dimensions=_tokens("m1")),
        ],
    )
    assert verdicts(later) == ["REJECTED", "ACCEPTED"]
    other_meter = _declare(usage_admin_stub, admin_token)
    other_tenant = support.new_tenant()
    assert (
        verdicts(
            record(
                limited_stub,
                token,
                tenant,
                [event(f"d{n}", metric=other_meter, dimensions=_tokens(f"m{n}")) for n in range(3)],
            )
        )
        == ["ACCEPTED"] * 3
    )
    assert (
        verdicts(
            record(
                limited_stub,
                tenant_token(dbs, other_tenant),
                other_tenant,
                [event(f"e{n}", metric=meter, dimensions=_tokens(f"x{n}")) for n in range(3)],
            )
        )
        == ["ACCEPTED"] * 3
    )
    stored = {s.event.event_id for s in list_all(limited_stub, token, tenant, metric=meter)}
    assert stored == {"a0", "a1", "b0", "b2", "b4", "b5", "c1"}


def test_rejected_combinations_change_nothing(limited_stub, dbs, token, tenant, meter):
    record(
        limited_stub, token, tenant, [event(f"a{n}", metric=meter, dimensions=_tokens(f"m{n}")) for n in range(LIMIT)]
    )
    before = totals(limited_stub, token, tenant)
    refused = record(
        limited_stub,
        token,
        tenant,
        [event("over", metric=meter, quantity=7, idempotency_key="k-over", dimensions=_tokens("new"))],
    )
    assert verdicts(refused) == ["REJECTED"]
    assert totals(limited_stub, token, tenant) == before
    assert "over" not in {s.event.event_id for s in list_all(limited_stub, token, tenant)}
    # Its event id and idempotency key name nothing: the same event without dimensions is new, and accepted.
    again = record(limited_stub, token, tenant, [event("over", metric=meter, quantity=7, idempotency_key="k-over")])
    assert verdicts(again) == ["ACCEPTED"]


def test_a_combination_counts_only_once_an_event_carrying_it_is_stored(limited_stub, token, tenant, meter):
    record(limited_stub, token, tenant, [event("a", metric=meter, dimensions=_tokens("m0"))])
    # A CONFLICT (event id "a" with other values) stores nothing, so its combination takes no room.
    assert verdicts(record(limited_stub, token, tenant, [event("a", metric=meter, dimensions=_tokens("other"))])) == [
        "CONFLICT"
    ]
    fill = [event(f"b{n}", metric=meter, dimensions=_tokens(f"m{n}")) for n in range(1, LIMIT)]
    assert verdicts(record(limited_stub, token, tenant, fill)) == ["ACCEPTED"] * (LIMIT - 1)


def test_servers_started_later_know_the_stored_combinations(dbs, limited_stub, token, tenant, meter):
    record(
        limited_stub, token, tenant, [event(f"a{n}", metric=meter, dimensions=_tokens(f"m{n}")) for n in range(LIMIT)]
    )
    fresh = _limited_server(dbs.usage_url)
    try:
        with support.channel(fresh.port) as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)
            results = record(
                stub,
                token,
                tenant,
                [
                    event("b0", metric=meter, dimensions=_tokens("m1")),
                    event("b1", metric=meter, dimensions=_tokens("n")),
                ],
            )
    finally:
        fresh.stop(grace=1)
    assert verdicts(results) == ["ACCEPTED", "REJECTED"]


def test_two_replicas_sending_new_combinations_at_once_never_pass_the_limit(postgres_url, admin_token_pg):
    dbs = support.postgres_databases(postgres_url)
    limit = 20
    replicas = [_limited_server(dbs.usage_url, limit) for _ in range(2)]
    tenant = support.new_tenant()
    token = tenant_token(dbs, tenant)
    try:
        channels = [support.channel(r.port) for r in replicas]
        admin = usage_pb2_grpc.UsageAdminServiceStub(channels[0])
        meter = _declare(admin, admin_token_pg)
        barrier = threading.Barrier(2)
        answers: dict[int, list] = {}

        def send(side: int) -> None:
            stub = usage_pb2_grpc.UsageServiceStub(channels[side])
            barrier.wait()
            answers[side] = []
            for batch in range(4):
                # Each side brings its own new combinations, and some the other side brings too.
                sent = [
                    event(
                        f"s{side}-{batch}-{n}",
                        metric=meter,
                        dimensions=_tokens(f"m{batch}-{n}" if n % 2 else f"side{side}-{batch}-{n}"),
                    )
                    for n in range(8)
                ]
                answers[side] += list(zip(sent, record(stub, token, tenant, sent)))

        threads = [threading.Thread(target=send, args=(side,)) for side in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stub = usage_pb2_grpc.UsageServiceStub(channels[0])
        stored = list_all(stub, token, tenant, metric=meter)
    finally:
        for channel in channels:
            channel.close()
        for replica in replicas:
            replica.stop(grace=1)
    combinations = {tuple(sorted(s.event.dimensions.items())) for s in stored}
    assert len(combinations) == limit
    accepted = [sent for side in (0, 1) for sent, result in answers[side] if result.verdict == u.VERDICT_ACCEPTED]
    assert {s.event.event_id for s in stored} == {e.event_id for e in accepted}
    for side in (0, 1):
        for sent, result in answers[side]:
            if result.verdict == u.VERDICT_REJECTED:
                assert result.reason == u.REJECT_REASON_TOO_MANY_DIMENSION_COMBINATIONS
                assert tuple(sorted(sent.dimensions.items())) not in combinations


@pytest.fixture
def admin_token_pg(postgres_url) -> str:
    return support.make_token(support.postgres_databases(postgres_url), tenant=None, scopes=["usage:admin"])
