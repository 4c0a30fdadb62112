"""ResolveMode and ResolveModes: answered from the tenant's cached snapshot, never older than a known write."""

from __future__ import annotations

from shared.credentials import Principal
from shared import tenant_ids
from shared.errors import FieldViolation, InvalidArgument
from services.policy import metrics
from services.policy.cache import SnapshotCache
from services.policy.domain import Mode, Resolution, requested_mode
from services.policy.service import access
from services.policy.service.quotas import QuotaUsage, quota_caps

MAX_FEATURES = 500
_RESOLVED = {mode: metrics.RESOLUTIONS.labels(mode.name) for mode in Mode}


def _check(tenant_id: str, user_id: str, requested: int, min_version: int) -> list[FieldViolation]:
    problems = []
    if problem := tenant_ids.problem(tenant_id):
        problems.append(FieldViolation("tenant_id", problem))
    if not user_id or len(user_id) > 128:
        problems.append(FieldViolation("user_id", "is required, at most 128 characters"))
    if not 0 <= requested <= Mode.AUTONOMOUS:
        problems.append(FieldViolation("requested_mode", "must be a mode from MODE_UNSPECIFIED to MODE_AUTONOMOUS"))
    if min_version < 0:
        problems.append(FieldViolation("min_policy_version", "must not be negative"))
    return problems


def resolve_mode(tenant_id: str, user_id: str, feature_id: str, requested: int, min_version: int, *,
                 cache: SnapshotCache, caller: Principal, quotas: QuotaUsage,
                 budget: float | None = None) -> tuple[Resolution, int]:
    """The effective mode of one feature for a user, its basis, and the policy version it reflects."""
    access.tenant(caller, tenant_id)
    problems = _check(tenant_id, user_id, requested, min_version)
    if not feature_id:
        problems.append(FieldViolation("feature_id", "is required"))
    if problems:
        raise InvalidArgument(problems)
    snapshot = cache.get(tenant_id, min_version)
    extra = quota_caps(snapshot, feature_id, quotas, budget=budget)
    resolution = snapshot.resolve(user_id, feature_id, requested_mode(requested), extra)
    _RESOLVED[resolution.effective].inc()
    return resolution, snapshot.version


def resolve_modes(tenant_id: str, user_id: str, feature_ids: list[str], requested: int, min_version: int, *,
                  cache: SnapshotCache, caller: Principal, quotas: QuotaUsage,
                  budget: float | None = None) -> tuple[list[Resolution], int]:
    """Many features from one snapshot, in the order asked (every feature by id when none is named)."""
    access.tenant(caller, tenant_id)
    problems = _check(tenant_id, user_id, requested, min_version)
    if len(feature_ids) > MAX_FEATURES:
        problems.append(FieldViolation("feature_ids", f"must name at most {MAX_FEATURES} features"))
    problems += [FieldViolation(f"feature_ids[{i}]", "is required") for i, f in enumerate(feature_ids) if not f]
    if problems:
        raise InvalidArgument(problems)
    snapshot = cache.get(tenant_id, min_version)
    wanted, mode = feature_ids or sorted(snapshot.features), requested_mode(requested)
    resolutions = [snapshot.resolve(user_id, feature_id, mode, quota_caps(snapshot, feature_id, quotas, budget=budget))
                   for feature_id in wanted]
    for resolution in resolutions:
        _RESOLVED[resolution.effective].inc()
    return resolutions, snapshot.version
