"""ListMetrics and UpsertMetric: the metric catalog."""

from __future__ import annotations

from tollgate.services.usage.domain import catalog
from tollgate.services.usage.domain.catalog import Metric
from tollgate.services.usage.repository import Sessions
from tollgate.services.usage.repository import catalog as catalog_sql
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service import audit
from tollgate.shared import auth, clock, pagination
from tollgate.shared.credentials import Principal

SCOPE = {"list": "metrics"}  # the catalog is global: a token is bound to the listing only


def list_metrics(*, page_size: int, page_token: str, sessions: Sessions) -> pagination.Page:
    """One page of the catalog, ordered by name."""
    cursor = pagination.start(page_size, page_token, SCOPE, shape=(str,))
    with sessions.begin() as session:
        found = catalog_sql.list_metrics(
            session, after=cursor.after[0] if cursor.after else None, limit=cursor.limit + 1
        )
    return cursor.page(found, lambda metric: (metric.name,))


def upsert_metric(metric: Metric, *, sessions: Sessions, storage: Storage, caller: Principal) -> tuple[Metric, bool]:
    """Add or update a catalog metric (platform credentials only), audited; returns it and whether it is new."""
    auth.require_platform(caller, "changing the metric catalog")
    catalog.check_metric(metric)
    assert metric.classification is not None  # check_metric refused a metric without one
    with sessions.begin() as session:
        _check_change(session, metric)
        created = catalog_sql.upsert_metric(session, metric, now_us=clock.now_micros(), storage=storage)
        audit.append(
            session,
            actor=caller.token_id,
            action="UpsertMetric",
            target=f"catalog/metric/{metric.name}",
            tenant_id="",
            change={
                "created": created,
                "classification": metric.classification.name,
                "unit": metric.unit,
                "description": metric.description,
                "business_key": metric.business_key,
                "aggregation": metric.aggregation.name,
                "unique_of": metric.unique_of,
                "dimensions": list(metric.dimensions),
            },
            storage=storage,
        )
    return metric, created


def _check_change(session, metric: Metric) -> None:
    """Refuse an update that would change the meaning of stored events (domain.catalog.check_change); the stored
    entry stays locked until commit, so two updates are judged one after the other."""
    stored = catalog_sql.get_metric(session, metric.name, for_update=True)
    if stored is None:
        return
    catalog.check_change(
        stored,
        metric,
        has_events=catalog.changes_meaning(stored, metric) and catalog_sql.has_events(session, metric.name),
        carried=catalog_sql.carried_dimensions(session, metric.name, catalog.removed_dimensions(stored, metric)),
    )
