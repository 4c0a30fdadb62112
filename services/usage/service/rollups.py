"""RunRollup, GetRollupStatus, ListAggregates and the scheduled rollup job."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from functools import partial

from shared import auth, clock, pagination
from shared.errors import require

from services.usage import metrics
from services.usage.buckets import Period
from services.usage.repository import in_transaction
from services.usage.repository import rollup_pass, rollup_serial
from services.usage.repository import rollups as rollups_sql
from services.usage.repository.rollups import RefusedBucket
from services.usage.service import schedule
from services.usage.service.checks import check_instant, check_tenant, check_text

# PostgreSQL: buckets written per apply transaction (its locks are held for some 15 ms: 22,000 day rows
# with their hours applied in 0.27-0.33 s), dirty marks read per pass (which bounds its temp tables), and
# when a pass reads its days with one sequential scan rather than one index range each: from SCAN_FROM
# day marks on, if under VISIBLE_ENOUGH of the events table is all-visible (see repository/rollup_pass.py).
CLAIM_SIZE = 1000
PASS_SIZE = 100_000
SCAN_FROM = 5_000
VISIBLE_ENOUGH = 0.9
# SQLite: rows (events, stored rows) a rollup step reads in its one transaction, which holds the write lock; an
# event costs most, its digest being computed in Python.
SERIAL_ROWS = 2000
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


def authorize_purge(tenant_id: str) -> str | None:
    """A purge of one tenant needs that tenant's (or a platform) credential; of every tenant (None), the platform's."""
    return auth.tenant_scope(auth.principal(), tenant_id, "a purge of every tenant")


def run_rollup(tenant_id: str, max_buckets: int, *, sessions) -> RunReport:
    """Recompute dirty buckets of one tenant (or of all, for the platform) now."""
    tenants = auth.tenant_scope(auth.principal(), tenant_id, "a rollup of every tenant")
    require(max_buckets >= 0, "max_buckets", "must not be negative")
    return roll_up(sessions, tenants, max_buckets)


def roll_up(sessions, tenant_id: str | None, max_buckets: int = 0) -> RunReport:
    """Recompute dirty buckets until none is left (or `max_buckets` are done).

    Safe with any number of concurrent workers: on PostgreSQL a mark is cleared only by the worker
    that locked it (FOR UPDATE SKIP LOCKED) still at the version its totals were computed from;
    SQLite serialises write transactions. A bucket whose total does not fit in int64 is left dirty,
    logged and counted, and every other bucket is rolled up all the same.
    """
    started = time.monotonic()
    postgres = sessions.kw["bind"].dialect.name == "postgresql"
    done, refused = (_roll_up_in_passes if postgres else _roll_up_serially)(sessions, tenant_id, max_buckets)
    _report_refused(refused)
    now_us = clock.now_micros()
    with sessions.begin() as session:
        rollups_sql.record_run(session, tenant_id, now_us, done)
        remaining, oldest = rollups_sql.dirty_summary(session, tenant_id)
    if tenant_id is None:
        metrics.observe_backlog(remaining, oldest, now_us)
    return RunReport(done, remaining, time.monotonic() - started, len(refused))


def _report_refused(refused: dict[tuple, RefusedBucket]) -> None:
    for bucket in refused.values():
        period = Period(bucket.period).name
        metrics.ROLLUP_REFUSED_BUCKETS.labels(period).inc()
        log.error("rollup left a bucket dirty: its total does not fit in int64", extra={"fields": {
            "tenant_id": bucket.tenant_id, "metric": bucket.metric, "period": period,
            "period_start": clock.iso(bucket.period_start_us), "total_quantity": str(bucket.total_quantity)}})


def _roll_up_in_passes(sessions, tenant_id: str | None, max_buckets: int) -> tuple[int, dict]:
    """PostgreSQL: each pass computes up to PASS_SIZE buckets in one snapshot, applied CLAIM_SIZE at a time.

    The pass holds no row locks, however many events it reads; each apply transaction writes at most
    CLAIM_SIZE buckets. Every transaction may run on its own connection (PgBouncer transaction pooling).
    (buckets done, buckets refused by key).
    """
    done, refused = 0, {}
    while not max_buckets or done < max_buckets:
        limit = PASS_SIZE if not max_buckets else min(PASS_SIZE, max_buckets - done)
        pass_id = secrets.randbits(63)
        try:
            computed = in_transaction(sessions, partial(_compute_pass, pass_id=pass_id, tenant_id=tenant_id,
                                                        limit=limit))
            applied = sum(in_transaction(sessions, partial(_apply_claim, pass_id=pass_id, after=after))
                          for after in (range(computed.first - 1, computed.last, CLAIM_SIZE) if computed.last else ()))
        finally:
            in_transaction(sessions, partial(rollup_pass.drop_pass, pass_id=pass_id))
        done += applied
        refused.update((bucket[:4], bucket) for bucket in computed.refused)
        # A full pass may have left marks behind it; a pass whose marks all changed meanwhile stops the run.
        if computed.found < limit or not applied:
            break
    return done, refused


def _compute_pass(session, *, pass_id: int, tenant_id: str | None, limit: int) -> rollup_pass.Pass:
    return rollup_pass.compute_pass(session, pass_id, tenant_id, limit, clock.now_micros(), scan_from=SCAN_FROM,
                                    visible_enough=VISIBLE_ENOUGH)


def _apply_claim(session, *, pass_id: int, after: int) -> int:
    return rollup_pass.apply_pass(session, pass_id, after, CLAIM_SIZE, clock.now_micros())


def _roll_up_serially(sessions, tenant_id: str | None, max_buckets: int) -> tuple[int, dict]:
    """SQLite: steps of one short transaction each, every mark visited once per run, in key order; a step stops
    once it has read SERIAL_ROWS rows (events and stored rows), at the end of the hour it is in.
    (buckets done, buckets refused by key)."""
    done, refused, after = 0, {}, None
    while not max_buckets or done < max_buckets:
        step = in_transaction(sessions, partial(_serial_step, tenant_id=tenant_id, after=after,
                                                max_buckets=max_buckets - done if max_buckets else 0))
        done, after = done + step.done, step.after
        refused.update((bucket[:4], bucket) for bucket in step.refused)
        if step.finished:
            break
    return done, refused


def _serial_step(session, *, tenant_id: str | None, after: tuple | None, max_buckets: int) -> rollup_serial.Step:
    return rollup_serial.roll_up_step(session, tenant_id, after, budget=SERIAL_ROWS, max_buckets=max_buckets,
                                      now_us=clock.now_micros())


def rollup_status(tenant_id: str, *, sessions) -> RollupStatus:
    tenants = auth.tenant_scope(auth.principal(), tenant_id, "the rollup status of every tenant")
    with sessions.begin() as session:
        count, oldest = rollups_sql.dirty_summary(session, tenants)
        last = rollups_sql.last_run(session, tenants)
    if tenants is None:
        metrics.observe_backlog(count, oldest, clock.now_micros())
    return RollupStatus(count, oldest, last[0] if last else None, last[1] if last else 0)


def list_aggregates(tenant_id: str, metric: str, period: int, start_us: int | None, end_us: int | None, *,
                    page_size: int, page_token: str, connections) -> pagination.Page:
    """One page of a metric's buckets of one period, oldest first, each flagged dirty when stale."""
    check_tenant(tenant_id)
    auth.require_tenant(auth.principal(), tenant_id)
    check_text("metric", metric, required=True)
    require(period in {p.value for p in Period}, "period", "must be HOUR, DAY, WEEK or MONTH")
    check_instant("start_time", start_us)
    check_instant("end_time", end_us)
    if start_us is not None and end_us is not None:
        require(start_us < end_us, "end_time", "must be after start_time")
    scope = {"tenant": tenant_id, "metric": metric, "period": period, "start": start_us, "end": end_us}
    cursor = pagination.start(page_size, page_token, scope, shape=(int,))
    with connections.connect() as connection:
        items = rollups_sql.list_aggregates(connection, tenant_id, metric, Period(period), start_us, end_us,
                                            after=cursor.after[0] if cursor.after else None, limit=cursor.limit + 1)
    return cursor.page(items, lambda a: (a.period_start_us,))


def scheduled_job(sessions, interval_seconds: float):
    """The background job running a rollup of every tenant every `interval_seconds` (None when 0)."""
    if interval_seconds <= 0:
        return None

    def run() -> dict:
        report = roll_up(sessions, None)
        return {"buckets": report.buckets_recomputed, "remaining": report.buckets_remaining,
                "refused": report.buckets_refused}

    def skipped() -> None:
        # Another instance holds this round: the backlog gauges of this one must not go stale.
        with sessions.begin() as session:
            count, oldest = rollups_sql.dirty_summary(session, None)
        metrics.observe_backlog(count, oldest, clock.now_micros())
    return schedule.every(interval_seconds, "rollup", run, sessions=sessions, skipped=skipped)
