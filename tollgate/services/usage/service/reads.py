"""GetUsage and ListEvents: exact answers at any rollup lag (docs/usage.md, "Reading usage")."""

from __future__ import annotations

from dataclasses import replace

from tollgate.services.usage.domain import horizon, read_plan
from tollgate.services.usage.domain.buckets import MAX_TOTAL
from tollgate.services.usage.domain.model import Classification
from tollgate.services.usage.domain.queries import EventFilter, UsageQuery, UsageTotal
from tollgate.services.usage.repository import Connection, Connections
from tollgate.services.usage.repository import events as events_sql
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service.checks import check_instant, check_tenant, check_text, required_instant
from tollgate.shared import auth, clock, pagination
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import FailedPrecondition, OutOfRange, require

MAX_METRICS = 1000


def get_usage(query: UsageQuery, *, connections: Connections, storage: Storage, caller: Principal) -> list[UsageTotal]:
    """Exact totals per metric (and actor) over [start, end), read in the same database the writes commit to."""
    check_tenant(query.tenant_id)
    auth.require_tenant(caller, query.tenant_id)
    span = _check_query(query)
    parts = [query]
    if query.include_tenant_totals:  # the tenant's part too, on the same connection: one round trip for the caller
        parts.insert(0, replace(query, actor_id="", include_tenant_totals=False))
    rows: list[tuple] = []
    with connections.connect() as connection:
        for part in parts:
            rows += _totals(connection, part, span, storage)
    _check_fits(rows, span)
    return [
        UsageTotal(metric, actor, quantity, count, Classification[classification] if classification else None)
        for metric, actor, quantity, count, classification in sorted(rows, key=lambda row: (row[0], row[1]))
    ]


def _totals(connection: Connection, query: UsageQuery, span: horizon.Span, storage: Storage) -> list[tuple]:
    cover = read_plan.plan(*span, use_aggregates=not query.by_actor)
    rows, purged_before = storage.usage_totals(connection, query, cover)
    if purged_before is not None and not horizon.serves(cover, purged_before):
        raise FailedPrecondition(_purged_message(cover, purged_before, query.by_actor), reason="RAW_EVENTS_PURGED")
    return rows


def _check_query(query: UsageQuery) -> horizon.Span:
    """Check the question; its range [start, end), both given."""
    check_text("actor_id", query.actor_id)
    require(len(query.metrics) <= MAX_METRICS, "metrics", f"names at most {MAX_METRICS} metrics")
    for position, metric in enumerate(query.metrics):
        check_text(f"metrics[{position}]", metric, required=True)
    start_us = required_instant("start_time", query.start_us)
    end_us = required_instant("end_time", query.end_us)
    require(start_us < end_us, "end_time", "must be after start_time")
    if query.include_tenant_totals:
        require(bool(query.actor_id), "include_tenant_totals", "needs actor_id (the tenant's totals come beside it)")
        require(not query.group_by_actor, "include_tenant_totals", "cannot be combined with group_by_actor")
    return start_us, end_us


def _check_fits(rows: list[tuple], span: horizon.Span) -> None:
    """Raise OutOfRange when a total is beyond int64, the type of UsageTotal.quantity."""
    for metric, actor, quantity, _, _ in rows:
        if quantity > MAX_TOTAL:
            whose = f" of actor {actor!r}" if actor else ""
            raise OutOfRange(
                f"the total of metric {metric!r}{whose} from {clock.iso(span[0])} to "
                f"{clock.iso(span[1])} is {quantity}, beyond the largest int64 ({MAX_TOTAL}); "
                "ask for a shorter range and add the totals up",
                reason="TOTAL_OUT_OF_RANGE",
            )


def _purged_message(cover: read_plan.ReadPlan, purged_before_us: int, by_actor: bool) -> str:
    horizon = clock.iso(purged_before_us)
    if by_actor:
        return (
            f"per-actor totals are summed from raw events, and this tenant's raw events before {horizon} "
            f"were purged; use a start_time at or after {horizon}"
        )
    return (
        f"this range needs raw events before {horizon}, which were purged for this tenant (only hourly and "
        f"daily totals remain); use start_time and end_time on whole hours (UTC), or a start_time at or "
        f"after {horizon}"
    )


def list_events(
    where: EventFilter, *, page_size: int, page_token: str, connections: Connections, caller: Principal
) -> pagination.Page:
    """One page of the tenant's events matching the filter, oldest first."""
    check_tenant(where.tenant_id)
    auth.require_tenant(caller, where.tenant_id)
    _check_filter(where)
    cursor = pagination.start(page_size, page_token, where.scope(), shape=(int, str))
    with connections.connect() as connection:
        found = events_sql.list_events(connection, where, after=cursor.after, limit=cursor.limit + 1)
    return cursor.page(found, lambda stored: (stored.event.occurred_at_us, stored.event.event_id))


def _check_filter(where: EventFilter) -> None:
    for field in ("metric", "actor_id", "source_service", "correlation_id"):
        check_text(field, getattr(where, field))
    check_instant("start_time", where.start_us)
    check_instant("end_time", where.end_us)
    if where.start_us is not None and where.end_us is not None:
        require(where.start_us < where.end_us, "end_time", "must be after start_time")
