"""Proto messages to domain values and back. Input is taken as given; use cases validate it."""

from __future__ import annotations

from typing import cast

from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.services.policy.domain.dimensions import Filters, filters_of, parsed
from tollgate.services.policy.domain.entitlements import COMMITTED, Balance, Reservation, event_id_of
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
    TenantPolicy,
)
from tollgate.services.policy.domain.modes import Mode, Resolution
from tollgate.services.policy.domain.notifications import Notification
from tollgate.services.policy.domain.ranking import ActiveFeature
from tollgate.shared.proto_time import from_micros


# A proto enum is a plain int on the wire and in Python; the stubs give each its own int class, and the domain
# enums carry the same numbers (domain/modes.py). In, an enum stays the number it was sent as until validation
# turns it into a Mode or names the field; out, each domain enum is its number.
def _mode_in(value: int) -> Mode:
    return cast(Mode, value)


def _mode_out(value: Mode) -> pb.Mode:
    return cast(pb.Mode, int(value))


def _caps_in(caps) -> list[tuple[str, int]]:
    return [(cap.feature_id, cap.cap) for cap in caps]


def _caps_out(caps) -> list[pb.FeatureCap]:
    return [pb.FeatureCap(feature_id=feature_id, cap=_mode_out(cap)) for feature_id, cap in sorted(caps.items())]


def role_in(message: pb.Role) -> tuple[Role, list[tuple[str, int]]]:
    return Role(message.role_id, message.display_name, {}, _mode_in(message.default_cap)), _caps_in(
        message.feature_caps
    )


def role_out(role: Role) -> pb.Role:
    return pb.Role(
        role_id=role.role_id,
        display_name=role.display_name,
        feature_caps=_caps_out(role.feature_caps),
        default_cap=_mode_out(role.default_cap),
    )


def feature_in(message: pb.Feature) -> Feature:
    return Feature(
        message.feature_id,
        message.display_name,
        message.description,
        _mode_in(message.max_mode),
        tuple(message.metrics),
    )


def feature_out(feature: Feature) -> pb.Feature:
    return pb.Feature(
        feature_id=feature.feature_id,
        display_name=feature.display_name,
        description=feature.description,
        max_mode=_mode_out(feature.max_mode),
        metrics=list(feature.metrics),
    )


def plan_in(message: pb.Plan) -> tuple[Plan, list[tuple[str, int]]]:
    # Scope and kind stay the numbers sent (0 is the default) until validation turns them into enums.
    quotas = tuple(
        QuotaLimit(
            q.metric,
            q.period,
            q.limit,
            _mode_in(q.cap),
            tuple(q.feature_ids),
            q.fail_closed,
            cast(QuotaScope, q.scope),
            cast(LimitKind, q.kind),
            tuple(q.notify_at),
            filters_of({name: list(allowed.values) for name, allowed in q.filters.items()}),
        )
        for q in message.quotas
    )
    return (
        Plan(
            message.plan_id,
            message.display_name,
            {},
            _mode_in(message.default_cap),
            _mode_in(message.inactive_cap),
            quotas,
        ),
        _caps_in(message.feature_caps),
    )


def plan_out(plan: Plan) -> pb.Plan:
    quotas = [
        pb.QuotaLimit(
            metric=q.metric,
            period=cast(pb.QuotaPeriod, q.period),
            limit=q.limit,
            cap=_mode_out(q.cap),
            feature_ids=list(q.feature_ids),
            fail_closed=q.fail_closed,
            scope=cast(pb.QuotaScope, int(q.scope)),
            kind=cast(pb.LimitKind, int(q.kind)),
            notify_at=list(q.notify_at),
            filters=_filters_out(q.filters),
        )
        for q in plan.quotas
    ]
    return pb.Plan(
        plan_id=plan.plan_id,
        display_name=plan.display_name,
        feature_caps=_caps_out(plan.feature_caps),
        default_cap=_mode_out(plan.default_cap),
        inactive_cap=_mode_out(plan.inactive_cap),
        quotas=quotas,
    )


def subscription_out(subscription: Subscription) -> pb.Subscription:
    message = pb.Subscription(
        tenant_id=subscription.tenant_id,
        plan_id=subscription.plan_id,
        status=cast(pb.SubscriptionStatus, int(subscription.status)),
        feature_flags=dict(subscription.feature_flags),
        update_time=from_micros(subscription.update_us),
        time_zone=subscription.time_zone,
    )
    if subscription.billing_anchor_us is not None:
        message.billing_anchor.CopyFrom(from_micros(subscription.billing_anchor_us))
    return message


def anchor_in(message: pb.Subscription) -> int | None:
    """The billing anchor in µs; None when unset."""
    return _micros(message.billing_anchor) if message.HasField("billing_anchor") else None


def _micros(stamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def grant_in(message: pb.Grant) -> Grant:
    return Grant(
        "",
        message.tenant_id,
        message.metric,
        message.amount,
        _micros(message.effective_time) if message.HasField("effective_time") else 0,
        _micros(message.expire_time) if message.HasField("expire_time") else None,
        message.priority,
        message.reason,
        user_id=message.user_id,
    )


def grant_out(grant: Grant) -> pb.Grant:
    message = pb.Grant(
        grant_id=grant.grant_id,
        tenant_id=grant.tenant_id,
        metric=grant.metric,
        amount=grant.amount,
        effective_time=from_micros(grant.effective_us),
        priority=grant.priority,
        reason=grant.reason,
        create_time=from_micros(grant.create_us),
        user_id=grant.user_id,
    )
    if grant.expires_us is not None:
        message.expire_time.CopyFrom(from_micros(grant.expires_us))
    if grant.void_us is not None:
        message.void_time.CopyFrom(from_micros(grant.void_us))
    return message


def _filters_out(filters: Filters) -> dict[str, pb.DimensionValues]:
    return {name: pb.DimensionValues(values=list(values)) for name, values in filters}


def entitlement_out(found) -> pb.CheckEntitlementResponse:
    """CheckEntitlement's response of an Entitlement (service/entitlements.py)."""
    response = pb.CheckEntitlementResponse(
        has_access=found.has_access,
        quotas=[balance_out(b) for b in found.balances],
        policy_version=found.version,
    )
    if found.resolution is not None:
        response.resolution.CopyFrom(resolution_out(found.resolution))
    return response


def balance_out(item: Balance) -> pb.QuotaBalance:
    quota = item.quota
    return pb.QuotaBalance(
        metric=quota.metric,
        period=cast(pb.QuotaPeriod, quota.period),
        scope=cast(pb.QuotaScope, int(quota.scope)),
        kind=cast(pb.LimitKind, int(quota.kind)),
        limit=quota.limit,
        granted=item.granted,
        usage=item.used,
        reserved=item.reserved,
        balance=item.balance,
        overage=item.overage,
        period_start=from_micros(item.start_us),
        period_end=from_micros(item.end_us),
        exhausted=item.exhausted,
        decides=item.decides,
        detail=item.detail(),
        grants=[
            pb.GrantBalance(
                grant_id=part.grant.grant_id,
                amount=part.grant.amount,
                remaining=part.remaining,
                expire_time=from_micros(part.grant.expires_us) if part.grant.expires_us is not None else None,
                priority=part.grant.priority,
            )
            for part in item.grants
        ],
        filters=_filters_out(quota.filters),
    )


def reservation_out(item: Reservation, now_us: int) -> pb.Reservation:
    committed = item.state == COMMITTED and item.committed_amount > 0
    return pb.Reservation(
        reservation_id=item.reservation_id,
        tenant_id=item.tenant_id,
        user_id=item.user_id,
        metric=item.metric,
        amount=item.amount,
        idempotency_key=item.idempotency_key,
        state=cast(pb.ReservationState, item.state_at(now_us)),
        create_time=from_micros(item.create_us),
        expire_time=from_micros(item.expires_us),
        committed_amount=item.committed_amount,
        usage_event_id=event_id_of(item.reservation_id) if committed else "",
        recorded_in_usage=committed and item.recorded_us is not None,
        dimensions=parsed(item.dimensions),
    )


def notification_out(item: Notification) -> pb.EntitlementNotification:
    c = item.crossing
    return pb.EntitlementNotification(
        sequence=item.sequence,
        tenant_id=c.tenant_id,
        metric=c.metric,
        period=cast(pb.QuotaPeriod, c.period),
        scope=cast(pb.QuotaScope, c.scope),
        kind=cast(pb.LimitKind, c.kind),
        user_id=c.user_id,
        percent=c.percent,
        threshold=c.threshold,
        allowed=c.allowed,
        usage=c.used,
        reserved=c.reserved,
        period_start=from_micros(c.start_us),
        period_end=from_micros(c.end_us),
        create_time=from_micros(item.create_us),
        observed_by=c.observed_by,
        detail=c.detail,
        filters=_filters_out(c.filters),
    )


def tenant_policy_out(policy: TenantPolicy) -> pb.TenantPolicy:
    return pb.TenantPolicy(
        tenant_id=policy.tenant_id,
        max_mode=_mode_out(policy.max_mode),
        default_role_id=policy.default_role_id,
        update_time=from_micros(policy.update_us),
    )


def override_out(override: Override) -> pb.Override:
    return pb.Override(
        override_id=override.override_id,
        tenant_id=override.tenant_id,
        role_id=override.role_id,
        feature_id=override.feature_id,
        cap=_mode_out(override.cap),
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
        pb.BasisEntry(
            source=cast(pb.CapSource, int(e.source)), cap=_mode_out(e.cap), detail=e.detail, binding=e.binding
        )
        for e in resolution.basis
    ]
    return pb.Resolution(
        feature_id=resolution.feature_id,
        requested_mode=_mode_out(resolution.requested),
        effective_mode=_mode_out(resolution.effective),
        basis=basis,
    )


def active_feature_out(item: ActiveFeature) -> pb.ActiveFeature:
    """A ranked feature with the parts of its score."""
    scored = item.scored
    return pb.ActiveFeature(
        feature_id=scored.feature_id,
        display_name=item.display_name,
        effective_mode=_mode_out(item.resolution.effective),
        score=scored.score,
        parts=pb.ScoreParts(
            mode_score=scored.mode_score,
            user_quantity=scored.user_quantity,
            tenant_quantity=scored.tenant_quantity,
            usage_score=scored.usage_score,
        ),
    )
