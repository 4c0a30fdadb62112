"""Grants of a metric to a tenant (docs/entitlements.md): created and voided as audited admin writes."""

from __future__ import annotations

import secrets
from dataclasses import replace

from tollgate.services.policy import validation
from tollgate.services.policy.domain.errors import UnknownGrant
from tollgate.services.policy.domain.model import Grant
from tollgate.services.policy.repository import Session, Sessions, grants
from tollgate.services.policy.service import access
from tollgate.services.policy.service.tenants import require_tenant_exists
from tollgate.services.policy.service.writes import Change, audited_write
from tollgate.shared import pagination
from tollgate.shared.clock import now_micros
from tollgate.shared.credentials import Principal


def _change(grant: Grant) -> dict:
    return {
        "metric": grant.metric,
        "amount": grant.amount,
        "effective_us": grant.effective_us,
        "expires_us": grant.expires_us,
        "priority": grant.priority,
        "reason": grant.reason,
        "user_id": grant.user_id,
    }


def create_grant(given: Grant, *, sessions: Sessions, cache, caller: Principal) -> tuple[Grant, int]:
    """Give a tenant an amount of a metric (platform only: a tenant may not top itself up)."""
    access.platform_tenant_write(caller, "creating a grant")
    wanted = validation.grant(given, now_micros())

    def apply(session: Session, now_us: int):
        require_tenant_exists(session, wanted.tenant_id)
        grant = replace(wanted, grant_id=f"gr_{secrets.token_hex(8)}", create_us=now_us)
        grants.insert_grant(session, grant)
        return Change(f"tenant/{grant.tenant_id}/grant/{grant.grant_id}", _change(grant)), grant

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="CreateGrant", tenant_id=wanted.tenant_id, apply=apply
    )


def void_grant(tenant_id: str, grant_id: str, *, sessions: Sessions, cache, caller: Principal) -> tuple[Grant, int]:
    """End a grant now; voiding a voided grant changes nothing and answers it as it is."""
    access.platform_tenant_write(caller, "voiding a grant")
    validation.reference(tenant_id, "grant_id", grant_id)

    def apply(session: Session, now_us: int):
        require_tenant_exists(session, tenant_id)
        current = grants.get_grant(session, tenant_id, grant_id)
        if current is None:
            raise UnknownGrant(tenant_id, grant_id)
        if current.void_us is not None:
            return None, current
        grants.void_grant(session, tenant_id, grant_id, now_us)
        return Change(f"tenant/{tenant_id}/grant/{grant_id}", {"voided": True}), replace(current, void_us=now_us)

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="VoidGrant", tenant_id=tenant_id, apply=apply
    )


def list_grants(
    tenant_id: str,
    metric: str,
    user_id: str,
    *,
    page_size: int,
    page_token: str,
    sessions: Sessions,
    caller: Principal,
) -> pagination.Page[Grant]:
    """One page of the tenant's grants (optionally one metric's, one user's), by grant id; voided and expired
    included."""
    access.tenant(caller, tenant_id)
    validation.grants_listing(tenant_id, user_id)
    scope = {"listing": "grants", "tenant": tenant_id, "metric": metric, "user": user_id}
    cursor = pagination.start(page_size, page_token, scope, shape=(str,))
    after = cursor.after[0] if cursor.after else None
    with sessions.begin() as session:
        require_tenant_exists(session, tenant_id)
        items = grants.list_grants(
            session, tenant_id, metric=metric, user_id=user_id, after=after, limit=cursor.limit + 1
        )
    return cursor.page(items, lambda g: (g.grant_id,))
