"""SQL over one tenant's policy data: tenant policy, subscription, overrides, bindings."""

from __future__ import annotations

from sqlalchemy import and_, delete, insert, literal, select, tuple_, update
from sqlalchemy.orm import Session

from tollgate.services.policy import tables
from tollgate.services.policy.domain.model import Binding, Override, Subscription, TenantPolicy
from tollgate.services.policy.repository import rows

T = tables


def get_tenant_policy(session: Session, tenant_id: str) -> TenantPolicy | None:
    row = session.execute(select(T.tenant_policies).where(T.tenant_policies.c.tenant_id == tenant_id)).first()
    return rows.tenant_policy_of(row) if row else None


def save_tenant_policy(session: Session, policy: TenantPolicy, *, exists: bool) -> None:
    values = {
        "tenant_id": policy.tenant_id,
        "max_mode": int(policy.max_mode),
        "default_role_id": policy.default_role_id,
        "update_us": policy.update_us,
    }
    if exists:
        session.execute(
            update(T.tenant_policies).where(T.tenant_policies.c.tenant_id == policy.tenant_id).values(values)
        )
    else:
        session.execute(insert(T.tenant_policies).values(values))


def get_subscription(session: Session, tenant_id: str) -> Subscription | None:
    row = session.execute(select(T.subscriptions).where(T.subscriptions.c.tenant_id == tenant_id)).first()
    return rows.subscription_of(row) if row else None


def save_subscription(session: Session, subscription: Subscription, *, exists: bool) -> None:
    values = rows.subscription_row(subscription)
    if exists:
        session.execute(
            update(T.subscriptions).where(T.subscriptions.c.tenant_id == subscription.tenant_id).values(values)
        )
    else:
        session.execute(insert(T.subscriptions).values(values))


def tenant_overrides(
    session: Session, tenant_id: str, *, after: tuple[str, str] | None = None, limit: int | None = None
) -> list[Override]:
    query = (
        select(T.overrides)
        .where(T.overrides.c.tenant_id == tenant_id)
        .order_by(T.overrides.c.role_id, T.overrides.c.feature_id)
    )
    if after is not None:
        query = query.where(tuple_(T.overrides.c.role_id, T.overrides.c.feature_id) > tuple_(*map(literal, after)))
    if limit is not None:
        query = query.limit(limit)
    return [rows.override_of(row) for row in session.execute(query)]


def find_override(
    session: Session, tenant_id: str, *, override_id: str | None = None, role_feature: tuple[str, str] | None = None
) -> Override | None:
    where = [T.overrides.c.tenant_id == tenant_id]
    if override_id is not None:
        where.append(T.overrides.c.override_id == override_id)
    if role_feature is not None:
        where += [T.overrides.c.role_id == role_feature[0], T.overrides.c.feature_id == role_feature[1]]
    row = session.execute(select(T.overrides).where(and_(*where))).first()
    return rows.override_of(row) if row else None


def save_override(session: Session, override: Override, *, exists: bool) -> None:
    values = {
        "tenant_id": override.tenant_id,
        "override_id": override.override_id,
        "role_id": override.role_id,
        "feature_id": override.feature_id,
        "cap": int(override.cap),
        "reason": override.reason,
        "update_us": override.update_us,
    }
    if exists:
        session.execute(
            update(T.overrides)
            .where(T.overrides.c.tenant_id == override.tenant_id, T.overrides.c.override_id == override.override_id)
            .values(values)
        )
    else:
        session.execute(insert(T.overrides).values(values))


def delete_override(session: Session, tenant_id: str, override_id: str) -> None:
    session.execute(
        delete(T.overrides).where(T.overrides.c.tenant_id == tenant_id, T.overrides.c.override_id == override_id)
    )


def _binding_key(tenant_id: str, user_id: str, role_id: str):
    c = T.bindings.c
    return and_(c.tenant_id == tenant_id, c.user_id == user_id, c.role_id == role_id)


def get_binding(session: Session, tenant_id: str, user_id: str, role_id: str) -> Binding | None:
    row = session.execute(select(T.bindings).where(_binding_key(tenant_id, user_id, role_id))).first()
    return rows.binding_of(row) if row else None


def insert_binding(session: Session, binding: Binding) -> None:
    session.execute(
        insert(T.bindings).values(
            tenant_id=binding.tenant_id, user_id=binding.user_id, role_id=binding.role_id, create_us=binding.create_us
        )
    )


def delete_binding(session: Session, tenant_id: str, user_id: str, role_id: str) -> None:
    session.execute(delete(T.bindings).where(_binding_key(tenant_id, user_id, role_id)))


def list_bindings(
    session: Session,
    tenant_id: str,
    *,
    user_id: str = "",
    after: tuple[str, str] | None = None,
    limit: int | None = None,
) -> list[Binding]:
    c = T.bindings.c
    query = select(T.bindings).where(c.tenant_id == tenant_id).order_by(c.user_id, c.role_id)
    if user_id:
        query = query.where(c.user_id == user_id)
    if after is not None:
        query = query.where(tuple_(c.user_id, c.role_id) > tuple_(*map(literal, after)))
    if limit is not None:
        query = query.limit(limit)
    return [rows.binding_of(row) for row in session.execute(query)]
