"""Proto messages to domain values and back. Input is taken as given; use cases validate it."""

from __future__ import annotations

from services.policy.domain.model import Binding, Feature, Override, Plan, QuotaLimit, Role, Subscription, TenantPolicy
from services.policy.domain.modes import Resolution
from services.policy.domain.ranking import ActiveFeature
from shared.proto_time import from_micros
from tollgate.policy.v1 import policy_pb2 as pb


def _caps_in(caps) -> list[tuple[str, int]]:
    return [(cap.feature_id, cap.cap) for cap in caps]


def _caps_out(caps) -> list[pb.FeatureCap]:
    return [pb.FeatureCap(feature_id=feature_id, cap=int(cap)) for feature_id, cap in sorted(caps.items())]


def role_in(message: pb.Role) -> tuple[Role, list[tuple[str, int]]]:
    return Role(message.role_id, message.display_name, {}, message.default_cap), _caps_in(message.feature_caps)


def role_out(role: Role) -> pb.Role:
    return pb.Role(
        role_id=role.role_id,
        display_name=role.display_name,
        feature_caps=_caps_out(role.feature_caps),
        default_cap=int(role.default_cap),
    )


def feature_in(message: pb.Feature) -> Feature:
    return Feature(
        message.feature_id, message.display_name, message.description, message.max_mode, tuple(message.metrics)
    )


def feature_out(feature: Feature) -> pb.Feature:
    return pb.Feature(
        feature_id=feature.feature_id,
        display_name=feature.display_name,
        description=feature.description,
        max_mode=int(feature.max_mode),
        metrics=list(feature.metrics),
    )


def plan_in(message: pb.Plan) -> tuple[Plan, list[tuple[str, int]]]:
    quotas = tuple(
        QuotaLimit(q.metric, q.period, q.limit, q.cap, tuple(q.feature_ids), q.fail_closed) for q in message.quotas
    )
    return (
        Plan(message.plan_id, message.display_name, {}, message.default_cap, message.inactive_cap, quotas),
        _caps_in(message.feature_caps),
    )


def plan_out(plan: Plan) -> pb.Plan:
    quotas = [
        pb.QuotaLimit(
            metric=q.metric,
            period=q.period,
            limit=q.limit,
            cap=int(q.cap),
            feature_ids=list(q.feature_ids),
            fail_closed=q.fail_closed,
        )
        for q in plan.quotas
    ]
    return pb.Plan(
        plan_id=plan.plan_id,
        display_name=plan.display_name,
        feature_caps=_caps_out(plan.feature_caps),
        default_cap=int(plan.default_cap),
        inactive_cap=int(plan.inactive_cap),
        quotas=quotas,
    )


def subscription_out(subscription: Subscription) -> pb.Subscription:
    return pb.Subscription(
        tenant_id=subscription.tenant_id,
        plan_id=subscription.plan_id,
        status=int(subscription.status),
        feature_flags=dict(subscription.feature_flags),
        update_time=from_micros(subscription.update_us),
    )


def tenant_policy_out(policy: TenantPolicy) -> pb.TenantPolicy:
    return pb.TenantPolicy(
        tenant_id=policy.tenant_id,
        max_mode=int(policy.max_mode),
        default_role_id=policy.default_role_id,
        update_time=from_micros(policy.update_us),
    )


def override_out(override: Override) -> pb.Override:
    return pb.Override(
        override_id=override.override_id,
        tenant_id=override.tenant_id,
        role_id=override.role_id,
        feature_id=override.feature_id,
        cap=int(override.cap),
        reason=override.reason,
        update_time=from_micros(override.update_us),
    )


def binding_out(binding: Binding) -> pb.Binding:
    return pb.Binding(
        tenant_id=binding.tenant_id,
        user_id=binding.user_id,
        role_id=binding.role_id,
        create_time=from_micros(binding.create_us),
    )


def resolution_out(resolution: Resolution) -> pb.Resolution:
    basis = [
        pb.BasisEntry(source=int(e.source), cap=int(e.cap), detail=e.detail, binding=e.binding)
        for e in resolution.basis
    ]
    return pb.Resolution(
        feature_id=resolution.feature_id,
        requested_mode=int(resolution.requested),
        effective_mode=int(resolution.effective),
        basis=basis,
    )


def active_feature_out(item: ActiveFeature) -> pb.ActiveFeature:
    """A ranked feature with the parts of its score."""
    scored = item.scored
    return pb.ActiveFeature(
        feature_id=scored.feature_id,
        display_name=item.display_name,
        effective_mode=int(item.resolution.effective),
        score=scored.score,
        parts=pb.ScoreParts(
            mode_score=scored.mode_score,
            user_quantity=scored.user_quantity,
            tenant_quantity=scored.tenant_quantity,
            usage_score=scored.usage_score,
        ),
    )
