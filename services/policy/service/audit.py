"""Audit use cases: list the chain (a tenant sees its own records) and verify it, page by page."""

from __future__ import annotations

from dataclasses import dataclass

from shared.credentials import Principal
from services.policy.audit import ZERO_HASH, AuditRecord, Break, check_links
from services.policy.repository import chain, snapshot
from services.policy.service import access, paging

VERIFY_PAGE = 1000  # records held in memory at once while verifying


@dataclass(frozen=True)
class Verification:
    ok: bool
    records_checked: int
    first_break: Break | None


def list_records(tenant_id: str, *, page_size: int, page_token: str, sessions,
                 caller: Principal) -> tuple[list[AuditRecord], str]:
    """One page of records oldest first; '' lists every tenant's and the catalog's (platform only)."""
    if tenant_id:
        access.tenant(caller, tenant_id)
    else:
        access.platform_tenant_write(caller, "listing every tenant's audit records")
    scope = {"listing": "audit", "tenant": tenant_id}
    limit, after = paging.start(page_size, page_token, scope, width=1, kind=int)
    with sessions.begin() as session:
        items = chain.records(session, tenant_id=tenant_id or None, after=after[0] if after else 0, limit=limit + 1)
    return paging.finish(items, limit, scope, lambda r: (r.sequence,))


def verify(*, sessions, caller: Principal, page: int = VERIFY_PAGE) -> Verification:
    """Walk the whole chain from the first record to the head; name the first link that does not check."""
    access.platform_tenant_write(caller, "verifying the audit chain")
    sequence, previous = 0, ZERO_HASH
    while True:
        with sessions.begin() as session:
            snapshot.consistent_read(session)  # the last page and the head must agree
            batch = chain.records(session, tenant_id=None, after=sequence, limit=page)
            head = chain.head(session)
        sequence, previous, broken = check_links(batch, after_sequence=sequence, after_hash=previous)
        if broken is None and len(batch) < page:
            broken = _head_break(sequence, previous, *head)
            return Verification(broken is None, sequence, broken)
        if broken is not None:
            return Verification(False, sequence, broken)


def _head_break(sequence: int, last_hash: str, head_sequence: int, head_hash: str) -> Break | None:
    """Deleting the newest records leaves a valid chain; the head row still knows how long it was."""
    if head_sequence > sequence:
        return Break(sequence + 1, f"record {sequence + 1} is missing (the chain head is at {head_sequence})")
    if head_sequence < sequence:
        return Break(head_sequence + 1, f"record {head_sequence + 1} lies beyond the chain head")
    if head_hash != last_hash:
        return Break(sequence, "the chain head's hash differs from the last record's hash")
    return None
