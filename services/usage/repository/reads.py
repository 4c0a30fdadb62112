"""SQL of the reads: exact totals from aggregates and raw events (see read_plan.py), and event listings."""

from __future__ import annotations

import json

from sqlalchemy import and_, exists, func, literal, null, or_, select, union_all

from services.usage.buckets import DAY_US, HOUR_US, Period
from services.usage.domain import Classification, Event
from services.usage.queries import EventFilter, StoredEvent, UsageQuery
from services.usage.read_plan import ReadPlan
from services.usage.tables import aggregates, dirty_buckets, events, metrics, purge_horizons


def usage_totals(session, query: UsageQuery, plan: ReadPlan) -> tuple[list[tuple], int | None]:
    """(metric, actor_id, quantity, event_count, classification) rows, and the tenant's purge horizon.

    One statement, so one snapshot on both dialects (a dirty mark and the events that made it
    commit together, as do a recomputed aggregate and the deletion of its mark), and one round trip.
    """
    by_actor = query.group_by_actor or bool(query.actor_id)
    parts = [_raw_part(query, plan.raw, by_actor)] if plan.raw else []
    if plan.hours or plan.days:
        parts += _bucket_parts(query, plan)
    union = union_all(*parts).subquery("parts")
    keys = [union.c.metric] + ([union.c.actor_id] if by_actor else [])
    totals = select(*keys, func.sum(union.c.quantity), func.sum(union.c.event_count), metrics.c.classification) \
        .select_from(union.outerjoin(metrics, metrics.c.name == union.c.metric)) \
        .group_by(*keys, metrics.c.classification).having(func.sum(union.c.event_count) > 0)
    horizon = select(null(), *([null()] if by_actor else []), purge_horizons.c.purged_before_us, literal(0), null()) \
        .where(purge_horizons.c.tenant_id == query.tenant_id)
    rows, purged_before = [], None
    for row in session.execute(union_all(totals, horizon)):
        if row[0] is None:
            purged_before = int(row[-3])
        else:
            rows.append((row[0], row[1] if by_actor else "", int(row[-3]), int(row[-2]), row[-1]))
    return sorted(rows, key=lambda r: (r[0], r[1])), purged_before


def _raw_part(query: UsageQuery, ranges, by_actor: bool):
    """Raw events of the edges (of the whole range, without aggregates)."""
    keys = [events.c.metric] + ([events.c.actor_id] if by_actor else [])
    statement = select(*keys, func.sum(events.c.quantity).label("quantity"), func.count().label("event_count")) \
        .where(events.c.tenant_id == query.tenant_id,
               or_(*[and_(events.c.occurred_at_us >= low, events.c.occurred_at_us < high) for low, high in ranges])) \
        .group_by(*keys)
    if query.actor_id:
        statement = statement.where(events.c.actor_id == query.actor_id)
    return _only_metrics(statement, events.c.metric, query)


def _bucket_parts(query: UsageQuery, plan: ReadPlan) -> list:
    """Whole hours and days: each from its aggregate when clean, else from the level below.

    A dirty day is read from its clean hours and the raw events of its dirty hours; a dirty hour
    (whole, or inside a dirty day) from its raw events. Levels are dirtied and recomputed
    independently, so each aggregate is trusted only when its own bucket is clean.
    """
    tenant = query.tenant_id
    edge_hours = [(low, high) for low, high in plan.hours]
    days = [plan.days] if plan.days else []
    day_mark, hour_mark = dirty_buckets.alias("day_mark"), dirty_buckets.alias("hour_mark")
    parts = []

    def clean_aggregates(period: Period, ranges, *, inside_dirty_days: bool = False):
        statement = select(aggregates.c.metric, func.sum(aggregates.c.total_quantity).label("quantity"),
                           func.sum(aggregates.c.event_count).label("event_count")) \
            .where(aggregates.c.tenant_id == tenant, aggregates.c.period == int(period),
                   ~_marked(period, aggregates.c.metric, aggregates.c.period_start_us, tenant)) \
            .group_by(aggregates.c.metric)
        starts = aggregates.c.period_start_us
        if inside_dirty_days:
            statement = statement.join_from(aggregates, day_mark, and_(
                day_mark.c.tenant_id == tenant, day_mark.c.metric == aggregates.c.metric,
                day_mark.c.period == int(Period.DAY), day_mark.c.period_start_us <= starts,
                day_mark.c.period_start_us > starts - DAY_US))
            starts = day_mark.c.period_start_us
        statement = statement.where(or_(*[and_(starts >= low, starts < high) for low, high in ranges]))
        return _only_metrics(statement, aggregates.c.metric, query)

    if days:
        parts.append(clean_aggregates(Period.DAY, days))
        parts.append(clean_aggregates(Period.HOUR, days, inside_dirty_days=True))
    if edge_hours:
        parts.append(clean_aggregates(Period.HOUR, edge_hours))
    # Raw events of dirty hours that are read at hour level: edge hours, and hours of dirty days.
    hour_start = hour_mark.c.period_start_us
    read_at_hour_level = [and_(hour_start >= low, hour_start < high) for low, high in edge_hours]
    read_at_hour_level += [and_(hour_start >= low, hour_start < high, exists().where(
        day_mark.c.tenant_id == tenant, day_mark.c.metric == hour_mark.c.metric, day_mark.c.period == int(Period.DAY),
        day_mark.c.period_start_us <= hour_start, day_mark.c.period_start_us > hour_start - DAY_US))
        for low, high in days]
    dirty_hour_events = select(events.c.metric, func.sum(events.c.quantity).label("quantity"),
                               func.count().label("event_count")) \
        .join_from(hour_mark, events, and_(events.c.tenant_id == tenant, events.c.metric == hour_mark.c.metric,
                                           events.c.occurred_at_us >= hour_start,
                                           events.c.occurred_at_us < hour_start + HOUR_US)) \
        .where(hour_mark.c.tenant_id == tenant, hour_mark.c.period == int(Period.HOUR), or_(*read_at_hour_level)) \
        .group_by(events.c.metric)
    parts.append(_only_metrics(dirty_hour_events, events.c.metric, query))
    return parts


def _marked(period: Period, metric_column, start_column, tenant: str):
    mark = dirty_buckets.alias("mark")
    return exists().where(mark.c.tenant_id == tenant, mark.c.metric == metric_column,
                          mark.c.period == int(period), mark.c.period_start_us == start_column)


def _only_metrics(statement, metric_column, query: UsageQuery):
    return statement.where(metric_column.in_(query.metrics)) if query.metrics else statement


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
