"""PurgeEvents and the retention job: drop raw events that aggregates cover, keep every total exact.

The rules (docs/usage.md, "Purge"):
- a purge moves the tenant's horizon H up to the cutoff, then deletes events before H, except
  those inside a bucket (of any period) that is still dirty: its aggregate does not cover them yet;
- ingest refuses an event whose week or month starts before H, so a bucket that lost raw events is
  never recomputed from what is left;
- a read that needs raw events before H answers FAILED_PRECONDITION instead of a smaller number.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from tollgate.services.usage.domain.buckets import DAY_US
from tollgate.services.usage.domain.horizon import in_force_after
from tollgate.services.usage.repository import Session, Sessions, in_transaction
from tollgate.services.usage.repository import purge as purge_sql
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service import audit, schedule
from tollgate.services.usage.service.rollups import authorize_purge
from tollgate.shared import clock
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import FieldViolation, InvalidArgument, require

SLICE_US = DAY_US  # events deleted per transaction: one day of a tenant, so locks are held briefly


@dataclass(frozen=True)
class PurgeReport:
    events_deleted: int
    events_kept: int
    dry_run: bool
    purged_before_us: int | None


def purge_events(
    tenant_id: str, before_us: int | None, dry_run: bool, *, sessions: Sessions, storage: Storage, caller: Principal
) -> PurgeReport:
    """Purge one tenant (or, for the platform, every tenant) before `before_us`; audited unless a dry run."""
    tenants = authorize_purge(tenant_id, caller)
    if before_us is None:
        raise InvalidArgument(FieldViolation("before_time", "is required"))
    require(
        clock.MIN_MICROS <= before_us <= clock.now_micros(), "before_time", "must be a past timestamp (from year 1 on)"
    )
    return purge(sessions, tenants, before_us, dry_run=dry_run, actor=caller.token_id, storage=storage)


def purge(
    sessions: Sessions,
    tenant_id: str | None,
    before_us: int,
    *,
    dry_run: bool = False,
    actor: str | None = None,
    storage: Storage,
) -> PurgeReport:
    """Purge the tenant, or every tenant with events before the cutoff; the report sums them.

    With an `actor` (an admin's PurgeEvents) each tenant whose horizon moves gets an audit record.
    """
    if tenant_id:
        return _purge_tenant(sessions, tenant_id, before_us, dry_run, actor, storage)
    with sessions.begin() as session:
        tenants = purge_sql.tenants_with_events_before(session, before_us)
    reports = [_purge_tenant(sessions, tenant, before_us, dry_run, actor, storage) for tenant in tenants]
    # Each tenant has a horizon of its own: a dry run moved none; a purge raised each it purged to the cutoff at least.
    return PurgeReport(
        sum(r.events_deleted for r in reports),
        sum(r.events_kept for r in reports),
        dry_run,
        None if dry_run else before_us,
    )


def _purge_tenant(
    sessions: Sessions, tenant_id: str, before_us: int, dry_run: bool, actor: str | None, storage: Storage
) -> PurgeReport:
    in_force = None
    if dry_run:
        with sessions.begin() as session:
            in_force = purge_sql.horizon(session, tenant_id)
        horizon = in_force_after(before_us, in_force)
    else:
        # The horizon commits first: from then on no ingest adds events (nor dirty marks) before
        # it, so the marks each slice reads below can only disappear meanwhile, never appear.
        horizon = in_transaction(sessions, lambda session: _move_horizon(session, tenant_id, before_us, actor, storage))
    deleted = _delete_in_slices(sessions, tenant_id, horizon, delete=not dry_run)
    with sessions.begin() as session:
        left = purge_sql.count_before(session, tenant_id, horizon)
    # A dry run answers the horizon it left in force (None when the tenant was never purged), not the one it tried.
    return PurgeReport(deleted, left - deleted if dry_run else left, dry_run, in_force if dry_run else horizon)


def _move_horizon(session: Session, tenant_id: str, before_us: int, actor: str | None, storage: Storage) -> int:
    """Move the horizon and, for an admin, record it in the same transaction: the horizon is the change.

    The deletions that follow only carry it out, a slice per transaction; a purge that leaves the
    horizon where it was changes nothing an answer depends on and appends nothing.
    """
    previous, horizon = purge_sql.move_horizon(session, tenant_id, before_us, clock.now_micros(), storage=storage)
    if actor is not None and horizon != previous:
        # Counted under the purge lock: no ingest can add events before the horizon meanwhile.
        audit.append(
            session,
            actor=actor,
            action="PurgeEvents",
            target=f"tenant/{tenant_id}/events",
            tenant_id=tenant_id,
            change={
                "cutoff_us": before_us,
                "previous_horizon_us": previous,
                "horizon_us": horizon,
                "events_before_horizon": purge_sql.count_before(session, tenant_id, horizon),
            },
            storage=storage,
        )
    return horizon


def _delete_in_slices(sessions: Sessions, tenant_id: str, horizon_us: int, *, delete: bool) -> int:
    """Delete (or count) the purgeable events before the horizon, a slice per transaction."""
    done, low = 0, None
    while True:
        with sessions.begin() as session:
            low = purge_sql.oldest_event_from(session, tenant_id, low, horizon_us)
        if low is None:
            return done
        high = min(low + SLICE_US, horizon_us)
        done += in_transaction(
            sessions, partial(purge_sql.purgeable, tenant_id=tenant_id, low_us=low, high_us=high, delete=delete)
        )
        low = high


def retention_job(sessions: Sessions, retention_days: int, every_seconds: float, *, storage: Storage):
    """The background job purging every tenant's events older than `retention_days` (None when 0)."""
    if retention_days <= 0:
        return None

    def run() -> dict:
        report = purge(sessions, None, clock.now_micros() - retention_days * DAY_US, storage=storage)
        return {"deleted": report.events_deleted, "kept": report.events_kept}

    return schedule.every(every_seconds, "retention purge", run, sessions=sessions, storage=storage)
