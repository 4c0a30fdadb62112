"""Who may call what (docs/policy.md); the scope itself is checked by the interceptor."""

from __future__ import annotations

from tollgate.shared.auth import require_platform, require_tenant
from tollgate.shared.credentials import Principal


def catalog_write(caller: Principal) -> None:
    """Roles, features and plans are platform-wide: only a platform credential changes them."""
    require_platform(caller, "changing the catalog")


def platform_tenant_write(caller: Principal, what: str) -> None:
    """Subscriptions and tenant policies: a tenant must not raise its own plan or maximum."""
    require_platform(caller, what)


def tenant(caller: Principal, tenant_id: str) -> None:
    """A tenant credential acts on its own tenant only; the platform on any."""
    require_tenant(caller, tenant_id)
