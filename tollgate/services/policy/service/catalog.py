"""Catalog use cases: import roles, upsert features and plans, list them. Platform-wide data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tollgate.services.policy import validation
from tollgate.services.policy.domain.errors import RoleInUse
from tollgate.services.policy.domain.model import CATALOG, Feature, Plan, Role
from tollgate.services.policy.repository import Session, Sessions, catalog, rows
from tollgate.services.policy.service import access, metric_names
from tollgate.services.policy.service.metric_names import MetricCheck
from tollgate.services.policy.service.writes import Change, audited_write
from tollgate.services.policy.usage_port import Deadline, UsagePort
from tollgate.shared import pagination
from tollgate.shared.credentials import Principal

Item = TypeVar("Item", Feature, Plan)


@dataclass(frozen=True)
class RolesDiff:
    """How an import compares with the catalog; `removed` is filled only with prune."""

    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]


@dataclass(frozen=True)
class Upserted(Generic[Item]):
    """A stored feature or plan, whether it is new, the catalog version, and how its metric names were checked."""

    value: Item
    created: bool
    version: int
    metrics: MetricCheck


def diff_roles(current: dict[str, Role], imported: list[Role], *, prune: bool) -> RolesDiff:
    """The diff of an import; roles absent from it count as unchanged unless pruned."""
    names = {role.role_id for role in imported}
    added = sorted(role.role_id for role in imported if role.role_id not in current)
    changed = sorted(role.role_id for role in imported if role.role_id in current and current[role.role_id] != role)
    same = [role.role_id for role in imported if current.get(role.role_id) == role]
    absent = sorted(set(current) - names)
    removed = absent if prune else []
    return RolesDiff(added, changed, removed, sorted(same + ([] if prune else absent)))


def import_roles(
    items: list[tuple[Role, list[tuple[str, int]]]],
    *,
    dry_run: bool,
    prune: bool,
    sessions: Sessions,
    cache,
    caller: Principal,
) -> tuple[RolesDiff, int]:
    """Make the role catalog hold `items` (idempotent); a dry run reports the diff and writes nothing."""
    access.catalog_write(caller)
    roles = validation.roles(items)

    def apply(session: Session, _now_us: int):
        diff = diff_roles(catalog.all_roles(session), roles, prune=prune)
        in_use = catalog.roles_in_use(session, diff.removed)
        if in_use:
            raise RoleInUse(in_use)
        if dry_run or not (diff.added or diff.changed or diff.removed):
            return None, diff
        for role in roles:
            if role.role_id in diff.added or role.role_id in diff.changed:
                catalog.save_role(session, role, exists=role.role_id in diff.changed)
        if diff.removed:
            catalog.delete_roles(session, diff.removed)
        written = [rows.role_row(r) for r in roles if r.role_id in diff.added or r.role_id in diff.changed]
        return Change(
            "catalog/roles", {"added": diff.added, "changed": diff.changed, "removed": diff.removed, "roles": written}
        ), diff

    return audited_write(
        sessions=sessions, cache=cache, caller=caller, action="ImportRoles", tenant_id=CATALOG, apply=apply
    )


def upsert_feature(
    value: Feature, *, sessions: Sessions, cache, caller: Principal, usage: UsagePort, deadline: Deadline
) -> Upserted[Feature]:
    """Add or update a feature whose metrics Usage knows (or could not be asked about)."""
    access.catalog_write(caller)
    feature = validation.feature(value)
    checked = metric_names.check(
        [(f"feature.metrics[{i}]", m) for i, m in enumerate(value.metrics)],
        usage=usage,
        action="UpsertFeature",
        deadline=deadline,
    )

    def apply(session: Session, _now_us: int):
        current = catalog.get_feature(session, feature.feature_id)
        if current == feature:
            return None, False
        catalog.save_feature(session, feature, exists=current is not None)
        return Change(f"catalog/feature/{feature.feature_id}", rows.feature_row(feature)), current is None

    created, version = audited_write(
        sessions=sessions, cache=cache, caller=caller, action="UpsertFeature", tenant_id=CATALOG, apply=apply
    )
    return Upserted(feature, created, version, checked)


def upsert_plan(
    value: Plan,
    caps: list[tuple[str, int]],
    *,
    sessions: Sessions,
    cache,
    caller: Principal,
    usage: UsagePort,
    deadline: Deadline,
) -> Upserted[Plan]:
    """Add or update a plan whose quotas' metrics Usage knows (or could not be asked about)."""
    access.catalog_write(caller)
    plan = validation.plan(value, caps)
    checked = metric_names.check(
        [(f"plan.quotas[{i}].metric", q.metric) for i, q in enumerate(plan.quotas)],
        usage=usage,
        action="UpsertPlan",
        deadline=deadline,
        filtered=[(f"plan.quotas[{i}].filters", q) for i, q in enumerate(plan.quotas) if q.filters],
    )

    def apply(session: Session, _now_us: int):
        current = catalog.get_plan(session, plan.plan_id)
        if current == plan:
            return None, False
        catalog.save_plan(session, plan, exists=current is not None)
        return Change(f"catalog/plan/{plan.plan_id}", rows.plan_row(plan)), current is None

    created, version = audited_write(
        sessions=sessions, cache=cache, caller=caller, action="UpsertPlan", tenant_id=CATALOG, apply=apply
    )
    return Upserted(plan, created, version, checked)


_LISTINGS: dict[str, tuple[Callable[..., list[Any]], Callable[[Any], tuple[str]]]] = {
    "roles": (catalog.list_roles, lambda r: (r.role_id,)),
    "features": (catalog.list_features, lambda f: (f.feature_id,)),
    "plans": (catalog.list_plans, lambda p: (p.plan_id,)),
}


def list_catalog(kind: str, *, page_size: int, page_token: str, sessions: Sessions) -> pagination.Page:
    """One page of roles, features or plans ordered by id, and the token of the next page."""
    listing, key = _LISTINGS[kind]
    scope = {"listing": kind}
    cursor = pagination.start(page_size, page_token, scope, shape=(str,))
    with sessions.begin() as session:
        items = listing(session, after=cursor.after[0] if cursor.after else None, limit=cursor.limit + 1)
    return cursor.page(items, key)
