"""Helpers of the Usage ingest and read tests: events, calls and totals through a real stub."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from tests import support
from tollgate.services.usage import tables
from tollgate.services.usage.repository.postgres import rollup_pass
from tollgate.shared.db import create_engine_for
from tollgate.usage.v1 import usage_pb2 as u

MINUTE_US = 60_000_000
DAY_US = 24 * 60 * MINUTE_US


_pinned_us: int | None = None


def now_us() -> int:
    """Now, in whole minutes, and the same all through one test (`pinned_now`): two events a test sends "an hour
    ago" share their instant, and so their business key, even when a minute turns between them."""
    return _minute_now_us() if _pinned_us is None else _pinned_us


def _minute_now_us() -> int:
    return int(time.time() // 60) * MINUTE_US


@contextlib.contextmanager
def pinned_now() -> Iterator[None]:
    """`now_us` holds still inside the block (tests/conftest.py wraps every test in one)."""
    global _pinned_us
    _pinned_us = _minute_now_us()
    try:
        yield
    finally:
        _pinned_us = None


def ts(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


def event(
    event_id: str, *, metric: str = "api.requests", quantity: int = 1, at_us: int | None = None, **fields
) -> u.UsageEvent:
    """A valid event (an hour ago, from `crm`) unless the fields say otherwise."""
    fields.setdefault("source_service", "crm")
    message = u.UsageEvent(event_id=event_id, metric=metric, quantity=quantity, **fields)
    message.occurred_at.CopyFrom(ts(now_us() - 60 * MINUTE_US if at_us is None else at_us))
    return message


def record(stub, token: str, tenant: str, events, timeout: float = 30) -> list[u.EventResult]:
    response = stub.RecordEvents(
        u.RecordEventsRequest(tenant_id=tenant, events=events), metadata=support.bearer(token), timeout=timeout
    )
    return list(response.results)


def verdicts(results) -> list[str]:
    return [u.Verdict.Name(r.verdict).removeprefix("VERDICT_") for r in results]


def totals(stub, token: str, tenant: str, *, start_us: int | None = None, end_us: int | None = None, **fields) -> dict:
    """{metric or (metric, actor): (quantity, event_count)} over the range (default: the last 40 days)."""
    start_us = now_us() - 40 * DAY_US if start_us is None else start_us
    end_us = now_us() + 60 * MINUTE_US if end_us is None else end_us
    response = stub.GetUsage(
        u.GetUsageRequest(tenant_id=tenant, start_time=ts(start_us), end_time=ts(end_us), **fields),
        metadata=support.bearer(token),
        timeout=30,
    )
    grouped = fields.get("group_by_actor") or fields.get("actor_id")
    return {(t.metric, t.actor_id) if grouped else t.metric: (t.quantity, t.event_count) for t in response.totals}


def every_page(list_page, field: str) -> list:
    """Every item of a listing: `list_page(page_token)` answers one page; tokens are followed (bounded)."""
    found, page_token = [], ""
    for _ in range(1000):
        page = list_page(page_token)
        found.extend(getattr(page, field))
        page_token = page.next_page_token
        if not page_token:
            return found
    raise AssertionError("listing did not end")


def list_all(stub, token: str, tenant: str, page_size: int = 100, **filters) -> list[u.StoredEvent]:
    """Every event of a listing, following page tokens (bounded)."""
    return every_page(
        lambda page_token: stub.ListEvents(
            u.ListEventsRequest(tenant_id=tenant, page_size=page_size, page_token=page_token, **filters),
            metadata=support.bearer(token),
            timeout=30,
        ),
        "events",
    )


def tenant_token(dbs, tenant: str) -> str:
    return support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read"])


def pass_then(dbs, tenant, meanwhile, *, scan: bool = False) -> tuple[int, int]:
    """A pass of the tenant's marks, `meanwhile()` after its snapshot, then its apply on another connection, as
    PgBouncer's transaction pooling may arrange: (marks the pass read, buckets its apply stored)."""
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA)
    pass_id = int(now_us())
    try:
        with engine.connect() as computing, engine.connect() as applying:
            with sessionmaker(bind=computing).begin() as session:
                found, first, last, _ = rollup_pass.compute_pass(
                    session,
                    pass_id,
                    tenant,
                    1000,
                    int(time.time() * 1_000_000),
                    scan_from=1 if scan else 10**9,
                    visible_enough=2.0,
                )
            meanwhile()
            with sessionmaker(bind=applying).begin() as session:
                applied = rollup_pass.apply_pass(session, pass_id, first - 1, last - first + 1, now_us())
                rollup_pass.drop_pass(session, pass_id)
                left = session.execute(
                    text('SELECT count(*) FROM "usage".rollup_work WHERE pass_id = :p'), {"p": pass_id}
                ).scalar_one()
    finally:
        engine.dispose()
    assert left == 0, "the pass's rows outlived it"
    return found, applied


def scans_of(node: dict, relation: str) -> list[dict]:
    """Every node of an EXPLAIN (FORMAT JSON) plan that scans `relation`."""
    found = [node] if node.get("Relation Name") == relation else []
    return found + [scan for child in node.get("Plans", []) for scan in scans_of(child, relation)]
