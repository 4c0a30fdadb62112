"""SQL of ingestion: insert each new event once, find the stored events that share keys with others."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tollgate.services.usage.domain.dedup import LookupKeys
from tollgate.services.usage.domain.model import Candidate, StoredKeys
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import events

COLUMNS = [column.name for column in events.columns]


def _row(tenant_id: str, candidate: Candidate, received_at_us: int) -> tuple:
    event = candidate.event
    return (
        tenant_id,
        event.event_id,
        event.metric,
        event.quantity,
        event.occurred_at_us,
        event.actor_id,
        event.source_service,
        event.correlation_id or None,
        event.idempotency_key or None,
        candidate.metadata_json,
        candidate.classification.name,
        candidate.content_hash,
        received_at_us,
        candidate.business_key,
        candidate.dimensions_json,
    )


def insert_new(
    session: Session,
    tenant_id: str,
    candidates: list[Candidate],
    received_at_us: int,
    *,
    bulk: bool = True,
    storage: Storage,
) -> set[str]:
    """Insert the events no unique key refuses; return the event ids inserted.

    The candidates share no key with each other, so an event id in the answer is an insert of this call.
    `bulk` marks the transaction's first insert (see Storage.insert_events).
    """
    rows = [_row(tenant_id, candidate, received_at_us) for candidate in candidates]
    if not rows:
        return set()
    return storage.insert_events(session, rows, bulk=bulk)


def insert_rows(session: Session, rows: list[tuple], *, storage: Storage) -> set[str]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING event_id of the rows, as one executemany."""
    statement = storage.insert(events).on_conflict_do_nothing().returning(events.c.event_id)
    return set(session.execute(statement, [dict(zip(COLUMNS, row)) for row in rows]).scalars())


def find_existing(session: Session, tenant_id: str, keys: LookupKeys, *, storage: Storage) -> list[StoredKeys]:
    """The stored events of the tenant holding any of the keys."""
    matches = [storage.one_of(events.c.event_id, keys.event_ids)]
    if keys.idempotency_keys:
        matches.append(storage.one_of(events.c.idempotency_key, keys.idempotency_keys))
    if keys.correlation_ids:
        matches.append(storage.one_of(events.c.correlation_id, keys.correlation_ids))
    statement = select(
        events.c.event_id,
        events.c.idempotency_key,
        events.c.correlation_id,
        events.c.metric,
        events.c.occurred_at_us,
        events.c.content_hash,
        events.c.business_key,
    ).where(events.c.tenant_id == tenant_id, or_(*matches))
    return [StoredKeys(*row) for row in session.execute(statement)]
