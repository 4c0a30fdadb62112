"""Every aggregate of every period equals its raw events once rolled up, whatever came late and however
the runs were cut, on SQLite and PostgreSQL.

Hypothesis records batches over five weeks (so weeks straddle months), late ones into buckets already
rolled up, and interleaves runs bounded by max_buckets, which cut passes inside a series. On
PostgreSQL days, weeks and months are folded from stored aggregates of the level below; this holds
the fold to a brute-force sum, and each source_hash to the documented digest of the bucket's events.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests import support
from tests.usage_support import MINUTE_US, event, every_page, now_us, record
from tollgate.services.usage import tables
from tollgate.services.usage.domain.buckets import DAY_US, Period, start_of
from tollgate.services.usage.repository.sqlite.source_hash import pg_hash_text
from tollgate.shared.db import create_engine_for
from tollgate.usage.v1 import usage_pb2 as u

METRICS = ["api.requests", "leads.routed"]
SPAN_DAYS = 33  # inside the 35-day backfill window
INSTANTS = st.integers(0, SPAN_DAYS * 24 * 60 - 1) | st.sampled_from([0, 59, 60, 24 * 60 - 1, 24 * 60])
BATCHES = st.lists(st.tuples(st.sampled_from(METRICS), st.integers(1, 1000), INSTANTS), min_size=1, max_size=10)
RUNS = st.none() | st.just(0) | st.integers(1, 30)  # None: no run; 0: until clean; n: at most n buckets


@settings(max_examples=25, deadline=None)
@given(steps=st.lists(st.tuples(BATCHES, RUNS), min_size=1, max_size=5))
def test_after_any_interleaving_of_late_events_and_cut_runs_every_aggregate_equals_its_raw_events(
    dbs, usage_stub, usage_admin_stub, admin_token, steps
):
    tenant = support.new_tenant()
    base = start_of(Period.DAY, now_us() - SPAN_DAYS * DAY_US)
    sent = 0
    for batch, run in steps:
        results = record(
            usage_stub,
            admin_token,
            tenant,
            [
                event(f"e{sent + n}", metric=m, quantity=q, at_us=base + minute * MINUTE_US)
                for n, (m, q, minute) in enumerate(batch)
            ],
        )
        sent += len(batch)
        assert all(r.verdict == u.VERDICT_ACCEPTED for r in results)
        if run is not None:
            _run(usage_admin_stub, admin_token, tenant, run)
    report = _run(usage_admin_stub, admin_token, tenant, 0)
    assert report.buckets_remaining == 0

    stored = _stored_events(dbs, tenant)
    for metric in METRICS:
        expected = _brute_force_buckets([e for e in stored if e[0] == metric])
        found = {}
        for period in Period:
            for a in _aggregates(usage_stub, admin_token, tenant, metric, int(period)):
                found[(int(period), a.period_start.seconds * 1_000_000)] = (
                    a.total_quantity,
                    a.event_count,
                    a.source_hash,
                )
                assert not a.dirty
        assert found == expected


def _run(admin_stub, token, tenant, max_buckets):
    return admin_stub.RunRollup(
        u.RunRollupRequest(tenant_id=tenant, max_buckets=max_buckets), metadata=support.bearer(token), timeout=60
    )


def _aggregates(stub, token, tenant, metric, period):
    return every_page(
        lambda page_token: stub.ListAggregates(
            u.ListAggregatesRequest(
                tenant_id=tenant, metric=metric, period=period, page_size=1000, page_token=page_token
            ),
            metadata=support.bearer(token),
            timeout=30,
        ),
        "aggregates",
    )


def _stored_events(dbs, tenant) -> list[tuple]:
    """(metric, quantity, occurred_at_us, event_id, content_hash) of the tenant's stored events."""
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    try:
        with engine.connect() as connection:
            e = tables.events.c
            return [
                tuple(row)
                for row in connection.execute(
                    select(e.metric, e.quantity, e.occurred_at_us, e.event_id, e.content_hash).where(
                        e.tenant_id == tenant
                    )
                )
            ]
    finally:
        engine.dispose()


def _brute_force_buckets(stored) -> dict:
    """{(period, start): (quantity, count, source_hash)} summed event by event, the digest as documented."""
    sums: dict = {}
    for _, quantity, at_us, event_id, content_hash in stored:
        for period in Period:
            key = (int(period), start_of(period, at_us))
            total, count, digest = sums.get(key, (0, 0, 0))
            sums[key] = (total + quantity, count + 1, digest + pg_hash_text(f"{event_id}:{content_hash}".encode()))
    return {key: (total, count, format(digest % 2**64, "016x")) for key, (total, count, digest) in sums.items()}
