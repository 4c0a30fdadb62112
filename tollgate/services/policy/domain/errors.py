"""Policy's domain errors: each names what was wrong with what, and maps to one status (shared/grpc_errors.py)."""

from __future__ import annotations

from tollgate.shared.errors import FailedPrecondition, NotFound, Unavailable


class UnknownTenant(NotFound):
    """The tenant has no tenant policy."""

    reason = "UNKNOWN_TENANT"

    def __init__(self, tenant_id: str):
        super().__init__(f"unknown tenant {tenant_id!r} (it has no tenant policy; SetTenantPolicy creates it)")


class UnknownFeature(NotFound):
    reason = "UNKNOWN_FEATURE"

    def __init__(self, feature_id: str):
        super().__init__(f"unknown feature {feature_id!r}")


class UnknownRole(NotFound):
    reason = "UNKNOWN_ROLE"

    def __init__(self, role_id: str):
        super().__init__(f"unknown role {role_id!r}")


class UnknownPlan(NotFound):
    reason = "UNKNOWN_PLAN"

    def __init__(self, plan_id: str):
        super().__init__(f"unknown plan {plan_id!r}")


class NoSubscription(NotFound):
    reason = "NO_SUBSCRIPTION"

    def __init__(self, tenant_id: str):
        super().__init__(f"tenant {tenant_id!r} has no subscription")


class UnknownOverride(NotFound):
    reason = "UNKNOWN_OVERRIDE"

    def __init__(self, tenant_id: str, override_id: str):
        super().__init__(f"unknown override {override_id!r} in tenant {tenant_id!r}")


class UnknownBinding(NotFound):
    reason = "UNKNOWN_BINDING"

    def __init__(self, tenant_id: str, user_id: str, role_id: str):
        super().__init__(f"user {user_id!r} of tenant {tenant_id!r} has no role {role_id!r}")


class RoleInUse(FailedPrecondition):
    """Pruning would remove a role that is still bound, overridden or a tenant's default role."""

    reason = "ROLE_IN_USE"

    def __init__(self, role_ids: list[str]):
        super().__init__(f"cannot prune roles still bound, overridden or used as a default role: {role_ids}")


class PolicyVersionAhead(FailedPrecondition):
    """A request's min_policy_version is newer than the tenant's policy version, even after a fresh read."""

    reason = "POLICY_VERSION_AHEAD"

    def __init__(self, tenant_id: str, wanted: int, found: int):
        super().__init__(
            f"min_policy_version {wanted} is ahead of tenant {tenant_id!r}'s policy version {found}, "
            f"read again just now: pass the policy_version of a write's answer for this tenant"
        )


class UnknownMetric(FailedPrecondition):
    """A feature or quota names metrics that Usage's catalog does not hold."""

    reason = "UNKNOWN_METRIC"

    def __init__(self, named: list[tuple[str, str]]):
        listed = ", ".join(f"{field} {metric!r}" for field, metric in named)
        super().__init__(f"not in Usage's metric catalog: {listed} (UsageAdminService/UpsertMetric adds a metric)")


class UsageUnavailable(Unavailable):
    """Usage could not answer in time (down, slow, erroring, or the circuit is open)."""

    reason = "USAGE_UNAVAILABLE"
