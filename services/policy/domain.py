"""Modes, caps and the effective-mode rule of SPEC §1.2, with the domain errors. Pure Python."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from shared.errors import FailedPrecondition, NotFound


class Mode(IntEnum):
    """How much a feature may act on its own, lowest first; values match the proto enum."""

    OFF = 1
    OBSERVE = 2
    SUGGEST = 3
    PROACTIVE = 4
    AMBITIOUS = 5
    AUTONOMOUS = 6


class CapSource(IntEnum):
    """Where a cap comes from; the basis lists entries in this order (values match the proto enum)."""

    REQUESTED = 1
    ROLE = 2
    FEATURE = 3
    PLAN = 4
    TENANT = 5
    QUOTA = 6


HIGHEST = Mode.AUTONOMOUS
ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
ID_RULE = "must match ^[A-Za-z][A-Za-z0-9_.-]{0,63}$"


@dataclass(frozen=True)
class Cap:
    """One source's cap on a feature, with what set it (role id, plan id, override id...)."""

    source: CapSource
    cap: Mode
    detail: str


@dataclass(frozen=True)
class BasisEntry:
    """A cap as shown in an answer: `binding` when it set the result below the request."""

    source: CapSource
    cap: Mode
    detail: str
    binding: bool


@dataclass(frozen=True)
class Resolution:
    """The effective mode of one feature for one user, and why."""

    feature_id: str
    requested: Mode
    effective: Mode
    basis: tuple[BasisEntry, ...]


def requested_mode(value: int) -> Mode:
    """The mode asked for; unspecified (0) means the highest the caller may have."""
    return Mode(value) if value else HIGHEST


def effective_mode(requested: Mode, caps: Iterable[Cap], extra: Iterable[Cap] = ()) -> tuple[Mode, tuple[BasisEntry, ...]]:
    """min(requested, every cap) and the basis in CapSource order; `extra` takes later sources (quotas)."""
    considered = sorted([*caps, *extra], key=lambda cap: cap.source)  # stable: same-source caps keep their order
    result = min([requested, *(cap.cap for cap in considered)])
    below = result < requested
    basis = [BasisEntry(CapSource.REQUESTED, requested, "requested", False)]
    basis += [BasisEntry(c.source, c.cap, c.detail, below and c.cap == result) for c in considered]
    return result, tuple(basis)


def resolve(feature_id: str, requested: Mode, caps: Iterable[Cap], extra: Iterable[Cap] = ()) -> Resolution:
    """A Resolution of `feature_id` from its caps."""
    effective, basis = effective_mode(requested, caps, extra)
    return Resolution(feature_id, requested, effective, basis)


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
        super().__init__(f"min_policy_version {wanted} is ahead of tenant {tenant_id!r}'s policy version {found}, "
                         f"read again just now: pass the policy_version of a write's answer for this tenant")


class UnknownMetric(FailedPrecondition):
    """A feature or quota names metrics that Usage's catalog does not hold."""

    reason = "UNKNOWN_METRIC"

    def __init__(self, named: list[tuple[str, str]]):
        listed = ", ".join(f"{field} {metric!r}" for field, metric in named)
        super().__init__(f"not in Usage's metric catalog: {listed} (UsageAdminService/UpsertMetric adds a metric)")
