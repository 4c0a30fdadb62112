"""SQL of the reads: exact totals from aggregates and raw events (see read_plan.py), and event listings."""

from __future__ import annotations

import functools
import json

from sqlalchemy import String, and_, any_, bindparam, exists, func, literal, null, or_, select, union_all
from sqlalchemy.dialects import postgresql

from services.usage.buckets import DAY_US, HOUR_US, Period
from services.usage.domain import Classification, Event
from services.usage.queries import EventFilter, StoredEvent, UsageQuery
from services.usage.read_plan import ReadPlan
from services.usage.tables import aggregates, dirty_buckets, events, metrics, purge_horizons

# Short aliases keep GetUsage's statement under psycopg's 4 KiB cache limit for converted queries
# (MAX_CACHED_STATEMENT_LENGTH): over it, psycopg parses the whole text again on every call.
_events, _aggregates, _metrics, _horizons = events.alias("e"), aggregates.alias("a"), metrics.alias("c"), \
    purge_horizons.alias("p")


def usage_totals(connection, query: UsageQuery, plan: ReadPlan) -> tuple[list[tuple], int | None]:
    """(metric, actor_id, quantity, event_count, classification) rows, and the tenant's purge horizon.

    One statement, so one snapshot on both dialects (a dirty mark and the events that made it
    commit together, as do a recomputed aggregate and the deletion of its mark), and one round trip.
    """
    by_actor, postgres = query.by_actor, connection.dialect.name == "postgresql"
    statement = _totals_statement(by_actor, bool(query.actor_id), bool(query.metrics), len(plan.raw),
                                  bool(plan.hours or plan.days), postgres)
    rows, purged_before = [], None
    for row in connection.execute(statement, _parameters(query, plan)):
        if row[0] is None:
            purged_before = int(row[-3])
        else:
            rows.append((row[0], row[1] if by_actor else "", int(row[-3]), int(row[-2]), row[-1]))
    return sorted(rows, key=lambda r: (r[0], r[1])), purged_before


def _parameters(query: UsageQuery, plan: ReadPlan) -> dict:
    """The plan as bind parameters of the fixed-shape statement; an absent range is empty, (0, 0)."""
    raw = list(plan.raw) + [(0, 0)] * (2 - len(plan.raw))
    hours = list(plan.hours) + [(0, 0)] * (2 - len(plan.hours))
    days = plan.days or (0, 0)
    return {"tenant": query.tenant_id, "actor": query.actor_id, "metrics": list(query.metrics),
            "raw0_lo": raw[0][0], "raw0_hi": raw[0][1], "raw1_lo": raw[1][0], "raw1_hi": raw[1][1],
            "hour0_lo": hours[0][0], "hour0_hi": hours[0][1], "hour1_lo": hours[1][0], "hour1_hi": hours[1][1],
            "day_lo": days[0], "day_hi": days[1]}


def _within(column, name: str):
    return and_(column >= bindparam(f"{name}_lo"), column < bindparam(f"{name}_hi"))


@functools.cache
def _totals_statement(by_actor: bool, actor_filter: bool, metric_filter: bool, raw_ranges: int, buckets: bool,
                      postgres: bool):
    """The statement of one shape of question, built once: a call only binds its parameters.

    Shapes differ only where a plan leaves a part out entirely (no raw edge, or one; no whole
    hour): an always-empty range still costs the planner, and an OR of ranges hides a single
    range's index scan. A list of metrics is one array parameter on PostgreSQL (`= ANY`), so the
    text stays the same whatever the list's length: psycopg converts it once and the server plans
    it once, where an IN list (SQLite's) made a new statement per length, 16 metrics cost ~1 ms more.
    """
    tenant = bindparam("tenant")
    metrics = any_(bindparam("metrics", type_=postgresql.ARRAY(String))) if postgres \
        else bindparam("metrics", expanding=True)

    def only(statement, metric_column):
        if not metric_filter:
            return statement
        return statement.where(metric_column == metrics if postgres else metric_column.in_(metrics))

    keys = [_events.c.metric] + ([_events.c.actor_id] if by_actor else [])
    parts = []
    if raw_ranges:
        ranges = [_within(_events.c.occurred_at_us, f"raw{n}") for n in range(raw_ranges)]
        raw = select(*keys, func.sum(_events.c.quantity).label("quantity"), func.count().label("event_count")) \
            .where(_events.c.tenant_id == tenant, or_(*ranges)).group_by(*keys)
        if actor_filter:
            raw = raw.where(_events.c.actor_id == bindparam("actor"))
        parts.append(only(raw, _events.c.metric))
    if buckets:
        parts += [only(part, metric) for part, metric in _bucket_parts(tenant)]
    union = union_all(*parts).subquery("parts")
    keys = [union.c.metric] + ([union.c.actor_id] if by_actor else [])
    totals = select(*keys, func.sum(union.c.quantity), func.sum(union.c.event_count), _metrics.c.classification) \
        .select_from(union.outerjoin(_metrics, _metrics.c.name == union.c.metric)) \
        .group_by(*keys, _metrics.c.classification).having(func.sum(union.c.event_count) > 0)
    horizon = select(null(), *([null()] if by_actor else []), _horizons.c.purged_before_us, literal(0), null()) \
        .where(_horizons.c.tenant_id == tenant)
    return union_all(totals, horizon)


def _bucket_parts(tenant) -> list[tuple]:
    """(statement, its metric column) for whole hours and days: each from its aggregate when clean,
    else from the level below.

    A dirty day is read from its clean hours and the raw events of its dirty hours; a dirty hour
    (an edge hour, or one inside a dirty day) from its raw events. Periods are dirtied and
    recomputed independently, so each aggregate is trusted only when its own bucket is clean.
    """
    day_mark, hour_mark = dirty_buckets.alias("dm"), dirty_buckets.alias("hm")

    def clean(period: Period, *, inside_dirty_days: bool = False):
        statement = select(_aggregates.c.metric, func.sum(_aggregates.c.total_quantity).label("quantity"),
                           func.sum(_aggregates.c.event_count).label("event_count")) \
            .where(_aggregates.c.tenant_id == tenant, _aggregates.c.period == int(period),
                   ~_marked(period, _aggregates.c.metric, _aggregates.c.period_start_us, tenant)) \
            .group_by(_aggregates.c.metric)
        starts = _aggregates.c.period_start_us
        if inside_dirty_days:
            return statement.join_from(_aggregates, day_mark, and_(
                day_mark.c.tenant_id == tenant, day_mark.c.metric == _aggregates.c.metric,
                day_mark.c.period == int(Period.DAY), starts >= day_mark.c.period_start_us,
                starts < day_mark.c.period_start_us + DAY_US)).where(_within(day_mark.c.period_start_us, "day"))
        if period is Period.DAY:
            return statement.where(_within(starts, "day"))
        return statement.where(or_(_within(starts, "hour0"), _within(starts, "hour1")))

    hour_start = hour_mark.c.period_start_us
    day_is_dirty = exists().where(
        day_mark.c.tenant_id == tenant, day_mark.c.metric == hour_mark.c.metric, day_mark.c.period == int(Period.DAY),
        day_mark.c.period_start_us <= hour_start, day_mark.c.period_start_us > hour_start - DAY_US)
    # Raw events of the dirty hours read at hour level: edge hours, and hours of dirty days.
    dirty_hour_events = select(_events.c.metric, func.sum(_events.c.quantity).label("quantity"),
                               func.count().label("event_count")) \
        .join_from(hour_mark, _events, and_(_events.c.tenant_id == tenant, _events.c.metric == hour_mark.c.metric,
                                           _events.c.occurred_at_us >= hour_start,
                                           _events.c.occurred_at_us < hour_start + HOUR_US)) \
        .where(hour_mark.c.tenant_id == tenant, hour_mark.c.period == int(Period.HOUR),
               or_(_within(hour_start, "hour0"), _within(hour_start, "hour1"),
                   and_(_within(hour_start, "day"), day_is_dirty))) \
        .group_by(_events.c.metric)
    metric = _aggregates.c.metric
    return [(clean(Period.DAY), metric), (clean(Period.HOUR, inside_dirty_days=True), metric),
            (clean(Period.HOUR), metric), (dirty_hour_events, _events.c.metric)]


def _marked(period: Period, metric_column, start_column, tenant):
    mark = dirty_buckets.alias("m")
    return exists().where(mark.c.tenant_id == tenant, mark.c.metric == metric_column,
                          mark.c.period == int(period), mark.c.period_start_us == start_column)


def list_events(session, where: EventFilter, *, after: tuple[int, str] | None, limit: int) -> list[StoredEvent]:
    """Events matching the filter, ordered by (occurred_at, event_id), resuming after `after`."""
    statement = select(events).where(events.c.tenant_id == where.tenant_id) \
        .order_by(events.c.occurred_at_us, events.c.event_id).limit(limit)
    for column, value in ((events.c.metric, where.metric), (events.c.actor_id, where.actor_id),
                          (events.c.source_service, where.source_service),
                          (events.c.correlation_id, where.correlation_id)):
        if value:
            statement = statement.where(column == value)
    if where.start_us is not None:
        statement = statement.where(events.c.occurred_at_us >= where.start_us)
    if where.end_us is not None:
        statement = statement.where(events.c.occurred_at_us < where.end_us)
    if after is not None:
        statement = statement.where(or_(events.c.occurred_at_us > after[0],
                                        and_(events.c.occurred_at_us == after[0], events.c.event_id > after[1])))
    return [_stored(row) for row in session.execute(statement)]


def _stored(row) -> StoredEvent:
    event = Event(row.event_id, row.metric, row.quantity, row.occurred_at_us, row.actor_id, row.source_service,
                  row.correlation_id or "", row.idempotency_key or "",
                  json.loads(row.metadata) if row.metadata else None)
    return StoredEvent(row.tenant_id, event, Classification[row.classification], row.received_at_us)
