"""SQL of ingestion: insert each new event once, find the stored events that share keys with others, and keep the
dimension combinations each tenant's events of a metric carry."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, func, literal_column, select, union
from sqlalchemy.orm import Session

from tollgate.services.usage.domain.catalog import IngestCatalog
from tollgate.services.usage.domain.dedup import LookupKeys
from tollgate.services.usage.domain.model import Candidate, StoredKeys
from tollgate.services.usage.repository import catalog, purge
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import dimension_combinations, events
from tollgate.shared import driver

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


def begin_batch(session: Session, tenant_id: str, *, storage: Storage) -> tuple[IngestCatalog, int | None]:
    """The catalog, and the tenant's purge horizon read after taking the ingest side of the purge lock (no batch
    judged against the old horizon can commit after a purge has moved it: docs/usage.md, "Purge"), asked in one
    round trip where the driver allows."""
    [catalog_rows, *_, horizon_rows] = driver.together(
        session.connection(),
        [(catalog.INGEST_CATALOG, {}), *storage.ingest_lock(tenant_id), (purge.HORIZON, {"tenant_id": tenant_id})],
    )
    return catalog.ingest_catalog_of(catalog_rows), horizon_rows[0][0] if horizon_rows else None


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
    """The stored events of the tenant holding any of the keys.

    One SELECT per key, united: each is a range of that key's own index, however many events the tenant has. An OR
    of the three in one WHERE made the planner scan the tenant's whole history instead (it cannot use the business
    key's partial index for an OR, and costs 1,000 probes per array above a scan of a small tenant). Only events
    stored with the business key on can match by it (dedup.judge_round ignores the others), which is what lets that
    branch use the partial index.
    """
    columns = (
        events.c.event_id,
        events.c.idempotency_key,
        events.c.correlation_id,
        events.c.metric,
        events.c.occurred_at_us,
        events.c.content_hash,
        events.c.business_key,
    )
    matches = [storage.one_of(events.c.event_id, keys.event_ids)]
    if keys.idempotency_keys:
        matches.append(storage.one_of(events.c.idempotency_key, keys.idempotency_keys))
    if keys.correlation_ids:
        # Written as the partial index's own predicate: SQLite uses a partial index only for that very term.
        keyed: ColumnElement[bool] = literal_column("business_key")
        matches.append(and_(storage.one_of(events.c.correlation_id, keys.correlation_ids), keyed))
    statement = union(*(select(*columns).where(events.c.tenant_id == tenant_id, match) for match in matches))
    return [StoredKeys(*row) for row in session.execute(statement)]


def stored_combinations(session: Session, tenant_id: str, combinations: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (metric, dimensions JSON) combinations the tenant's events already carry."""
    metrics = sorted({metric for metric, _ in combinations})
    statement = select(dimension_combinations.c.metric, dimension_combinations.c.dimensions).where(
        dimension_combinations.c.tenant_id == tenant_id,
        dimension_combinations.c.metric.in_(metrics),
        dimension_combinations.c.dimensions.in_(sorted({dimensions for _, dimensions in combinations})),
    )
    wanted = set(combinations)
    return {(metric, dimensions) for metric, dimensions in session.execute(statement).tuples()} & wanted


def combination_counts(session: Session, tenant_id: str, metrics: list[str]) -> dict[str, int]:
    """How many distinct combinations the tenant's events of each metric carry (absent: none)."""
    statement = (
        select(dimension_combinations.c.metric, func.count())
        .where(dimension_combinations.c.tenant_id == tenant_id, dimension_combinations.c.metric.in_(metrics))
        .group_by(dimension_combinations.c.metric)
    )
    return {metric: count for metric, count in session.execute(statement).tuples()}


def add_combinations(
    session: Session, tenant_id: str, combinations: list[tuple[str, str]], now_us: int, *, storage: Storage
) -> None:
    """Register combinations the tenant's events now carry (under the lock of each metric's combinations)."""
    if combinations:
        session.execute(
            storage.insert(dimension_combinations).on_conflict_do_nothing(),
            [
                dict(tenant_id=tenant_id, metric=metric, dimensions=dimensions, first_seen_at_us=now_us)
                for metric, dimensions in combinations
            ],
        )
