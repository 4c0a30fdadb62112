"""SQL of ListEvents: a tenant's events by filter, oldest first, a page at a time."""

from __future__ import annotations

import json

from sqlalchemy import Connection, and_, or_, select

from tollgate.services.usage.domain.model import Classification, Event
from tollgate.services.usage.domain.queries import EventFilter, StoredEvent
from tollgate.services.usage.tables import events


def list_events(
    connection: Connection, where: EventFilter, *, after: tuple[int, str] | None, limit: int
) -> list[StoredEvent]:
    """Events matching the filter, ordered by (occurred_at, event_id), resuming after `after`."""
    statement = (
        select(events)
        .where(events.c.tenant_id == where.tenant_id)
        .order_by(events.c.occurred_at_us, events.c.event_id)
        .limit(limit)
    )
    for column, value in (
        (events.c.metric, where.metric),
        (events.c.actor_id, where.actor_id),
        (events.c.source_service, where.source_service),
        (events.c.correlation_id, where.correlation_id),
    ):
        if value:
            statement = statement.where(column == value)
    if where.start_us is not None:
        statement = statement.where(events.c.occurred_at_us >= where.start_us)
    if where.end_us is not None:
        statement = statement.where(events.c.occurred_at_us < where.end_us)
    if after is not None:
        statement = statement.where(
            or_(
                events.c.occurred_at_us > after[0],
                and_(events.c.occurred_at_us == after[0], events.c.event_id > after[1]),
            )
        )
    return [_stored(row) for row in connection.execute(statement)]


def _stored(row) -> StoredEvent:
    event = Event(
        row.event_id,
        row.metric,
        row.quantity,
        row.occurred_at_us,
        row.actor_id,
        row.source_service,
        row.correlation_id or "",
        row.idempotency_key or "",
        json.loads(row.metadata) if row.metadata else None,
        json.loads(row.dimensions) if row.dimensions else None,
    )
    return StoredEvent(row.tenant_id, event, Classification[row.classification], row.received_at_us)
