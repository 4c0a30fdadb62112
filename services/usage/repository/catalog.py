"""SQL of the metric catalog."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from services.usage.catalog import Metric
from services.usage.domain import Classification
from services.usage.repository import is_postgres
from services.usage.tables import metrics


def classifications(session) -> dict[str, Classification]:
    """Every catalog metric's classification, by name."""
    rows = session.execute(select(metrics.c.name, metrics.c.classification))
    return {name: Classification[classification] for name, classification in rows}


def list_metrics(session, *, after: str | None, limit: int) -> list[Metric]:
    """Catalog metrics ordered by name, starting after `after`."""
    statement = select(metrics.c.name, metrics.c.classification, metrics.c.unit, metrics.c.description) \
        .order_by(metrics.c.name).limit(limit)
    if after is not None:
        statement = statement.where(metrics.c.name > after)
    return [Metric(name, Classification[classification], unit, description)
            for name, classification, unit, description in session.execute(statement)]


def upsert_metric(session, metric: Metric, *, now_us: int) -> bool:
    """Store the metric; True when it was new. Safe against a concurrent upsert of the same name."""
    values = {"name": metric.name, "classification": metric.classification.name, "unit": metric.unit,
              "description": metric.description, "updated_at_us": now_us}
    dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
    created = session.execute(
        dialect_insert(metrics).values(values).on_conflict_do_nothing().returning(metrics.c.name)).first()
    if created is None:
        session.execute(update(metrics).where(metrics.c.name == metric.name).values(values))
    return created is not None
