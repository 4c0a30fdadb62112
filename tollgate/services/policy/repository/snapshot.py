"""Reading a tenant's whole policy in one consistent transaction."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.orm import Session

from tollgate.services.policy.domain.errors import UnknownTenant
from tollgate.services.policy.domain.model import Snapshot
from tollgate.services.policy.repository import catalog, chain, grants, tenants
from tollgate.shared.clock import now_micros
from tollgate.shared.db import consistent_read


def load(session: Session, tenant_id: str) -> Snapshot:
    """Everything that shapes the tenant's answers, tagged with the policy version it was read at."""
    consistent_read(session)
    version = chain.version_of(session, tenant_id)
    policy = tenants.get_tenant_policy(session, tenant_id)
    if policy is None:
        raise UnknownTenant(tenant_id)
    subscription = tenants.get_subscription(session, tenant_id)
    plan = catalog.get_plan(session, subscription.plan_id) if subscription else None
    overrides = {(o.role_id, o.feature_id): o for o in tenants.tenant_overrides(session, tenant_id)}
    by_user: dict[str, list[str]] = defaultdict(list)
    for binding in tenants.list_bindings(session, tenant_id):
        by_user[binding.user_id].append(binding.role_id)
    return Snapshot(
        tenant_id,
        version,
        policy,
        subscription,
        plan,
        catalog.all_roles(session),
        catalog.all_features(session),
        overrides,
        {user: tuple(r) for user, r in by_user.items()},
        grants.live_grants(session, tenant_id, now_micros()),
    )
