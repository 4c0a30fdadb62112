"""Audit use cases over Policy's chain: list it (a tenant sees its own records) and verify it."""

from __future__ import annotations

from tollgate.services.policy.repository import Sessions
from tollgate.services.policy.repository.chain import AUDIT
from tollgate.services.policy.service.tenants import require_tenant_exists
from tollgate.shared import audit_chain, auth, pagination
from tollgate.shared.audit import AuditRecord, Verification
from tollgate.shared.credentials import Principal


def list_records(
    tenant_id: str, *, page_size: int, page_token: str, sessions: Sessions, caller: Principal
) -> pagination.Page[AuditRecord]:
    """One page of records oldest first; '' lists every tenant's and the catalog's (platform only).

    An unknown tenant is NOT_FOUND, as for every other call naming one, never an empty page.
    """
    tenant = auth.tenant_scope(caller, tenant_id, "listing every tenant's audit records")
    if tenant is not None:
        with sessions.begin() as session:
            require_tenant_exists(session, tenant)
    return audit_chain.list_records(
        AUDIT, tenant_id, page_size=page_size, page_token=page_token, sessions=sessions, caller=caller
    )


def verify(*, sessions: Sessions, caller: Principal) -> Verification:
    """Walk the whole chain; name the first link that does not check (platform only)."""
    return audit_chain.verify(AUDIT, sessions=sessions, caller=caller)
