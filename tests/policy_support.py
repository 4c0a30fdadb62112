"""Helpers of the Policy tests: an admin client and a small world (roles, feature, plan, tenant) per test."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from tests import support
from tollgate.policy.v1 import policy_pb2 as pb

AUTONOMOUS = pb.MODE_AUTONOMOUS


class Client:
    """A stub whose calls carry one token and a deadline: client.SetOverride(request)."""

    def __init__(self, stub, token: str):
        self._stub, self._metadata = stub, support.bearer(token)

    def __getattr__(self, name):
        rpc = getattr(self._stub, name)
        return lambda request: rpc(request, metadata=self._metadata, timeout=10)


def suffix() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class World:
    """One tenant with its own roles, one feature and one plan, all named uniquely for the test."""

    tenant: str
    feature: str
    plan: str
    roles: dict[str, int] = field(default_factory=dict)  # role id -> cap on the feature


def build_world(
    admin: Client,
    tenant: str,
    *,
    role_caps: dict[str, int] | None = None,
    feature_max: int = AUTONOMOUS,
    plan_cap: int | None = AUTONOMOUS,
    plan_default: int = AUTONOMOUS,
    inactive_cap: int = 0,
    tenant_max: int = AUTONOMOUS,
    status: int = pb.SUBSCRIPTION_STATUS_ACTIVE,
    feature_flag: bool | None = None,
    default_role: str = "",
    metrics: tuple[str, ...] = (),
    quotas: tuple[pb.QuotaLimit, ...] = (),
) -> World:
    """Set the world up through the admin API; role names in role_caps get the test's suffix appended."""
    tag = suffix()
    feature, plan = f"feat_{tag}", f"PLAN_{tag}"
    roles = {f"{name}_{tag}": cap for name, cap in (role_caps or {"MEMBER": AUTONOMOUS}).items()}
    admin.ImportRoles(
        pb.ImportRolesRequest(
            roles=[
                pb.Role(role_id=role, feature_caps=[pb.FeatureCap(feature_id=feature, cap=cap)])
                for role, cap in roles.items()
            ]
        )
    )
    admin.UpsertFeature(
        pb.UpsertFeatureRequest(feature=pb.Feature(feature_id=feature, max_mode=feature_max, metrics=metrics))
    )
    caps = [] if plan_cap is None else [pb.FeatureCap(feature_id=feature, cap=plan_cap)]
    admin.UpsertPlan(
        pb.UpsertPlanRequest(
            plan=pb.Plan(
                plan_id=plan, feature_caps=caps, default_cap=plan_default, inactive_cap=inactive_cap, quotas=quotas
            )
        )
    )
    default = f"{default_role}_{tag}" if default_role else next(iter(roles))
    admin.SetTenantPolicy(
        pb.SetTenantPolicyRequest(
            tenant_policy=pb.TenantPolicy(tenant_id=tenant, max_mode=tenant_max, default_role_id=default)
        )
    )
    admin.SetSubscription(
        pb.SetSubscriptionRequest(
            subscription=pb.Subscription(
                tenant_id=tenant,
                plan_id=plan,
                status=status,
                feature_flags={} if feature_flag is None else {feature: feature_flag},
            )
        )
    )
    return World(tenant, feature, plan, roles)


def role(world: World, name: str) -> str:
    """The world's full id of a role given by its short name."""
    return next(role_id for role_id in world.roles if role_id.rsplit("_", 1)[0] == name)
