"""ListMetrics and UpsertMetric: the metric catalog."""

from __future__ import annotations

from shared import auth, pagination, timeconv
from shared.errors import FieldViolation, InvalidArgument

from services.usage import catalog
from services.usage.catalog import Metric
from services.usage.queries import Page
from services.usage.repository import catalog as catalog_sql
from services.usage.service import audit

SCOPE = {"list": "metrics"}  # the catalog is global: a token is bound to the listing only


def list_metrics(*, page_size: int, page_token: str, sessions) -> Page:
    """One page of the catalog, ordered by name."""
    size = pagination.page_size(page_size)
    position = pagination.decode(page_token, SCOPE)
    if position is not None and (len(position) != 1 or not isinstance(position[0], str)
                                 or len(position[0]) > 128 or "\x00" in position[0]):
        raise InvalidArgument(FieldViolation("page_token", "is not a page token of this listing"))
    with sessions.begin() as session:
        found = catalog_sql.list_metrics(session, after=position[0] if position else None, limit=size + 1)
    items = found[:size]
    return Page(items, pagination.encode([items[-1].name], SCOPE) if len(found) > size else "")


def upsert_metric(metric: Metric, *, sessions) -> tuple[Metric, bool]:
    """Add or update a catalog metric (platform credentials only), audited; returns it and whether it is new."""
    caller = auth.principal()
    auth.require_platform(caller, "changing the metric catalog")
    catalog.check_metric(metric)
    with sessions.begin() as session:
        created = catalog_sql.upsert_metric(session, metric, now_us=timeconv.now_micros())
        audit.append(session, actor=caller.token_id, action="UpsertMetric", target=f"catalog/metric/{metric.name}",
                     tenant_id="", change={"created": created, "classification": metric.classification.name,
                                           "unit": metric.unit, "description": metric.description,
                                           "business_key": metric.business_key})
    return metric, created
