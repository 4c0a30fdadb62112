"""What the resolve path's snapshot cache reads: a tenant's snapshot, and the versions other replicas wrote."""

from __future__ import annotations

from tollgate.services.policy.domain.model import Snapshot, VersionChange
from tollgate.services.policy.repository import Connections, Sessions, chain, snapshot


def load(tenant_id: str, *, sessions: Sessions) -> Snapshot:
    """The tenant's snapshot, read fresh in one transaction (UnknownTenant when it has no tenant policy)."""
    with sessions.begin() as session:
        return snapshot.load(session, tenant_id)


def changed_since(version: int, *, connections: Connections) -> list[VersionChange]:
    """Every tenant (and the catalog) whose policy version passed `version`."""
    with connections.connect() as connection:
        return chain.changed_since(connection, version)


def start_version(*, sessions: Sessions) -> int:
    """Where the version poller starts: read before serving, so no snapshot is loaded before it."""
    return chain.start_version(sessions)
