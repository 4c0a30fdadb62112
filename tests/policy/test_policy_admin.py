"""PolicyAdminService through real channels on both backends: versions, imports, validation, access."""

import grpc
import pytest

from tests import policy_support as ps
from tests import support
from tests.conftest import status_of
from tollgate.policy.v1 import policy_pb2 as pb

S = pb


@pytest.fixture
def admin(policy_admin_stub, admin_token):
    return ps.Client(policy_admin_stub, admin_token)


def version_of(admin, tenant):
    return admin.InspectPolicy(pb.InspectPolicyRequest(tenant_id=tenant)).policy_version


field_violations = support.field_violations


def test_policy_version_grows_on_every_admin_write_and_only_then(admin, tenant):
    world = ps.build_world(admin, tenant)
    member = next(iter(world.roles))
    writes = [
        lambda: admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u", role_id=member)),
        lambda: admin.SetOverride(
            pb.SetOverrideRequest(tenant_id=tenant, role_id=member, feature_id=world.feature, cap=S.MODE_SUGGEST)
        ),
        lambda: admin.SetTenantPolicy(
            pb.SetTenantPolicyRequest(
                tenant_policy=pb.TenantPolicy(tenant_id=tenant, max_mode=S.MODE_PROACTIVE, default_role_id=member)
            )
        ),
        lambda: admin.SetSubscription(
            pb.SetSubscriptionRequest(
                subscription=pb.Subscription(
                    tenant_id=tenant, plan_id=world.plan, status=S.SUBSCRIPTION_STATUS_TRIALING
                )
            )
        ),
        lambda: admin.UpsertFeature(
            pb.UpsertFeatureRequest(feature=pb.Feature(feature_id=world.feature, max_mode=S.MODE_AMBITIOUS))
        ),
        lambda: admin.UnbindRole(pb.UnbindRoleRequest(tenant_id=tenant, user_id="u", role_id=member)),
    ]
    for write in writes:
        before = version_of(admin, tenant)
        answered = write().policy_version
        assert before < answered == version_of(admin, tenant)
        assert version_of(admin, tenant) == answered  # reads change nothing
    before = version_of(admin, tenant)
    for write in writes[1:5]:  # the same content again: nothing changes, nothing is written
        assert write().policy_version <= before  # UpsertFeature answers the catalog's own version
    assert version_of(admin, tenant) == before


def roles_request(tag, **flags):
    return pb.ImportRolesRequest(
        roles=[
            pb.Role(role_id=f"OWNER_{tag}", default_cap=S.MODE_AUTONOMOUS),
            pb.Role(
                role_id=f"VIEWER_{tag}",
                default_cap=S.MODE_OBSERVE,
                feature_caps=[pb.FeatureCap(feature_id="voice_agent", cap=S.MODE_OFF)],
            ),
        ],
        **flags,
    )


def audit_count(admin):
    return len(admin.ListAuditRecords(pb.ListAuditRecordsRequest(page_size=1000)).records)


def test_importing_the_same_roles_twice_changes_nothing_the_second_time(admin):
    tag = ps.suffix()
    first = admin.ImportRoles(roles_request(tag))
    assert sorted(first.added) == [f"OWNER_{tag}", f"VIEWER_{tag}"]
    records = admin.ListAuditRecords(pb.ListAuditRecordsRequest(page_size=1000)).records
    second = admin.ImportRoles(roles_request(tag))
    assert (list(second.added), list(second.changed), list(second.removed)) == ([], [], [])
    assert {f"OWNER_{tag}", f"VIEWER_{tag}"} <= set(second.unchanged)
    assert second.policy_version == first.policy_version
    assert admin.ListAuditRecords(pb.ListAuditRecordsRequest(page_size=1000)).records == records


def test_a_dry_run_reports_the_diff_and_writes_nothing(admin):
    tag = ps.suffix()
    admin.ImportRoles(roles_request(tag))
    changed = roles_request(tag, dry_run=True)
    changed.roles[1].default_cap = S.MODE_SUGGEST
    changed.roles.append(pb.Role(role_id=f"MEMBER_{tag}", default_cap=S.MODE_SUGGEST))
    before = admin.ListRoles(pb.ListRolesRequest(page_size=1000))
    count = audit_count(admin)
    report = admin.ImportRoles(changed)
    assert (list(report.added), list(report.changed), report.dry_run) == ([f"MEMBER_{tag}"], [f"VIEWER_{tag}"], True)
    assert admin.ListRoles(pb.ListRolesRequest(page_size=1000)) == before
    assert audit_count(admin) == count


def test_prune_removes_absent_roles_but_refuses_roles_still_in_use(admin, tenant):
    world = ps.build_world(admin, tenant, role_caps={"MEMBER": S.MODE_SUGGEST})
    member = next(iter(world.roles))
    everything = admin.ListRoles(pb.ListRolesRequest(page_size=1000)).roles
    keep_all_but_member = pb.ImportRolesRequest(
        roles=[r for r in everything if r.role_id != member], prune=True, dry_run=True
    )
    with pytest.raises(grpc.RpcError) as caught:
        admin.ImportRoles(keep_all_but_member)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and member in caught.value.details()
    tag = ps.suffix()
    admin.ImportRoles(roles_request(tag))
    without_viewer = pb.ImportRolesRequest(
        roles=[r for r in admin.ListRoles(pb.ListRolesRequest(page_size=1000)).roles if r.role_id != f"VIEWER_{tag}"],
        prune=True,
    )
    assert list(admin.ImportRoles(without_viewer).removed) == [f"VIEWER_{tag}"]


def test_bad_roles_are_refused_with_a_field_violation_per_problem(admin):
    request = pb.ImportRolesRequest(
        roles=[
            pb.Role(role_id="OK"),
            pb.Role(role_id="9bad"),
            pb.Role(role_id="OK"),
            pb.Role(role_id="X", feature_caps=[pb.FeatureCap(feature_id="f")]),
        ]
    )
    with pytest.raises(grpc.RpcError) as caught:
        admin.ImportRoles(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["roles[1].role_id", "roles[2].role_id", "roles[3].feature_caps[0].cap"]


@pytest.mark.parametrize(
    "request_",
    [
        pb.UpsertFeatureRequest(feature=pb.Feature(feature_id="ok_feature")),
        pb.UpsertFeatureRequest(feature=pb.Feature(feature_id="", max_mode=S.MODE_OFF)),
        pb.UpsertPlanRequest(plan=pb.Plan(plan_id="P", quotas=[pb.QuotaLimit(metric="m", limit=-1, cap=S.MODE_OFF)])),
    ],
    ids=["feature without max mode", "feature without id", "plan with a bad quota"],
)
def test_bad_catalog_entries_are_invalid_arguments(admin, request_):
    rpc = admin.UpsertFeature if isinstance(request_, pb.UpsertFeatureRequest) else admin.UpsertPlan
    assert status_of(lambda: rpc(request_)) == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_tenants_roles_plans_overrides_and_bindings_are_not_found(admin, tenant):
    world = ps.build_world(admin, tenant)
    member, stranger = next(iter(world.roles)), support.new_tenant()
    calls = [
        lambda: admin.InspectPolicy(pb.InspectPolicyRequest(tenant_id=stranger)),
        lambda: admin.GetSubscription(pb.GetSubscriptionRequest(tenant_id=stranger)),
        lambda: admin.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=stranger)),
        lambda: admin.BindRole(pb.BindRoleRequest(tenant_id=stranger, user_id="u", role_id=member)),
        lambda: admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u", role_id="NO_SUCH_ROLE")),
        lambda: admin.UnbindRole(pb.UnbindRoleRequest(tenant_id=tenant, user_id="u", role_id=member)),
        lambda: admin.DeleteOverride(pb.DeleteOverrideRequest(tenant_id=tenant, override_id="ov_missing")),
        lambda: admin.SetSubscription(
            pb.SetSubscriptionRequest(
                subscription=pb.Subscription(
                    tenant_id=tenant, plan_id="NO_SUCH_PLAN", status=S.SUBSCRIPTION_STATUS_ACTIVE
                )
            )
        ),
        lambda: admin.SetOverride(
            pb.SetOverrideRequest(tenant_id=tenant, role_id=member, feature_id="nope", cap=S.MODE_OFF)
        ),
    ]
    assert [status_of(call) for call in calls] == [grpc.StatusCode.NOT_FOUND] * len(calls)


def test_a_tenant_admin_manages_its_own_bindings_and_overrides_but_not_its_plan(dbs, policy_admin_stub, admin, tenant):
    world = ps.build_world(admin, tenant)
    member = next(iter(world.roles))
    own = ps.Client(policy_admin_stub, support.make_token(dbs, tenant=tenant, scopes=["policy:admin", "policy:read"]))
    assert own.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u", role_id=member)).policy_version > 0
    own.SetOverride(pb.SetOverrideRequest(tenant_id=tenant, role_id=member, feature_id=world.feature, cap=S.MODE_OFF))
    upgrade = pb.SetSubscriptionRequest(
        subscription=pb.Subscription(tenant_id=tenant, plan_id=world.plan, status=S.SUBSCRIPTION_STATUS_ACTIVE)
    )
    assert status_of(lambda: own.SetSubscription(upgrade)) == grpc.StatusCode.PERMISSION_DENIED
    other = pb.BindRoleRequest(tenant_id=support.new_tenant(), user_id="u", role_id=member)
    assert status_of(lambda: own.BindRole(other)) == grpc.StatusCode.PERMISSION_DENIED
    records = own.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=tenant, page_size=1000)).records
    assert {r.tenant_id for r in records} == {tenant} and len(records) >= 4


def test_a_read_only_credential_cannot_write(dbs, policy_admin_stub, admin, tenant):
    world = ps.build_world(admin, tenant)
    reader = ps.Client(policy_admin_stub, support.make_token(dbs, tenant=tenant, scopes=["policy:read"]))
    assert reader.ListBindings(pb.ListBindingsRequest(tenant_id=tenant)).bindings == []
    bind = pb.BindRoleRequest(tenant_id=tenant, user_id="u", role_id=next(iter(world.roles)))
    assert status_of(lambda: reader.BindRole(bind)) == grpc.StatusCode.PERMISSION_DENIED


def test_bindings_page_through_in_user_order_with_tokens_bound_to_the_filter(admin, tenant):
    world = ps.build_world(admin, tenant)
    member = next(iter(world.roles))
    for index in range(5):
        admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id=f"user{index}", role_id=member))
    seen, token = [], ""
    for _ in range(10):
        page = admin.ListBindings(pb.ListBindingsRequest(tenant_id=tenant, page_size=2, page_token=token))
        seen += [b.user_id for b in page.bindings]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"user{i}" for i in range(5)]
    first = admin.ListBindings(pb.ListBindingsRequest(tenant_id=tenant, page_size=2)).next_page_token
    elsewhere = pb.ListBindingsRequest(tenant_id=tenant, user_id="user1", page_token=first)
    assert status_of(lambda: admin.ListBindings(elsewhere)) == grpc.StatusCode.INVALID_ARGUMENT


def test_inspect_policy_shows_everything_a_tenants_answers_come_from(admin, tenant):
    world = ps.build_world(admin, tenant, tenant_max=S.MODE_PROACTIVE)
    member = next(iter(world.roles))
    admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u", role_id=member))
    admin.SetOverride(
        pb.SetOverrideRequest(
            tenant_id=tenant, role_id=member, feature_id=world.feature, cap=S.MODE_OFF, reason="why not"
        )
    )
    seen = admin.InspectPolicy(pb.InspectPolicyRequest(tenant_id=tenant))
    assert seen.tenant_policy.max_mode == S.MODE_PROACTIVE and seen.plan.plan_id == world.plan
    assert seen.subscription.plan_id == world.plan and seen.binding_count == 1
    assert [o.reason for o in seen.overrides] == ["why not"]
