"""Every check on Policy's input, run by use cases after authorization; each returns the normalized value. Pure.

A check collects every problem of a request (`Violations`), so one INVALID_ARGUMENT names them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from tollgate.services.policy.domain import dimensions, periods
from tollgate.services.policy.domain.model import (
    Feature,
    Grant,
    LimitKind,
    Plan,
    QuotaLimit,
    QuotaScope,
    Role,
    SubscriptionStatus,
)
from tollgate.services.policy.domain.modes import Mode, requested_mode
from tollgate.services.policy.domain.notifications import MAX_PERCENT, MIN_PERCENT
from tollgate.shared import tenant_ids
from tollgate.shared.errors import FieldViolation, InvalidArgument

MAX_TEXT = {
    "display_name": 200,
    "description": 2000,
    "reason": 500,
    "metric": 128,
    "user_id": 128,
    "tenant_id": 128,
    "key": 128,
    "id": 40,
}
MAX_ROLES = 1000
MAX_FEATURES = 500  # ResolveModes
QUOTA_PERIODS = periods.PERIODS
DEFAULT_TTL_SECONDS = 60  # Reserve
MAX_TTL_SECONDS = 86400
MAX_PRIORITY = 1_000_000
DEFAULT_WINDOW_SECONDS = 30 * 86400  # ListActiveFeatures
MAX_WINDOW_SECONDS = 400 * 86400
ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")  # roles, features, plans
ID_RULE = "must match ^[A-Za-z][A-Za-z0-9_.-]{0,63}$"


class Violations:
    """Collects every problem of a request, so one answer names them all."""

    def __init__(self):
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def identifier(self, value: str, field: str) -> None:
        if not ID_PATTERN.match(value or ""):
            self.add(field, ID_RULE if value else "is required")

    def text(self, value: str, field: str, kind: str, *, required: bool = False) -> None:
        if kind == "tenant_id" and (value or required) and (problem := tenant_ids.problem(value)):
            self.add(field, problem)
        elif required and not value:
            self.add(field, "is required")
        elif len(value) > MAX_TEXT[kind] or "\x00" in value:
            self.add(field, f"must be at most {MAX_TEXT[kind]} characters, without NUL")

    def mode(self, value: int, field: str, *, default: Mode | None = None) -> Mode:
        if value == 0 and default is not None:
            return default
        if value not in Mode._value2member_map_:
            self.add(field, "must be a mode from MODE_OFF to MODE_AUTONOMOUS")
            return Mode.OFF
        return Mode(value)

    def caps(self, caps: Iterable[tuple[str, int]], field: str) -> dict[str, Mode]:
        result: dict[str, Mode] = {}
        for index, (feature_id, cap) in enumerate(caps):
            self.identifier(feature_id, f"{field}[{index}].feature_id")
            if feature_id in result:
                self.add(f"{field}[{index}].feature_id", f"repeats feature {feature_id!r}")
            result[feature_id] = self.mode(cap, f"{field}[{index}].cap")
        return result

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def roles(items: list[tuple[Role, list[tuple[str, int]]]]) -> list[Role]:
    """The import's roles, normalized; (role, its caps as given) per item."""
    check, seen, result = Violations(), set(), []
    if len(items) > MAX_ROLES:
        check.add("roles", f"must hold at most {MAX_ROLES} roles")
    for index, (role, caps) in enumerate(items):
        path = f"roles[{index}]"
        check.identifier(role.role_id, f"{path}.role_id")
        if role.role_id in seen:
            check.add(f"{path}.role_id", f"repeats role {role.role_id!r}")
        seen.add(role.role_id)
        check.text(role.display_name, f"{path}.display_name", "display_name")
        result.append(
            Role(
                role.role_id,
                role.display_name or role.role_id,
                check.caps(caps, f"{path}.feature_caps"),
                check.mode(role.default_cap, f"{path}.default_cap", default=Mode.OFF),
            )
        )
    check.raise_if_any()
    return result


def feature(value: Feature) -> Feature:
    """A feature to upsert, normalized (display name defaults to the id)."""
    check = Violations()
    check.identifier(value.feature_id, "feature.feature_id")
    check.text(value.display_name, "feature.display_name", "display_name")
    check.text(value.description, "feature.description", "description")
    max_mode = check.mode(value.max_mode, "feature.max_mode")
    for index, metric in enumerate(value.metrics):
        check.text(metric, f"feature.metrics[{index}]", "metric", required=True)
    check.raise_if_any()
    return Feature(
        value.feature_id,
        value.display_name or value.feature_id,
        value.description,
        max_mode,
        tuple(dict.fromkeys(value.metrics)),
    )


def plan(value: Plan, caps: list[tuple[str, int]]) -> Plan:
    """A plan to upsert, normalized (unspecified default and inactive caps are OFF)."""
    check = Violations()
    check.identifier(value.plan_id, "plan.plan_id")
    check.text(value.display_name, "plan.display_name", "display_name")
    feature_caps = check.caps(caps, "plan.feature_caps")
    quotas = tuple(_quota(check, quota, f"plan.quotas[{index}]") for index, quota in enumerate(value.quotas))
    result = Plan(
        value.plan_id,
        value.display_name or value.plan_id,
        feature_caps,
        check.mode(value.default_cap, "plan.default_cap", default=Mode.OFF),
        check.mode(value.inactive_cap, "plan.inactive_cap", default=Mode.OFF),
        quotas,
    )
    check.raise_if_any()
    return result


def _quota(check: Violations, quota: QuotaLimit, path: str) -> QuotaLimit:
    check.text(quota.metric, f"{path}.metric", "metric", required=True)
    if quota.period not in QUOTA_PERIODS:
        check.add(f"{path}.period", "must be QUOTA_PERIOD_DAY, _WEEK, _MONTH or _YEAR")
    if quota.limit < 0:
        check.add(f"{path}.limit", "must not be negative")
    for index, feature_id in enumerate(quota.feature_ids):
        check.identifier(feature_id, f"{path}.feature_ids[{index}]")
    scope, kind = int(quota.scope), int(quota.kind)  # 0, unspecified, is the default: per tenant, soft
    if scope not in (0, *QuotaScope._value2member_map_):
        check.add(f"{path}.scope", "must be QUOTA_SCOPE_TENANT or QUOTA_SCOPE_USER")
    if kind not in (0, *LimitKind._value2member_map_):
        check.add(f"{path}.kind", "must be LIMIT_KIND_SOFT or LIMIT_KIND_HARD")
    for index, percent in enumerate(quota.notify_at):
        if not MIN_PERCENT <= percent <= MAX_PERCENT:
            check.add(f"{path}.notify_at[{index}]", f"must be a percentage from {MIN_PERCENT} to {MAX_PERCENT}")
        elif percent in quota.notify_at[:index]:
            check.add(f"{path}.notify_at[{index}]", f"repeats {percent}")
    check.items.extend(dimensions.filter_violations(dimensions.as_mapping(quota.filters), f"{path}.filters"))
    return QuotaLimit(
        quota.metric,
        quota.period,
        quota.limit,
        check.mode(quota.cap, f"{path}.cap"),
        tuple(quota.feature_ids),
        quota.fail_closed,
        QuotaScope(scope) if scope in QuotaScope._value2member_map_ else QuotaScope.TENANT,
        LimitKind(kind) if kind in LimitKind._value2member_map_ else LimitKind.SOFT,
        tuple(sorted(quota.notify_at)),
        quota.filters,
    )


def required_ids(**values: str) -> None:
    """INVALID_ARGUMENT naming every field whose id is missing or malformed."""
    check = Violations()
    for field, value in values.items():
        if field in ("user_id", "tenant_id"):
            check.text(value, field, field, required=True)
        else:
            check.identifier(value, field)
    check.raise_if_any()


def resolve_one(tenant_id: str, user_id: str, feature_id: str, requested: int, min_version: int) -> Mode:
    """ResolveMode's request; returns the mode asked for (unspecified: the highest)."""
    check = Violations()
    mode = _resolving(check, tenant_id, user_id, requested, min_version)
    if not feature_id:
        check.add("feature_id", "is required")
    check.raise_if_any()
    return mode


def resolve_many(tenant_id: str, user_id: str, feature_ids: list[str], requested: int, min_version: int) -> Mode:
    """ResolveModes' request; returns the mode asked for (unspecified: the highest)."""
    check = Violations()
    mode = _resolving(check, tenant_id, user_id, requested, min_version)
    if len(feature_ids) > MAX_FEATURES:
        check.add("feature_ids", f"must name at most {MAX_FEATURES} features")
    for index, feature_id in enumerate(feature_ids):
        if not feature_id:
            check.add(f"feature_ids[{index}]", "is required")
    check.raise_if_any()
    return mode


def _resolving(check: Violations, tenant_id: str, user_id: str, requested: int, min_version: int) -> Mode:
    check.text(tenant_id, "tenant_id", "tenant_id", required=True)
    check.text(user_id, "user_id", "user_id", required=True)
    if not 0 <= requested <= Mode.AUTONOMOUS:
        check.add("requested_mode", "must be a mode from MODE_UNSPECIFIED to MODE_AUTONOMOUS")
        requested = 0
    if min_version < 0:
        check.add("min_policy_version", "must not be negative")
    return requested_mode(requested)


def active_features(tenant_id: str, user_id: str, seconds: int, nanos: int) -> int:
    """ListActiveFeatures' request; returns the ranking window in seconds (default 30 days, at most 400)."""
    check = Violations()
    check.text(tenant_id, "tenant_id", "tenant_id", required=True)
    check.text(user_id, "user_id", "user_id", required=True)
    if seconds < 0 or nanos < 0 or seconds > MAX_WINDOW_SECONDS:
        check.add("window", f"must be between 0 and {MAX_WINDOW_SECONDS}s")
    check.raise_if_any()
    return seconds or DEFAULT_WINDOW_SECONDS


def tenant_policy(tenant_id: str, max_mode: int, default_role_id: str) -> Mode:
    """SetTenantPolicy's request; returns the tenant's maximum mode."""
    check = Violations()
    check.text(tenant_id, "tenant_policy.tenant_id", "tenant_id", required=True)
    mode = check.mode(max_mode, "tenant_policy.max_mode")
    check.identifier(default_role_id, "tenant_policy.default_role_id")
    check.raise_if_any()
    return mode


def subscription(
    tenant_id: str,
    plan_id: str,
    status: int,
    flags: Mapping[str, bool],
    anchor_us: int | None = None,
    time_zone: str = "",
) -> SubscriptionStatus:
    """SetSubscription's request; returns its status."""
    check = Violations()
    if time_zone and anchor_us is None:
        check.add("subscription.time_zone", "needs a billing_anchor (without one, periods are calendar ones in UTC)")
    elif time_zone and (len(time_zone) > 64 or periods.zone_of(time_zone) is None):
        check.add("subscription.time_zone", f"unknown IANA time zone {time_zone[:64]!r}")
    check.text(tenant_id, "subscription.tenant_id", "tenant_id", required=True)
    check.identifier(plan_id, "subscription.plan_id")
    if status not in SubscriptionStatus._value2member_map_:
        check.add("subscription.status", "must be ACTIVE, TRIALING, PAST_DUE or CANCELED")
    for feature_id in sorted(flags):
        check.identifier(feature_id, f"subscription.feature_flags[{feature_id!r}]")
    check.raise_if_any()
    return SubscriptionStatus(status)


def override(tenant_id: str, role_id: str, feature_id: str, cap: int, reason: str) -> Mode:
    """SetOverride's request; returns the override's cap."""
    check = Violations()
    check.text(tenant_id, "tenant_id", "tenant_id", required=True)
    check.identifier(role_id, "role_id")
    check.identifier(feature_id, "feature_id")
    mode = check.mode(cap, "cap")
    check.text(reason, "reason", "reason")
    check.raise_if_any()
    return mode


def grant(value: Grant, now_us: int) -> Grant:
    """CreateGrant's grant, normalized (effective now unless given)."""
    check = Violations()
    check.text(value.tenant_id, "grant.tenant_id", "tenant_id", required=True)
    check.text(value.metric, "grant.metric", "metric", required=True)
    check.text(value.reason, "grant.reason", "reason")
    check.text(value.user_id, "grant.user_id", "user_id")
    if value.amount <= 0:
        check.add("grant.amount", "must be greater than 0")
    if not -MAX_PRIORITY <= value.priority <= MAX_PRIORITY:
        check.add("grant.priority", f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    effective = value.effective_us or now_us
    if value.expires_us is not None and value.expires_us <= effective:
        check.add("grant.expire_time", "must be after effective_time")
    check.raise_if_any()
    return replace(value, grant_id="", effective_us=effective, create_us=0, void_us=None)


def check_entitlement(
    tenant_id: str, user_id: str, feature_id: str, metric: str, dimension_values: Mapping[str, str]
) -> None:
    check = Violations()
    check.text(tenant_id, "tenant_id", "tenant_id", required=True)
    check.text(user_id, "user_id", "user_id", required=True)
    if not feature_id and not metric:
        check.add("feature_id", "feature_id or metric is required")
    check.text(metric, "metric", "metric")
    check.items.extend(dimensions.value_violations(dimension_values, "dimensions"))
    check.raise_if_any()


def reserve(
    tenant_id: str,
    user_id: str,
    metric: str,
    amount: int,
    ttl_seconds: int,
    ttl_nanos: int,
    key: str,
    dimension_values: Mapping[str, str],
) -> int:
    """Reserve's request; returns the time to live in microseconds (default 60 s)."""
    check = Violations()
    check.text(tenant_id, "tenant_id", "tenant_id", required=True)
    check.text(user_id, "user_id", "user_id", required=True)
    check.text(metric, "metric", "metric", required=True)
    check.text(key, "idempotency_key", "key", required=True)
    if amount <= 0:
        check.add("amount", "must be greater than 0")
    ttl_us = ttl_seconds * 1_000_000 + ttl_nanos // 1000
    if ttl_seconds < 0 or ttl_nanos < 0 or ttl_us > MAX_TTL_SECONDS * 1_000_000 or (ttl_us == 0 and ttl_nanos):
        check.add("ttl", f"must be between 1 microsecond and {MAX_TTL_SECONDS}s (unset: {DEFAULT_TTL_SECONDS}s)")
    check.items.extend(dimensions.value_violations(dimension_values, "dimensions"))
    check.raise_if_any()
    return ttl_us or DEFAULT_TTL_SECONDS * 1_000_000


def grants_listing(tenant_id: str, user_id: str) -> None:
    """ListGrants' tenant, and the user it may keep the grants of."""
    check = Violations()
    check.text(tenant_id, "tenant_id", "tenant_id", required=True)
    check.text(user_id, "user_id", "user_id")
    check.raise_if_any()


def reference(tenant_id: str, field: str, value: str, amount: int = 0) -> None:
    """A request naming one of the tenant's grants or reservations by its service-assigned id (Commit's amount)."""
    check = Violations()
    check.text(tenant_id, "tenant_id", "tenant_id", required=True)
    check.text(value, field, "id", required=True)
    if amount < 0:
        check.add("amount", "must not be negative")
    check.raise_if_any()


def watch(tenant_id: str, after_sequence: int) -> None:
    """WatchEntitlements' request (the cursor beyond the tenant's latest notification is checked when read)."""
    check = Violations()
    check.text(tenant_id, "tenant_id", "tenant_id", required=True)
    if after_sequence < 0:
        check.add("after_sequence", "must not be negative")
    check.raise_if_any()
