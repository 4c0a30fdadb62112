"""Per-tenant policy snapshots in memory, never served older than what this process knows was written.

Each tenant has a floor: the highest policy version known to exist for it (its own writes, the
catalog's, versions seen by the poller over policy_versions, a request's min_policy_version). A
snapshot below its tenant's floor is never served, and a loader that read before a write cannot
store its older snapshot afterwards, because storing also compares with the floor. The calls that find a
tenant's snapshot missing or stale at the same time share one load, which starts after they arrived (flat
combining, combiner.py): a write or a poll that raises a busy tenant's floor costs one read, not one per call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tollgate.services.policy import metrics
from tollgate.services.policy.combiner import Combiner
from tollgate.services.policy.domain.errors import PolicyVersionAhead
from tollgate.services.policy.domain.model import CATALOG, Snapshot, VersionChange

log = logging.getLogger("tollgate.policy.cache")

MAX_TENANTS = 10_000  # snapshots kept; beyond that the oldest stored is dropped


class SnapshotCache:
    """Snapshots keyed by tenant; `load(tenant_id)` reads a fresh one from the database."""

    def __init__(self, load: Callable[[str], Snapshot], *, max_tenants: int = MAX_TENANTS):
        self._load = load
        self._max_tenants = max_tenants
        self._snapshots: dict[str, Snapshot] = {}
        self._floors: dict[str, int] = {}
        self._global_floor = 0  # the catalog's version, and the floor of tenants forgotten by _trim_floors
        self._lock = threading.Lock()
        self._loads: Combiner[None, Snapshot] = Combiner()

    def get(self, tenant_id: str, min_version: int = 0) -> Snapshot:
        """A snapshot at least as new as every known write to the tenant or the catalog, and min_version.

        A min_version the fresh read still does not reach is refused (PolicyVersionAhead), never
        answered by an older snapshot that would claim to satisfy it.
        """
        with self._lock:
            snapshot = self._snapshots.get(tenant_id)
            floor = max(self._floor(tenant_id), min_version)
        if snapshot is not None and snapshot.version >= floor:
            metrics.SNAPSHOTS.labels("hit").inc()
            return snapshot
        metrics.SNAPSHOTS.labels("load").inc()
        snapshot = self._loads.shared(tenant_id, lambda calls: self._loaded(tenant_id, calls))
        if snapshot.version < min_version:
            raise PolicyVersionAhead(tenant_id, min_version, snapshot.version)
        return snapshot

    def loading(self, tenant_id: str) -> int:
        """How many calls are loading the tenant's snapshot or waiting for its load now."""
        return self._loads.callers(tenant_id)

    def _loaded(self, tenant_id: str, calls: int) -> Snapshot:
        snapshot = self._load(tenant_id)
        self._store(snapshot)
        metrics.SNAPSHOT_LOADS.observe(calls)
        return snapshot

    def advance(self, tenant_id: str, version: int) -> None:
        """Record that `tenant_id` (CATALOG: the catalog) changed at `version`; older snapshots stop being served."""
        with self._lock:
            if tenant_id == CATALOG:
                self._global_floor = max(self._global_floor, version)
            else:
                self._floors[tenant_id] = max(self._floors.get(tenant_id, 0), version)
                self._trim_floors()

    def _floor(self, tenant_id: str) -> int:
        return max(self._global_floor, self._floors.get(tenant_id, 0))

    def _store(self, snapshot: Snapshot) -> None:
        with self._lock:
            current = self._snapshots.get(snapshot.tenant_id)
            if snapshot.version < self._floor(snapshot.tenant_id):
                return
            if current is not None and current.version > snapshot.version:
                return
            if current is None and len(self._snapshots) >= self._max_tenants:
                self._snapshots.pop(next(iter(self._snapshots)))
            self._snapshots[snapshot.tenant_id] = snapshot

    def _trim_floors(self) -> None:
        # Forgetting per-tenant floors is safe only by raising the global one to cover them all.
        if len(self._floors) > 2 * self._max_tenants:
            self._global_floor = max(self._global_floor, *self._floors.values())
            self._floors.clear()


class VersionPoller:
    """Advances the cache with versions written by other replicas: one query per interval."""

    def __init__(
        self, cache: SnapshotCache, changed_since: Callable[[int], list[VersionChange]], start: int, interval: float
    ):
        self._cache, self._changed_since, self._seen, self._interval = cache, changed_since, start, interval

    def poll_once(self) -> int:
        """Apply the versions written since the last poll; returns how many tenants changed."""
        changes = self._changed_since(self._seen)
        for change in changes:
            self._cache.advance(change.tenant_id, change.version)
            self._seen = max(self._seen, change.version)
        return len(changes)

    def run(self, stopping: threading.Event) -> None:
        """The background job: poll until the server stops (a failed poll is retried next interval)."""
        while not stopping.wait(self._interval):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the poller; the next poll retries
                metrics.POLL_FAILURES.inc()
                log.warning("policy version poll failed", exc_info=True)
