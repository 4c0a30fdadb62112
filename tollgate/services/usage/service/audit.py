"""Usage's audit chain (docs/usage.md, "Audit"): the record each admin write appends, listing and verifying.

Audited: UpsertMetric and PurgeEvents (not a dry run). RunRollup and the scheduled rollup only
recompute derived data; the retention job applies the operator's configuration, not an admin call.
"""

from __future__ import annotations

from tollgate.services.usage.repository import Session, Sessions
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service.checks import check_tenant
from tollgate.shared import audit_chain, clock, pagination
from tollgate.shared.audit import AuditRecord, Verification
from tollgate.shared.credentials import Principal


def append(
    session: Session, *, actor: str, action: str, target: str, tenant_id: str, change: dict, storage: Storage
) -> AuditRecord:
    """Append the record of this transaction's write; the head stays locked until commit, so writers queue."""
    head = storage.chain.lock_head(session)
    return storage.chain.append_after(
        session,
        head,
        time_us=clock.now_micros(),
        actor=actor,
        action=action,
        target=target,
        tenant_id=tenant_id,
        change=change,
    )


def list_records(
    tenant_id: str, *, page_size: int, page_token: str, sessions: Sessions, storage: Storage, caller: Principal
) -> pagination.Page[AuditRecord]:
    """One page of records oldest first; a tenant's own, or with '' every one (platform only)."""
    if tenant_id:
        check_tenant(tenant_id)
    return audit_chain.list_records(
        storage.chain, tenant_id, page_size=page_size, page_token=page_token, sessions=sessions, caller=caller
    )


def verify(*, sessions: Sessions, storage: Storage, caller: Principal) -> Verification:
    """Walk the whole chain; name the first link that does not check (platform only)."""
    return audit_chain.verify(storage.chain, sessions=sessions, caller=caller)
