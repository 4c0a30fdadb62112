"""RunRollup, GetRollupStatus, ListAggregates and the scheduled rollup job."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tollgate.services.usage import metrics
from tollgate.services.usage.domain.buckets import Period
from tollgate.services.usage.repository import Connections, Sessions
from tollgate.services.usage.repository import rollups as rollups_sql
from tollgate.services.usage.repository.rollups import RefusedBucket
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service import schedule
from tollgate.services.usage.service.checks import check_instant, check_tenant, check_text
from tollgate.shared import auth, clock, pagination
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import require

log = logging.getLogger("tollgate.usage.rollups")


@dataclass(frozen=True)
class RunReport:
    buckets_recomputed: int
    buckets_remaining: int
    duration_seconds: float
    buckets_refused: int = 0  # left dirty: their totals do not fit in int64


@dataclass(frozen=True)
class RollupStatus:
    dirty_buckets: int
    oldest_dirty_us: int | None
    last_run_us: int | None
    last_run_buckets: int


def authorize_purge(tenant_id: str, caller: Principal) -> str | None:
    """A purge of one tenant needs that tenant's (or a platform) credential; of every tenant (None), the platform's."""
    return auth.tenant_scope(caller, tenant_id, "a purge of every tenant")


def run_rollup(
    tenant_id: str, max_buckets: int, *, sessions: Sessions, storage: Storage, caller: Principal
) -> RunReport:
    """Recompute dirty buckets of one tenant (or of all, for the platform) now."""
    tenants = auth.tenant_scope(caller, tenant_id, "a rollup of every tenant")
    require(max_buckets >= 0, "max_buckets", "must not be negative")
    return roll_up(sessions, tenants, max_buckets, storage=storage)


def roll_up(sessions: Sessions, tenant_id: str | None, max_buckets: int = 0, *, storage: Storage) -> RunReport:
    """Recompute dirty buckets until none is left (or `max_buckets` are done).

    Safe with any number of concurrent workers (each backend's engine sees to it). A bucket whose total
    does not fit in int64 is left dirty, logged and counted, and every other bucket is rolled up all the same.
    """
    started = time.monotonic()
    done, refused = storage.roll_up(sessions, tenant_id, max_buckets)
    _report_refused(refused)
    now_us = clock.now_micros()
    with sessions.begin() as session:
        rollups_sql.record_run(session, tenant_id, now_us, done, storage=storage)
        remaining, oldest = rollups_sql.dirty_summary(session, tenant_id)
    if tenant_id is None:
        metrics.observe_backlog(remaining, oldest, now_us)
    return RunReport(done, remaining, time.monotonic() - started, len(refused))


def _report_refused(refused: list[RefusedBucket]) -> None:
    for bucket in refused:
        period = Period(bucket.period).name
        metrics.ROLLUP_REFUSED_BUCKETS.labels(period).inc()
        log.error(
            "rollup left a bucket dirty: its total does not fit in int64",
            extra={
                "fields": {
                    "tenant_id": bucket.tenant_id,
                    "metric": bucket.metric,
                    "period": period,
                    "period_start": clock.iso(bucket.period_start_us),
                    "total_quantity": str(bucket.total_quantity),
                }
            },
        )


def rollup_status(tenant_id: str, *, sessions: Sessions, caller: Principal) -> RollupStatus:
    tenants = auth.tenant_scope(caller, tenant_id, "the rollup status of every tenant")
    with sessions.begin() as session:
        count, oldest = rollups_sql.dirty_summary(session, tenants)
        last = rollups_sql.last_run(session, tenants)
    if tenants is None:
        metrics.observe_backlog(count, oldest, clock.now_micros())
    return RollupStatus(count, oldest, last[0] if last else None, last[1] if last else 0)


def list_aggregates(
    tenant_id: str,
    metric: str,
    period: int,
    start_us: int | None,
    end_us: int | None,
    *,
    page_size: int,
    page_token: str,
    connections: Connections,
    caller: Principal,
) -> pagination.Page:
    """One page of a metric's buckets of one period, oldest first, each flagged dirty when stale."""
    check_tenant(tenant_id)
    auth.require_tenant(caller, tenant_id)
    check_text("metric", metric, required=True)
    require(period in {p.value for p in Period}, "period", "must be HOUR, DAY, WEEK or MONTH")
    check_instant("start_time", start_us)
    check_instant("end_time", end_us)
    if start_us is not None and end_us is not None:
        require(start_us < end_us, "end_time", "must be after start_time")
    scope = {"tenant": tenant_id, "metric": metric, "period": period, "start": start_us, "end": end_us}
    cursor = pagination.start(page_size, page_token, scope, shape=(int,))
    with connections.connect() as connection:
        items = rollups_sql.list_aggregates(
            connection,
            tenant_id,
            metric,
            Period(period),
            start_us,
            end_us,
            after=cursor.after[0] if cursor.after else None,
            limit=cursor.limit + 1,
        )
    return cursor.page(items, lambda a: (a.period_start_us,))


def scheduled_job(sessions: Sessions, interval_seconds: float, *, storage: Storage):
    """The background job running a rollup of every tenant every `interval_seconds` (None when 0)."""
    if interval_seconds <= 0:
        return None

    def run() -> dict:
        report = roll_up(sessions, None, storage=storage)
        return {
            "buckets": report.buckets_recomputed,
            "remaining": report.buckets_remaining,
            "refused": report.buckets_refused,
        }

    def skipped() -> None:
        # Another instance holds this round: the backlog gauges of this one must not go stale.
        with sessions.begin() as session:
            count, oldest = rollups_sql.dirty_summary(session, None)
        metrics.observe_backlog(count, oldest, clock.now_micros())

    return schedule.every(interval_seconds, "rollup", run, sessions=sessions, storage=storage, skipped=skipped)
