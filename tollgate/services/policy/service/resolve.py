"""ResolveMode and ResolveModes: answered from the tenant's cached snapshot, never older than a known write."""

from __future__ import annotations

from dataclasses import dataclass

from tollgate.services.policy import metrics, validation
from tollgate.services.policy.cache import SnapshotCache
from tollgate.services.policy.domain.modes import Mode, Resolution
from tollgate.services.policy.domain.quotas import quota_caps
from tollgate.services.policy.service import access
from tollgate.services.policy.service.quotas import read_usage
from tollgate.services.policy.usage_port import Deadline, UsagePort
from tollgate.shared.clock import now_micros
from tollgate.shared.credentials import Principal

_RESOLVED = {mode: metrics.RESOLUTIONS.labels(mode.name) for mode in Mode}


@dataclass(frozen=True)
class Resolved:
    """Resolutions in the order asked, and the policy version they all reflect."""

    resolutions: list[Resolution]
    version: int


def resolve_mode(
    tenant_id: str,
    user_id: str,
    feature_id: str,
    requested: int,
    min_version: int,
    *,
    cache: SnapshotCache,
    caller: Principal,
    usage: UsagePort,
    deadline: Deadline,
) -> Resolved:
    """The effective mode of one feature for a user, its basis, and the policy version it reflects."""
    access.tenant(caller, tenant_id)
    mode = validation.resolve_one(tenant_id, user_id, feature_id, requested, min_version)
    return _resolve(tenant_id, user_id, [feature_id], mode, min_version, cache=cache, usage=usage, deadline=deadline)


def resolve_modes(
    tenant_id: str,
    user_id: str,
    feature_ids: list[str],
    requested: int,
    min_version: int,
    *,
    cache: SnapshotCache,
    caller: Principal,
    usage: UsagePort,
    deadline: Deadline,
) -> Resolved:
    """Many features from one snapshot, in the order asked (every feature by id when none is named)."""
    access.tenant(caller, tenant_id)
    mode = validation.resolve_many(tenant_id, user_id, feature_ids, requested, min_version)
    return _resolve(tenant_id, user_id, feature_ids, mode, min_version, cache=cache, usage=usage, deadline=deadline)


def _resolve(
    tenant_id: str,
    user_id: str,
    feature_ids: list[str],
    mode: Mode,
    min_version: int,
    *,
    cache: SnapshotCache,
    usage: UsagePort,
    deadline: Deadline,
) -> Resolved:
    snapshot = cache.get(tenant_id, min_version)
    wanted = feature_ids or sorted(snapshot.features)
    for feature_id in wanted:
        snapshot.feature(feature_id)  # an unknown feature is NOT_FOUND before Usage is asked anything
    now_us = now_micros()
    used = read_usage(snapshot, wanted, now_us, usage=usage, deadline=deadline, user_id=user_id)
    resolutions = [
        snapshot.resolve(user_id, feature_id, mode, quota_caps(snapshot, feature_id, used, now_us, user_id))
        for feature_id in wanted
    ]
    for resolution in resolutions:
        _RESOLVED[resolution.effective].inc()
    return Resolved(resolutions, snapshot.version)
