"""SQL of the metric catalog."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, exists, select, update
from sqlalchemy.orm import Session

from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.domain.catalog import IngestCatalog, Metric
from tollgate.services.usage.domain.model import Classification
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import events, metrics

_COLUMNS = (
    metrics.c.name,
    metrics.c.classification,
    metrics.c.unit,
    metrics.c.description,
    metrics.c.business_key,
    metrics.c.aggregation,
    metrics.c.unique_of,
    metrics.c.dimensions,
)


INGEST_CATALOG = select(metrics.c.name, metrics.c.classification, metrics.c.business_key, metrics.c.dimensions)


def ingest_catalog_of(rows: Iterable[Sequence]) -> IngestCatalog:
    """From INGEST_CATALOG's rows: every catalog metric's classification, by name, the names of the metrics without
    the business key, and the dimensions of the metrics that declare some."""
    classification_of, without_key, dimensions_of = {}, set(), {}
    for name, classification, business_key, dimensions in rows:
        classification_of[name] = Classification[classification]
        if not business_key:
            without_key.add(name)
        if dimensions != "[]":
            dimensions_of[name] = frozenset(json.loads(dimensions))
    return IngestCatalog(classification_of, frozenset(without_key), dimensions_of)


def list_metrics(session: Session, *, after: str | None, limit: int) -> list[Metric]:
    """Catalog metrics ordered by name, starting after `after`."""
    statement = select(*_COLUMNS).order_by(metrics.c.name).limit(limit)
    if after is not None:
        statement = statement.where(metrics.c.name > after)
    return [_metric(row) for row in session.execute(statement)]


# Built once: QueryUsage reads a metric on every call.
_BY_NAME = select(*_COLUMNS).where(metrics.c.name == bindparam("name"))
_BY_NAME_FOR_UPDATE = _BY_NAME.with_for_update()


def get_metric(session: Session | Connection, name: str, *, for_update: bool = False) -> Metric | None:
    """The catalog metric named `name`, None when there is none; locked until commit `for_update` (PostgreSQL)."""
    row = session.execute(_BY_NAME_FOR_UPDATE if for_update else _BY_NAME, {"name": name}).first()
    return None if row is None else _metric(row)


class MetricRead(NamedTuple):
    """A metric as read, with the stored cells a question's statement depends on (aggregation, unique_of,
    dimensions as stored): a later statement built from this read checks them in its own snapshot
    (meters.usage_rows), so the read may be kept."""

    metric: Metric
    cells: tuple[str, str, str]


def read_metric(connection: Connection, name: str) -> MetricRead | None:
    """The catalog metric named `name` with its cells, None when there is none."""
    row = connection.execute(_BY_NAME, {"name": name}).first()
    return None if row is None else MetricRead(_metric(row), (row.aggregation, row.unique_of, row.dimensions))


def _metric(row) -> Metric:
    name, classification, unit, description, business_key, aggregation, unique_of, dimensions = row
    return Metric(
        name,
        Classification[classification],
        unit,
        description,
        business_key,
        Aggregation[aggregation],
        unique_of,
        tuple(json.loads(dimensions)),
    )


def has_events(session: Session, metric: str) -> bool:
    """Whether any tenant has an event of the metric."""
    return bool(session.execute(select(exists().where(events.c.metric == metric))).scalar())


def carried_dimensions(session: Session, metric: str, names: list[str]) -> frozenset[str]:
    """Which of the dimension `names` some event of the metric carries (canonical JSON holds a key as "name":
    only where it is a key: a quote inside a value is escaped)."""
    if not names:
        return frozenset()
    checks = [
        exists().where(events.c.metric == metric, events.c.dimensions.contains(f'"{name}":', autoescape=True))
        for name in names
    ]
    found = session.execute(select(*checks)).one()
    return frozenset(name for name, carried in zip(names, found) if carried)


def upsert_metric(session: Session, metric: Metric, *, now_us: int, storage: Storage) -> bool:
    """Store the metric; True when it was new. Safe against a concurrent upsert of the same name."""
    assert metric.classification is not None  # the use case stores only a checked metric (catalog.check_metric)
    values = {
        "name": metric.name,
        "classification": metric.classification.name,
        "unit": metric.unit,
        "description": metric.description,
        "business_key": metric.business_key,
        "aggregation": metric.aggregation.name,
        "unique_of": metric.unique_of,
        "dimensions": json.dumps(list(metric.dimensions), separators=(",", ":")),
        "updated_at_us": now_us,
    }
    created = session.execute(
        storage.insert(metrics).values(values).on_conflict_do_nothing().returning(metrics.c.name)
    ).first()
    if created is None:
        session.execute(update(metrics).where(metrics.c.name == metric.name).values(values))
    return created is not None
