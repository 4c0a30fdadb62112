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


class UnknownGrant(NotFound):
    reason = "UNKNOWN_GRANT"

    def __init__(self, tenant_id: str, grant_id: str):
        super().__init__(f"unknown grant {grant_id!r} in tenant {tenant_id!r}")


class UnknownReservation(NotFound):
    reason = "UNKNOWN_RESERVATION"

    def __init__(self, tenant_id: str, reservation_id: str):
        super().__init__(f"unknown reservation {reservation_id!r} in tenant {tenant_id!r}")


class NoQuota(FailedPrecondition):
    """Reserve names a metric no quota of the tenant's plan counts: there is no balance to take from."""

    reason = "NO_QUOTA"

    def __init__(self, tenant_id: str, metric: str):
        super().__init__(
            f"no quota of tenant {tenant_id!r}'s plan counts metric {metric!r}: nothing to reserve against "
            f"(record the usage in Usage directly, or add a quota on the metric to the plan)"
        )


class IdempotencyKeyReused(FailedPrecondition):
    """A Reserve retried with a key already used for a different user, metric, amount or dimension values."""

    reason = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, key: str, reservation_id: str):
        super().__init__(
            f"idempotency_key {key!r} already reserved {reservation_id!r} for another user, metric, amount or "
            "dimension values"
        )


class ReservationNotOpen(FailedPrecondition):
    """Commit or Release of a reservation that is no longer open (or a second Commit with another amount)."""

    reason = "RESERVATION_NOT_OPEN"

    def __init__(self, reservation_id: str, state: str, detail: str = ""):
        super().__init__(f"reservation {reservation_id!r} is {state}{detail}")


class ReservationExpired(FailedPrecondition):
    """Commit of a reservation past its expire_time: its amount was freed; reserve again."""

    reason = "RESERVATION_EXPIRED"

    def __init__(self, reservation_id: str):
        super().__init__(f"reservation {reservation_id!r} expired and holds nothing: reserve again")


class UsageRefused(UsageUnavailable):
    """Usage answered but refused a call for good until its configuration changes (e.g. a token without a scope);
    only the outbox meets it, never a caller."""
