"""ResolveMode(s) through real channels on both backends: every source of the effective mode (docs/policy.md)
in turn, the basis, freshness."""

import grpc
import pytest

from tests import policy_support as ps
from tests import support
from tests.conftest import status_of
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc

R, S = pb.CapSource, pb


@pytest.fixture
def admin(policy_admin_stub, admin_token):
    return ps.Client(policy_admin_stub, admin_token)


@pytest.fixture
def resolver(policy_stub, admin_token):
    return ps.Client(policy_stub, admin_token)


def resolve(resolver, world, user="u1", requested=0, **extra):
    return resolver.ResolveMode(
        pb.ResolveModeRequest(
            tenant_id=world.tenant, user_id=user, feature_id=world.feature, requested_mode=requested, **extra
        )
    )


def binding_sources(response):
    return [entry.source for entry in response.resolution.basis if entry.binding]


def test_a_role_cap_binds_the_answer(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, role_caps={"MEMBER": S.MODE_SUGGEST})
    admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u1", role_id=ps.role(world, "MEMBER")))
    response = resolve(resolver, world)
    assert response.resolution.effective_mode == S.MODE_SUGGEST
    assert binding_sources(response) == [R.CAP_SOURCE_ROLE]
    assert response.resolution.basis[1].detail == f"role {ps.role(world, 'MEMBER')}"


def test_with_several_roles_the_most_permissive_role_counts(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, role_caps={"VIEWER": S.MODE_OBSERVE, "ADMIN": S.MODE_AMBITIOUS})
    for name in ("VIEWER", "ADMIN"):
        admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u1", role_id=ps.role(world, name)))
    response = resolve(resolver, world)
    assert response.resolution.effective_mode == S.MODE_AMBITIOUS
    assert binding_sources(response) == [R.CAP_SOURCE_ROLE]
    assert "most permissive" in response.resolution.basis[1].detail


def test_a_tenant_override_replaces_the_roles_catalog_cap_and_the_basis_names_it(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, role_caps={"MEMBER": S.MODE_AUTONOMOUS})
    member = ps.role(world, "MEMBER")
    admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u1", role_id=member))
    override = admin.SetOverride(
        pb.SetOverrideRequest(
            tenant_id=tenant, role_id=member, feature_id=world.feature, cap=S.MODE_OBSERVE, reason="pilot"
        )
    ).override
    response = resolve(resolver, world)
    assert response.resolution.effective_mode == S.MODE_OBSERVE
    assert binding_sources(response) == [R.CAP_SOURCE_ROLE]
    assert override.override_id in response.resolution.basis[1].detail


def test_a_feature_flag_set_off_in_the_subscription_gives_off(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, feature_flag=False)
    response = resolve(resolver, world)
    assert response.resolution.effective_mode == S.MODE_OFF
    assert binding_sources(response) == [R.CAP_SOURCE_FEATURE]
    assert "flag off" in response.resolution.basis[2].detail


def test_the_features_own_maximum_binds_the_answer(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, feature_max=S.MODE_PROACTIVE)
    response = resolve(resolver, world)
    assert response.resolution.effective_mode == S.MODE_PROACTIVE
    assert binding_sources(response) == [R.CAP_SOURCE_FEATURE]


def test_an_inactive_subscription_gives_the_plans_inactive_cap(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, status=S.SUBSCRIPTION_STATUS_PAST_DUE, inactive_cap=S.MODE_OBSERVE)
    response = resolve(resolver, world)
    assert response.resolution.effective_mode == S.MODE_OBSERVE
    assert binding_sources(response) == [R.CAP_SOURCE_PLAN]
    assert "inactive" in response.resolution.basis[3].detail and "PAST_DUE" in response.resolution.basis[3].detail


def test_a_feature_without_a_plan_entry_gets_the_plans_default_cap(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, plan_cap=None, plan_default=S.MODE_SUGGEST)
    response = resolve(resolver, world)
    assert response.resolution.effective_mode == S.MODE_SUGGEST
    assert binding_sources(response) == [R.CAP_SOURCE_PLAN]
    assert response.resolution.basis[3].detail == f"plan {world.plan} default cap"


def test_the_tenant_maximum_binds_the_answer(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, tenant_max=S.MODE_OBSERVE)
    response = resolve(resolver, world)
    assert response.resolution.effective_mode == S.MODE_OBSERVE
    assert binding_sources(response) == [R.CAP_SOURCE_TENANT]


def test_a_modest_request_is_granted_and_nothing_binds(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, tenant_max=S.MODE_PROACTIVE)
    response = resolve(resolver, world, requested=S.MODE_SUGGEST)
    assert response.resolution.effective_mode == S.MODE_SUGGEST
    assert binding_sources(response) == []
    assert [entry.source for entry in response.resolution.basis] == [
        R.CAP_SOURCE_REQUESTED,
        R.CAP_SOURCE_ROLE,
        R.CAP_SOURCE_FEATURE,
        R.CAP_SOURCE_PLAN,
        R.CAP_SOURCE_TENANT,
    ]


def test_a_user_with_no_binding_gets_the_default_role_never_an_elevated_one(admin, resolver, tenant):
    world = ps.build_world(
        admin, tenant, role_caps={"VIEWER": S.MODE_OBSERVE, "OWNER": S.MODE_AUTONOMOUS}, default_role="VIEWER"
    )
    admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="boss", role_id=ps.role(world, "OWNER")))
    response = resolve(resolver, world, user="stranger")
    assert response.resolution.effective_mode == S.MODE_OBSERVE
    assert response.resolution.basis[1].detail == f"default role {ps.role(world, 'VIEWER')} (no binding)"


def test_a_tenant_without_a_subscription_resolves_to_off_and_says_no_subscription(admin, resolver, tenant):
    world = ps.build_world(admin, tenant)
    other = support.new_tenant()
    admin.SetTenantPolicy(
        pb.SetTenantPolicyRequest(
            tenant_policy=pb.TenantPolicy(
                tenant_id=other, max_mode=S.MODE_AUTONOMOUS, default_role_id=next(iter(world.roles))
            )
        )
    )
    response = resolver.ResolveMode(pb.ResolveModeRequest(tenant_id=other, user_id="u", feature_id=world.feature))
    assert response.resolution.effective_mode == S.MODE_OFF
    assert response.resolution.basis[3].detail == "no subscription" and response.resolution.basis[3].binding


def test_an_unknown_tenant_or_feature_is_not_found(admin, resolver, tenant):
    world = ps.build_world(admin, tenant)
    unknown_tenant = pb.ResolveModeRequest(tenant_id=support.new_tenant(), user_id="u", feature_id=world.feature)
    unknown_feature = pb.ResolveModeRequest(tenant_id=tenant, user_id="u", feature_id="no_such_feature")
    assert status_of(lambda: resolver.ResolveMode(unknown_tenant)) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: resolver.ResolveMode(unknown_feature)) == grpc.StatusCode.NOT_FOUND


def test_a_write_through_the_api_shows_in_the_very_next_answer(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, role_caps={"MEMBER": S.MODE_AUTONOMOUS})
    member = ps.role(world, "MEMBER")
    for cap in (S.MODE_OBSERVE, S.MODE_PROACTIVE, S.MODE_OFF, S.MODE_AMBITIOUS):
        assert resolve(resolver, world).resolution.effective_mode != cap  # warm the cache with the old answer
        written = admin.SetOverride(
            pb.SetOverrideRequest(tenant_id=tenant, role_id=member, feature_id=world.feature, cap=cap)
        )
        response = resolve(resolver, world)
        assert response.resolution.effective_mode == cap
        assert response.policy_version >= written.policy_version


def test_resolve_modes_answers_every_feature_from_one_snapshot_in_the_order_asked(admin, resolver, tenant):
    world = ps.build_world(admin, tenant, tenant_max=S.MODE_PROACTIVE)
    extra = f"{world.feature}_b"
    admin.UpsertFeature(pb.UpsertFeatureRequest(feature=pb.Feature(feature_id=extra, max_mode=S.MODE_OBSERVE)))
    response = resolver.ResolveModes(
        pb.ResolveModesRequest(tenant_id=tenant, user_id="u", feature_ids=[extra, world.feature])
    )
    assert [r.feature_id for r in response.resolutions] == [extra, world.feature]
    # the roles have no entry for the new feature, so their default cap (OFF) binds it
    assert [r.effective_mode for r in response.resolutions] == [S.MODE_OFF, S.MODE_PROACTIVE]
    single = resolve(resolver, world, user="u")
    assert single.policy_version == response.policy_version


def test_resolve_modes_with_an_unknown_feature_is_not_found(admin, resolver, tenant):
    world = ps.build_world(admin, tenant)
    request = pb.ResolveModesRequest(tenant_id=tenant, user_id="u", feature_ids=[world.feature, "nope"])
    assert status_of(lambda: resolver.ResolveModes(request)) == grpc.StatusCode.NOT_FOUND


def test_a_min_policy_version_from_a_write_is_honoured(admin, resolver, tenant):
    world = ps.build_world(admin, tenant)
    written = admin.SetTenantPolicy(
        pb.SetTenantPolicyRequest(
            tenant_policy=pb.TenantPolicy(
                tenant_id=tenant, max_mode=S.MODE_SUGGEST, default_role_id=next(iter(world.roles))
            )
        )
    )
    response = resolve(resolver, world, min_policy_version=written.policy_version)
    assert response.policy_version >= written.policy_version
    assert response.resolution.effective_mode == S.MODE_SUGGEST


def test_bad_resolve_requests_are_invalid_arguments_naming_the_field(resolver, tenant):
    with pytest.raises(grpc.RpcError) as caught:
        resolver.ResolveMode(pb.ResolveModeRequest(tenant_id=tenant, user_id="", feature_id="", requested_mode=9))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in caught.value.details() and "feature_id" in caught.value.details()


def test_a_tenant_credential_resolves_its_own_tenant_only(dbs, policy_stub, admin, tenant):
    world = ps.build_world(admin, tenant)
    own = ps.Client(policy_stub, support.make_token(dbs, tenant=tenant, scopes=["policy:read"]))
    assert resolve(own, world).resolution.effective_mode == S.MODE_AUTONOMOUS
    other = pb.ResolveModeRequest(tenant_id=support.new_tenant(), user_id="u", feature_id=world.feature)
    assert status_of(lambda: own.ResolveMode(other)) == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("rpc", ["ResolveMode", "ResolveModes"])
def test_a_min_policy_version_ahead_of_the_tenants_data_is_refused_naming_both_versions(admin, resolver, tenant, rpc):
    world = ps.build_world(admin, tenant)
    current = resolve(resolver, world).policy_version
    ahead = current + 1000
    request = (
        pb.ResolveModeRequest(tenant_id=tenant, user_id="u1", feature_id=world.feature, min_policy_version=ahead)
        if rpc == "ResolveMode"
        else pb.ResolveModesRequest(tenant_id=tenant, user_id="u1", min_policy_version=ahead)
    )
    with pytest.raises(grpc.RpcError) as caught:
        getattr(resolver, rpc)(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"min_policy_version {ahead}" in caught.value.details()
    assert f"policy version {current}" in caught.value.details()
    assert resolve(resolver, world, min_policy_version=current).policy_version == current


def test_a_min_policy_version_from_another_replicas_write_refreshes_the_snapshot_once(dbs, admin, tenant, admin_token):
    world = ps.build_world(admin, tenant)
    # A second replica on the same database that would not hear of the write by polling during the test.
    replica = support.build_policy(dbs, cache_poll_seconds=60)
    try:
        with support.channel(replica.port) as channel:
            other = ps.Client(policy_pb2_grpc.PolicyServiceStub(channel), admin_token)
            before = resolve(other, world)
            written = admin.SetTenantPolicy(
                pb.SetTenantPolicyRequest(
                    tenant_policy=pb.TenantPolicy(
                        tenant_id=tenant, max_mode=S.MODE_SUGGEST, default_role_id=next(iter(world.roles))
                    )
                )
            )
            cached = resolve(other, world)
            fresh = resolve(other, world, min_policy_version=written.policy_version)
    finally:
        replica.stop(grace=1)
    assert before.resolution.effective_mode == cached.resolution.effective_mode == S.MODE_AUTONOMOUS
    assert cached.policy_version == before.policy_version < written.policy_version
    assert (fresh.resolution.effective_mode, fresh.policy_version) == (S.MODE_SUGGEST, written.policy_version)
