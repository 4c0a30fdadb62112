"""Every check on Policy's input, run by use cases after authorization; each returns the normalized value. Pure.

A check collects every problem of a request (`Violations`), so one INVALID_ARGUMENT names them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from tollgate.services.policy.domain.model import Feature, Plan, QuotaLimit, Role, SubscriptionStatus
from tollgate.services.policy.domain.modes import Mode, requested_mode
from tollgate.shared import tenant_ids
from tollgate.shared.errors import FieldViolation, InvalidArgument

MAX_TEXT = {"display_name": 200, "description": 2000, "reason": 500, "metric": 128, "user_id": 128, "tenant_id": 128}
MAX_ROLES = 1000
MAX_FEATURES = 500  # ResolveModes
QUOTA_PERIODS = (1, 2)
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
        check.add(f"{path}.period", "must be QUOTA_PERIOD_DAY or QUOTA_PERIOD_MONTH")
    if quota.limit < 0:
        check.add(f"{path}.limit", "must not be negative")
    for index, feature_id in enumerate(quota.feature_ids):
        check.identifier(feature_id, f"{path}.feature_ids[{index}]")
    return QuotaLimit(
        quota.metric,
        quota.period,
        quota.limit,
        check.mode(quota.cap, f"{path}.cap"),
        tuple(quota.feature_ids),
        quota.fail_closed,
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


def subscription(tenant_id: str, plan_id: str, status: int, flags: Mapping[str, bool]) -> SubscriptionStatus:
    """SetSubscription's request; returns its status."""
    check = Violations()
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
