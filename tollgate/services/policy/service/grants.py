"""Per-tenant grants: overrides of role caps and user-role bindings (tenant admins may manage their own)."""

from __future__ import annotations

import secrets

from tollgate.services.policy import validation
from tollgate.services.policy.domain.errors import UnknownBinding, UnknownFeature, UnknownOverride, UnknownRole
from tollgate.services.policy.domain.model import Binding, Override
from tollgate.services.policy.repository import Session, Sessions, catalog, tenants
from tollgate.services.policy.service import access
from tollgate.services.policy.service.tenants import require_tenant_exists
from tollgate.services.policy.service.writes import Change, audited_write
from tollgate.shared import pagination
from tollgate.shared.credentials import Principal


def set_override(
    tenant_id: str,
    role_id: str,
    feature_id: str,
    cap: int,
    reason: str,
    *,
    sessions: Sessions,
    cache,
    caller: Principal,
) -> tuple[Override, int]:
    """Replace a role's catalog cap for a feature in one tenant; the override keeps its id across updates."""
    access.tenant(caller, tenant_id)
    mode = validation.override(tenant_id, role_id, feature_id, cap, reason)

    def apply(session: Session, now_us: int):
        require_tenant_exists(session, tenant_id)
        if not catalog.role_exists(session, role_id):
            raise UnknownRole(role_id)
        if catalog.get_feature(session, feature_id) is None:
            raise UnknownFeature(feature_id)
        current = tenants.find_override(session, tenant_id, role_feature=(role_id, feature_id))
        if current is not None and (current.cap, current.reason) == (mode, reason):
            return None, current
        override_id = current.override_id if current else f"ov_{secrets.token_hex(8)}"
        wanted = Override(override_id, tenant_id, role_id, feature_id, mode, reason, now_us)
        tenants.save_override(session, wanted, exists=current is not None)
        return Change(
            f"tenant/{tenant_id}/override/{override_id}",
            {"role_id": role_id, "feature_id": feature_id, "cap": int(mode), "reason": reason},
        ), wanted

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="SetOverride", tenant_id=tenant_id, apply=apply
    )


def delete_override(tenant_id: str, override_id: str, *, sessions: Sessions, cache, caller: Principal) -> int:
    """Remove an override; NOT_FOUND when the tenant has no such override."""
    access.tenant(caller, tenant_id)
    validation.required_ids(tenant_id=tenant_id, override_id=override_id)

    def apply(session: Session, _now_us: int):
        require_tenant_exists(session, tenant_id)
        current = tenants.find_override(session, tenant_id, override_id=override_id)
        if current is None:
            raise UnknownOverride(tenant_id, override_id)
        tenants.delete_override(session, tenant_id, override_id)
        return Change(
            f"tenant/{tenant_id}/override/{override_id}",
            {"deleted": True, "role_id": current.role_id, "feature_id": current.feature_id},
        ), None

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="DeleteOverride", tenant_id=tenant_id, apply=apply
    )[1]


def list_overrides(
    tenant_id: str, *, page_size: int, page_token: str, sessions: Sessions, caller: Principal
) -> pagination.Page[Override]:
    """One page of the tenant's overrides, by role then feature."""
    access.tenant(caller, tenant_id)
    scope = {"listing": "overrides", "tenant": tenant_id}
    cursor = pagination.start(page_size, page_token, scope, shape=(str, str))
    with sessions.begin() as session:
        require_tenant_exists(session, tenant_id)
        items = tenants.tenant_overrides(session, tenant_id, after=cursor.after, limit=cursor.limit + 1)
    return cursor.page(items, lambda o: (o.role_id, o.feature_id))


def bind_role(
    tenant_id: str, user_id: str, role_id: str, *, sessions: Sessions, cache, caller: Principal
) -> tuple[Binding, int]:
    """Give a user a role in a tenant; binding twice is a no-op answering the existing binding."""
    access.tenant(caller, tenant_id)
    validation.required_ids(tenant_id=tenant_id, user_id=user_id, role_id=role_id)

    def apply(session: Session, now_us: int):
        require_tenant_exists(session, tenant_id)
        if not catalog.role_exists(session, role_id):
            raise UnknownRole(role_id)
        current = tenants.get_binding(session, tenant_id, user_id, role_id)
        if current is not None:
            return None, current
        binding = Binding(tenant_id, user_id, role_id, now_us)
        tenants.insert_binding(session, binding)
        return Change(f"tenant/{tenant_id}/user/{user_id}/role/{role_id}", {"bound": True}), binding

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="BindRole", tenant_id=tenant_id, apply=apply
    )


def unbind_role(tenant_id: str, user_id: str, role_id: str, *, sessions: Sessions, cache, caller: Principal) -> int:
    """Take a role from a user; NOT_FOUND when the user does not have it."""
    access.tenant(caller, tenant_id)
    validation.required_ids(tenant_id=tenant_id, user_id=user_id, role_id=role_id)

    def apply(session: Session, _now_us: int):
        require_tenant_exists(session, tenant_id)
        if tenants.get_binding(session, tenant_id, user_id, role_id) is None:
            raise UnknownBinding(tenant_id, user_id, role_id)
        tenants.delete_binding(session, tenant_id, user_id, role_id)
        return Change(f"tenant/{tenant_id}/user/{user_id}/role/{role_id}", {"bound": False}), None

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="UnbindRole", tenant_id=tenant_id, apply=apply
    )[1]


def list_bindings(
    tenant_id: str, user_id: str, *, page_size: int, page_token: str, sessions: Sessions, caller: Principal
) -> pagination.Page[Binding]:
    """One page of the tenant's bindings (optionally one user's), by user then role."""
    access.tenant(caller, tenant_id)
    scope = {"listing": "bindings", "tenant": tenant_id, "user": user_id}
    cursor = pagination.start(page_size, page_token, scope, shape=(str, str))
    with sessions.begin() as session:
        require_tenant_exists(session, tenant_id)
        items = tenants.list_bindings(session, tenant_id, user_id=user_id, after=cursor.after, limit=cursor.limit + 1)
    return cursor.page(items, lambda b: (b.user_id, b.role_id))
