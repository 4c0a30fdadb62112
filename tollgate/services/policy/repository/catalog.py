"""SQL over the platform-wide catalog: roles, features, plans."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, union_all, update
from sqlalchemy.orm import Session

from tollgate.services.policy import tables
from tollgate.services.policy.domain.model import Feature, Plan, Role
from tollgate.services.policy.repository import rows


def _page(session: Session, table, key, after: str | None, limit: int):
    query = select(table).order_by(key).limit(limit)
    if after is not None:
        query = query.where(key > after)
    return session.execute(query).all()


def _upsert(session: Session, table, key, values: dict, exists: bool) -> None:
    if exists:
        session.execute(update(table).where(key == values[key.name]).values(values))
    else:
        session.execute(insert(table).values(values))


def all_roles(session: Session) -> dict[str, Role]:
    return {row.role_id: rows.role_of(row) for row in session.execute(select(tables.roles))}


def role_exists(session: Session, role_id: str) -> bool:
    return session.execute(select(tables.roles.c.role_id).where(tables.roles.c.role_id == role_id)).first() is not None


def list_roles(session: Session, *, after: str | None, limit: int) -> list[Role]:
    return [rows.role_of(row) for row in _page(session, tables.roles, tables.roles.c.role_id, after, limit)]


def save_role(session: Session, role: Role, *, exists: bool) -> None:
    _upsert(session, tables.roles, tables.roles.c.role_id, rows.role_row(role), exists)


def delete_roles(session: Session, role_ids: list[str]) -> None:
    session.execute(delete(tables.roles).where(tables.roles.c.role_id.in_(role_ids)))


def roles_in_use(session: Session, role_ids: list[str]) -> list[str]:
    """Those of `role_ids` still bound, overridden or used as a tenant's default role."""
    if not role_ids:
        return []
    used = union_all(
        select(tables.bindings.c.role_id).where(tables.bindings.c.role_id.in_(role_ids)),
        select(tables.overrides.c.role_id).where(tables.overrides.c.role_id.in_(role_ids)),
        select(tables.tenant_policies.c.default_role_id).where(tables.tenant_policies.c.default_role_id.in_(role_ids)),
    ).subquery()
    return sorted({row[0] for row in session.execute(select(used.c[0]).distinct())})


def all_features(session: Session) -> dict[str, Feature]:
    return {row.feature_id: rows.feature_of(row) for row in session.execute(select(tables.features))}


def get_feature(session: Session, feature_id: str) -> Feature | None:
    row = session.execute(select(tables.features).where(tables.features.c.feature_id == feature_id)).first()
    return rows.feature_of(row) if row else None


def list_features(session: Session, *, after: str | None, limit: int) -> list[Feature]:
    return [rows.feature_of(row) for row in _page(session, tables.features, tables.features.c.feature_id, after, limit)]


def save_feature(session: Session, feature: Feature, *, exists: bool) -> None:
    _upsert(session, tables.features, tables.features.c.feature_id, rows.feature_row(feature), exists)


def get_plan(session: Session, plan_id: str) -> Plan | None:
    row = session.execute(select(tables.plans).where(tables.plans.c.plan_id == plan_id)).first()
    return rows.plan_of(row) if row else None


def list_plans(session: Session, *, after: str | None, limit: int) -> list[Plan]:
    return [rows.plan_of(row) for row in _page(session, tables.plans, tables.plans.c.plan_id, after, limit)]


def save_plan(session: Session, plan: Plan, *, exists: bool) -> None:
    _upsert(session, tables.plans, tables.plans.c.plan_id, rows.plan_row(plan), exists)
