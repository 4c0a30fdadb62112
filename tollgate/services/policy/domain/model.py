"""Policy data as frozen values, and the caps a tenant's snapshot gives a (user, feature). Pure Python."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from tollgate.services.policy.domain.dimensions import Filters
from tollgate.services.policy.domain.errors import UnknownFeature
from tollgate.services.policy.domain.modes import Cap, CapSource, Mode, Resolution, resolve


class SubscriptionStatus(IntEnum):
    """Billing state; values match the proto enum."""

    ACTIVE = 1
    TRIALING = 2
    PAST_DUE = 3
    CANCELED = 4


MAX_RESOLVED = 100_000  # answers kept per snapshot
CATALOG = ""  # the tenant_id under which the platform-wide catalog's versions and audit records are kept

ACTIVE_STATUSES = frozenset({SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING})


@dataclass(frozen=True)
class Role:
    role_id: str
    display_name: str
    feature_caps: Mapping[str, Mode]
    default_cap: Mode = Mode.OFF

    def cap_for(self, feature_id: str) -> Mode:
        """The role's catalog cap for a feature (its default cap when the feature has no entry)."""
        return self.feature_caps.get(feature_id, self.default_cap)


@dataclass(frozen=True)
class Feature:
    feature_id: str
    display_name: str
    description: str
    max_mode: Mode
    metrics: tuple[str, ...] = ()


class QuotaScope(IntEnum):
    """Whose usage a quota counts; values match the proto enum (UNSPECIFIED is stored as TENANT)."""

    TENANT = 1
    USER = 2


class LimitKind(IntEnum):
    """What an exhausted quota does; values match the proto enum (UNSPECIFIED is stored as SOFT)."""

    SOFT = 1
    HARD = 2


@dataclass(frozen=True)
class QuotaLimit:
    metric: str
    period: int
    limit: int
    cap: Mode
    feature_ids: tuple[str, ...] = ()
    fail_closed: bool = False
    scope: QuotaScope = QuotaScope.TENANT
    kind: LimitKind = LimitKind.SOFT
    # Percentages of the allowance whose crossing is stored for WatchEntitlements (docs/entitlements.md).
    notify_at: tuple[int, ...] = ()
    filters: Filters = ()  # only the usage these dimension values allow counts (domain/dimensions.py)

    @property
    def usage_key(self) -> tuple[str, int, Filters]:
        """What the quota's usage is read and kept by: quotas alike in these share one reading."""
        return self.metric, self.period, self.filters


@dataclass(frozen=True)
class Grant:
    """An extra amount of a metric for a tenant (its tenant-scoped quotas) or for one of its users (`user_id`: that
    user's user-scoped quotas), counted in every period of the metric while it is active."""

    grant_id: str
    tenant_id: str
    metric: str
    amount: int
    effective_us: int
    expires_us: int | None = None
    priority: int = 0
    reason: str = ""
    create_us: int = 0
    void_us: int | None = None
    user_id: str = ""

    def active(self, at_us: int) -> bool:
        """Counting at `at_us`: effective, not expired, not voided."""
        if self.void_us is not None and self.void_us <= at_us:
            return False
        return self.effective_us <= at_us and (self.expires_us is None or at_us < self.expires_us)


@dataclass(frozen=True)
class Plan:
    plan_id: str
    display_name: str
    feature_caps: Mapping[str, Mode]
    default_cap: Mode = Mode.OFF
    inactive_cap: Mode = Mode.OFF
    quotas: tuple[QuotaLimit, ...] = ()


@dataclass(frozen=True)
class Subscription:
    tenant_id: str
    plan_id: str
    status: SubscriptionStatus
    feature_flags: Mapping[str, bool]
    update_us: int = 0
    billing_anchor_us: int | None = None  # None: calendar periods in UTC
    time_zone: str = ""


@dataclass(frozen=True)
class TenantPolicy:
    tenant_id: str
    max_mode: Mode
    default_role_id: str
    update_us: int = 0


@dataclass(frozen=True)
class Override:
    override_id: str
    tenant_id: str
    role_id: str
    feature_id: str
    cap: Mode
    reason: str = ""
    update_us: int = 0


@dataclass(frozen=True)
class Binding:
    tenant_id: str
    user_id: str
    role_id: str
    create_us: int = 0


@dataclass(frozen=True)
class VersionChange:
    """A tenant's data (or the catalog's: tenant_id CATALOG) changed, and its policy version is now `version`."""

    tenant_id: str
    version: int


@dataclass(frozen=True)
class Snapshot:
    """Everything that shapes one tenant's answers, read in one transaction at `version`."""

    tenant_id: str
    version: int
    tenant_policy: TenantPolicy
    subscription: Subscription | None
    plan: Plan | None
    roles: Mapping[str, Role]
    features: Mapping[str, Feature]
    overrides: Mapping[tuple[str, str], Override]  # (role_id, feature_id) -> override
    bindings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # user_id -> role ids
    grants: tuple[Grant, ...] = ()  # not voided, not expired when read; Grant.active says when they count
    # Answers without quota caps depend only on the user's roles, the feature and the request, and a snapshot
    # never changes: each is worked out once per snapshot (bounded by MAX_RESOLVED).
    _resolved: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def feature(self, feature_id: str) -> Feature:
        found = self.features.get(feature_id)
        if found is None:
            raise UnknownFeature(feature_id)
        return found

    def caps(self, user_id: str, feature_id: str) -> list[Cap]:
        """The role, feature, plan and tenant caps on a feature for a user, in CapSource order."""
        feature = self.feature(feature_id)
        return [
            self._role_cap(user_id, feature_id),
            self._feature_cap(feature),
            self._plan_cap(feature_id),
            Cap(CapSource.TENANT, self.tenant_policy.max_mode, f"tenant {self.tenant_id} maximum"),
        ]

    def resolve(self, user_id: str, feature_id: str, requested: Mode, extra: Iterable[Cap] = ()) -> Resolution:
        """The effective mode of a feature for a user; `extra` holds later sources (quota caps)."""
        extra = tuple(extra)
        if extra:
            return resolve(feature_id, requested, self.caps(user_id, feature_id), extra)
        key = (self.bindings.get(user_id, ()), feature_id, requested)
        found = self._resolved.get(key)
        if found is None:
            found = resolve(feature_id, requested, self.caps(user_id, feature_id))
            if len(self._resolved) < MAX_RESOLVED:
                self._resolved[key] = found
        return found

    def _role_cap(self, user_id: str, feature_id: str) -> Cap:
        bound = self.bindings.get(user_id, ())
        role_ids = bound or (self.tenant_policy.default_role_id,)
        caps = sorted(
            (self._one_role_cap(role_id, feature_id) for role_id in role_ids), key=lambda item: (-item[0], item[1])
        )
        cap, detail = caps[0]
        if not bound:
            return Cap(CapSource.ROLE, cap, f"default {detail} (no binding)")
        if len(bound) > 1:
            detail += f" (most permissive of {', '.join(sorted(bound))})"
        return Cap(CapSource.ROLE, cap, detail)

    def _one_role_cap(self, role_id: str, feature_id: str) -> tuple[Mode, str]:
        override = self.overrides.get((role_id, feature_id))
        if override is not None:
            return override.cap, f"role {role_id} override {override.override_id}"
        role = self.roles.get(role_id)
        if role is None:  # foreign keys make this unreachable; never let it elevate anyone
            return Mode.OFF, f"role {role_id} (not in catalog)"
        return role.cap_for(feature_id), f"role {role_id}"

    def _feature_cap(self, feature: Feature) -> Cap:
        flags = self.subscription.feature_flags if self.subscription else {}
        if flags.get(feature.feature_id) is False:
            return Cap(CapSource.FEATURE, Mode.OFF, f"feature {feature.feature_id} flag off in subscription")
        return Cap(CapSource.FEATURE, feature.max_mode, f"feature {feature.feature_id} maximum")

    def _plan_cap(self, feature_id: str) -> Cap:
        subscription, plan = self.subscription, self.plan
        if subscription is None or plan is None:
            return Cap(CapSource.PLAN, Mode.OFF, "no subscription")
        if subscription.status not in ACTIVE_STATUSES:
            return Cap(
                CapSource.PLAN,
                plan.inactive_cap,
                f"plan {plan.plan_id} inactive cap (subscription {subscription.status.name})",
            )
        if feature_id in plan.feature_caps:
            return Cap(CapSource.PLAN, plan.feature_caps[feature_id], f"plan {plan.plan_id}")
        return Cap(CapSource.PLAN, plan.default_cap, f"plan {plan.plan_id} default cap")
