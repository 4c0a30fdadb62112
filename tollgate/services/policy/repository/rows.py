"""Rows to domain values and back; the JSON documents are canonical so equal content stores equal text."""

from __future__ import annotations

import json

from tollgate.services.policy.domain.dimensions import as_mapping, filters_of
from tollgate.services.policy.domain.model import (
    Binding,
    Feature,
    Grant,
    LimitKind,
    Override,
    Plan,
    QuotaLimit,
    QuotaScope,
    Role,
    Subscription,
    SubscriptionStatus,
    TenantPolicy,
)
from tollgate.services.policy.domain.modes import Mode
from tollgate.shared.audit import canonical_json


def _caps_json(caps) -> str:
    return canonical_json({feature_id: int(cap) for feature_id, cap in caps.items()})


def _caps(text: str) -> dict[str, Mode]:
    return {feature_id: Mode(cap) for feature_id, cap in json.loads(text).items()}


def role_row(role: Role) -> dict:
    return {
        "role_id": role.role_id,
        "display_name": role.display_name,
        "default_cap": int(role.default_cap),
        "feature_caps": _caps_json(role.feature_caps),
    }


def role_of(row) -> Role:
    return Role(row.role_id, row.display_name, _caps(row.feature_caps), Mode(row.default_cap))


def feature_row(feature: Feature) -> dict:
    return {
        "feature_id": feature.feature_id,
        "display_name": feature.display_name,
        "description": feature.description,
        "max_mode": int(feature.max_mode),
        "metrics": canonical_json(list(feature.metrics)),
    }


def feature_of(row) -> Feature:
    return Feature(
        row.feature_id, row.display_name, row.description, Mode(row.max_mode), tuple(json.loads(row.metrics))
    )


def _quota_json(quota: QuotaLimit) -> dict:
    # notify_at and filters only when set: plans stored before them keep their canonical text.
    extra: dict = {"notify_at": list(quota.notify_at)} if quota.notify_at else {}
    if quota.filters:
        extra["filters"] = as_mapping(quota.filters)
    return extra | {
        "metric": quota.metric,
        "period": quota.period,
        "limit": quota.limit,
        "cap": int(quota.cap),
        "feature_ids": list(quota.feature_ids),
        "fail_closed": quota.fail_closed,
        "scope": int(quota.scope),
        "kind": int(quota.kind),
    }


def plan_row(plan: Plan) -> dict:
    return {
        "plan_id": plan.plan_id,
        "display_name": plan.display_name,
        "default_cap": int(plan.default_cap),
        "inactive_cap": int(plan.inactive_cap),
        "feature_caps": _caps_json(plan.feature_caps),
        "quotas": canonical_json([_quota_json(q) for q in plan.quotas]),
    }


def plan_of(row) -> Plan:
    # Quotas stored before scopes and kinds existed count per tenant and are soft, as they always did.
    quotas = tuple(
        QuotaLimit(
            q["metric"],
            q["period"],
            q["limit"],
            Mode(q["cap"]),
            tuple(q["feature_ids"]),
            q["fail_closed"],
            QuotaScope(q.get("scope", QuotaScope.TENANT)),
            LimitKind(q.get("kind", LimitKind.SOFT)),
            tuple(q.get("notify_at", ())),
            filters_of(q.get("filters", {})),
        )
        for q in json.loads(row.quotas)
    )
    return Plan(
        row.plan_id, row.display_name, _caps(row.feature_caps), Mode(row.default_cap), Mode(row.inactive_cap), quotas
    )


def subscription_row(subscription: Subscription) -> dict:
    return {
        "tenant_id": subscription.tenant_id,
        "plan_id": subscription.plan_id,
        "status": int(subscription.status),
        "feature_flags": canonical_json(dict(subscription.feature_flags)),
        "update_us": subscription.update_us,
        "billing_anchor_us": subscription.billing_anchor_us,
        "time_zone": subscription.time_zone,
    }


def subscription_of(row) -> Subscription:
    return Subscription(
        row.tenant_id,
        row.plan_id,
        SubscriptionStatus(row.status),
        json.loads(row.feature_flags),
        row.update_us,
        row.billing_anchor_us,
        row.time_zone,
    )


def grant_row(grant: Grant) -> dict:
    return {
        "tenant_id": grant.tenant_id,
        "grant_id": grant.grant_id,
        "metric": grant.metric,
        "amount": grant.amount,
        "effective_us": grant.effective_us,
        "expires_us": grant.expires_us,
        "priority": grant.priority,
        "reason": grant.reason,
        "create_us": grant.create_us,
        "void_us": grant.void_us,
        "user_id": grant.user_id,
    }


def grant_of(row) -> Grant:
    return Grant(
        row.grant_id,
        row.tenant_id,
        row.metric,
        row.amount,
        row.effective_us,
        row.expires_us,
        row.priority,
        row.reason,
        row.create_us,
        row.void_us,
        row.user_id,
    )


def tenant_policy_of(row) -> TenantPolicy:
    return TenantPolicy(row.tenant_id, Mode(row.max_mode), row.default_role_id, row.update_us)


def override_of(row) -> Override:
    return Override(
        row.override_id, row.tenant_id, row.role_id, row.feature_id, Mode(row.cap), row.reason, row.update_us
    )


def binding_of(row) -> Binding:
    return Binding(row.tenant_id, row.user_id, row.role_id, row.create_us)
