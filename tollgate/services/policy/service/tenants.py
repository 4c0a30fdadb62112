"""Tenant use cases: tenant policy, subscription, and the inspection of everything a tenant resolves from."""

from __future__ import annotations

from dataclasses import replace

from tollgate.services.policy import validation
from tollgate.services.policy.domain.errors import NoSubscription, UnknownPlan, UnknownRole, UnknownTenant
from tollgate.services.policy.domain.model import Snapshot, Subscription, TenantPolicy
from tollgate.services.policy.repository import Session, Sessions, catalog, rows, snapshot, tenants
from tollgate.services.policy.service import access
from tollgate.services.policy.service.writes import Change, audited_write
from tollgate.shared.credentials import Principal


def require_tenant_exists(session: Session, tenant_id: str) -> TenantPolicy:
    """The tenant's policy; UnknownTenant (NOT_FOUND) when the tenant was never set up."""
    policy = tenants.get_tenant_policy(session, tenant_id)
    if policy is None:
        raise UnknownTenant(tenant_id)
    return policy


def set_tenant_policy(
    tenant_id: str, max_mode: int, default_role_id: str, *, sessions: Sessions, cache, caller: Principal
) -> tuple[TenantPolicy, int]:
    """Create or update a tenant's policy (this is what makes a tenant exist)."""
    access.platform_tenant_write(caller, "setting a tenant policy")
    mode = validation.tenant_policy(tenant_id, max_mode, default_role_id)

    def apply(session: Session, now_us: int):
        if not catalog.role_exists(session, default_role_id):
            raise UnknownRole(default_role_id)
        current = tenants.get_tenant_policy(session, tenant_id)
        wanted = TenantPolicy(tenant_id, mode, default_role_id, now_us)
        if current is not None and replace(current, update_us=now_us) == wanted:
            return None, current
        tenants.save_tenant_policy(session, wanted, exists=current is not None)
        return Change(f"tenant/{tenant_id}/policy", {"max_mode": int(mode), "default_role_id": default_role_id}), wanted

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="SetTenantPolicy", tenant_id=tenant_id, apply=apply
    )


def get_subscription(tenant_id: str, *, sessions: Sessions, caller: Principal) -> Subscription:
    """The tenant's subscription; NOT_FOUND for an unknown tenant or one without a subscription."""
    access.tenant(caller, tenant_id)
    with sessions.begin() as session:
        require_tenant_exists(session, tenant_id)
        found = tenants.get_subscription(session, tenant_id)
    if found is None:
        raise NoSubscription(tenant_id)
    return found


def set_subscription(
    tenant_id: str,
    plan_id: str,
    status: int,
    flags: dict[str, bool],
    *,
    sessions: Sessions,
    cache,
    caller: Principal,
    anchor_us: int | None = None,
    time_zone: str = "",
) -> tuple[Subscription, int]:
    """Set a tenant's plan, status, feature flags and billing anchor (platform only: a tenant may not upgrade
    itself). Without an anchor its quotas count calendar periods in UTC."""
    access.platform_tenant_write(caller, "setting a subscription")
    state = validation.subscription(tenant_id, plan_id, status, flags, anchor_us, time_zone)

    def apply(session: Session, now_us: int):
        require_tenant_exists(session, tenant_id)
        if catalog.get_plan(session, plan_id) is None:
            raise UnknownPlan(plan_id)
        current = tenants.get_subscription(session, tenant_id)
        wanted = Subscription(tenant_id, plan_id, state, dict(flags), now_us, anchor_us, time_zone)
        if current is not None and replace(current, update_us=now_us) == wanted:
            return None, current
        tenants.save_subscription(session, wanted, exists=current is not None)
        # The anchor and zone appear in the audited change only when set, so records of subscriptions without
        # one read as they did before anchors existed.
        change = {
            key: value
            for key, value in rows.subscription_row(wanted).items()
            if key != "update_us" and not (key in ("billing_anchor_us", "time_zone") and value in (None, ""))
        }
        return Change(f"tenant/{tenant_id}/subscription", change), wanted

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="SetSubscription", tenant_id=tenant_id, apply=apply
    )


def inspect_policy(tenant_id: str, *, sessions: Sessions, caller: Principal) -> Snapshot:
    """Everything that shapes the tenant's answers, read fresh from the database in one transaction."""
    access.tenant(caller, tenant_id)
    with sessions.begin() as session:
        return snapshot.load(session, tenant_id)
