"""SQL of the metric catalog."""

from __future__ import annotations

from sqlalchemy import select, update

from tollgate.services.usage.domain.catalog import IngestCatalog, Metric
from tollgate.services.usage.domain.model import Classification
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import metrics


def ingest_catalog(session) -> IngestCatalog:
    """Every catalog metric's classification, by name, and the names of the metrics without the business key."""
    classification_of, without_key = {}, set()
    for name, classification, business_key in session.execute(
        select(metrics.c.name, metrics.c.classification, metrics.c.business_key)
    ):
        classification_of[name] = Classification[classification]
        if not business_key:
            without_key.add(name)
    return IngestCatalog(classification_of, frozenset(without_key))


def list_metrics(session, *, after: str | None, limit: int) -> list[Metric]:
    """Catalog metrics ordered by name, starting after `after`."""
    statement = (
        select(metrics.c.name, metrics.c.classification, metrics.c.unit, metrics.c.description, metrics.c.business_key)
        .order_by(metrics.c.name)
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(metrics.c.name > after)
    return [
        Metric(name, Classification[classification], unit, description, business_key)
        for name, classification, unit, description, business_key in session.execute(statement)
    ]


def upsert_metric(session, metric: Metric, *, now_us: int, storage: Storage) -> bool:
    """Store the metric; True when it was new. Safe against a concurrent upsert of the same name."""
    values = {
        "name": metric.name,
        "classification": metric.classification.name,
        "unit": metric.unit,
        "description": metric.description,
        "business_key": metric.business_key,
        "updated_at_us": now_us,
    }
    created = session.execute(
        storage.insert(metrics).values(values).on_conflict_do_nothing().returning(metrics.c.name)
    ).first()
    if created is None:
        session.execute(update(metrics).where(metrics.c.name == metric.name).values(values))
    return created is not None
