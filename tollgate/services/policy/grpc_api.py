"""Policy servicers: proto in, one service call, proto out."""

from __future__ import annotations

from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy import grpc_convert
from tollgate.services.policy.combiner import Combiner
from tollgate.services.policy.repository import Connections, Sessions, Transactions
from tollgate.services.policy.service import (
    active,
    audit,
    catalog,
    entitlements,
    grants,
    resolve,
    tenants,
    usage_grants,
)
from tollgate.services.policy.service.notifications import Notices
from tollgate.services.policy.service.outbox import Dispatcher
from tollgate.services.policy.usage_port import Deadline
from tollgate.shared import grpc_audit
from tollgate.shared.auth import principal
from tollgate.shared.encoded import EncodedResponses
from tollgate.shared.http import HttpContext

POLICY = "tollgate.policy.v1.PolicyService"
ADMIN = "tollgate.policy.v1.PolicyAdminService"

_READS = [
    "ListRoles",
    "ListFeatures",
    "ListPlans",
    "GetSubscription",
    "ListOverrides",
    "ListBindings",
    "InspectPolicy",
    "ListGrants",
]
_WRITES = [
    "ImportRoles",
    "UpsertFeature",
    "UpsertPlan",
    "SetSubscription",
    "SetTenantPolicy",
    "SetOverride",
    "DeleteOverride",
    "BindRole",
    "UnbindRole",
    "ListAuditRecords",
    "VerifyAudit",
    "CreateGrant",
    "VoidGrant",
]

# The scope each RPC needs; an RPC missing here is refused to every credential.
METHOD_SCOPES = {
    **{
        f"/{POLICY}/{name}": "policy:read"
        for name in ["ResolveMode", "ResolveModes", "ListActiveFeatures", "CheckEntitlement", "WatchEntitlements"]
    },
    # Taking and committing balance records usage: the authority of RecordEvents.
    **{f"/{POLICY}/{name}": "policy:write" for name in ["Reserve", "Commit", "Release"]},
    **{f"/{ADMIN}/{name}": "policy:read" for name in _READS},
    **{f"/{ADMIN}/{name}": "policy:admin" for name in _WRITES},
}


class PolicyApi(policy_pb2_grpc.PolicyServiceServicer):
    """tollgate.policy.v1.PolicyService."""

    def __init__(
        self,
        *,
        cache,
        usage,
        sessions: Sessions,
        transactions: Transactions,
        connections: Connections,
        dispatcher: Dispatcher,
        notices: Notices,
    ):
        self._cache = cache
        self._usage = usage
        self._sessions = sessions
        self._transactions = transactions
        self._connections = connections
        self._dispatcher = dispatcher
        self._notices = notices
        self._reserves: Combiner = Combiner()
        self._commits: Combiner = Combiner()
        self._checks = entitlements.CheckAnswers()
        self._held_reads = entitlements.HeldReads()
        self._checked = EncodedResponses(4 * 2**20)  # CheckEntitlement's kept answers, encoded

    def ResolveMode(self, request, context):
        found = resolve.resolve_mode(
            request.tenant_id,
            request.user_id,
            request.feature_id,
            request.requested_mode,
            request.min_policy_version,
            cache=self._cache,
            caller=principal(),
            usage=self._usage,
            deadline=Deadline.after(context.time_remaining()),
        )
        return pb.ResolveModeResponse(
            resolution=grpc_convert.resolution_out(found.resolutions[0]), policy_version=found.version
        )

    def ResolveModes(self, request, context):
        found = resolve.resolve_modes(
            request.tenant_id,
            request.user_id,
            list(request.feature_ids),
            request.requested_mode,
            request.min_policy_version,
            cache=self._cache,
            caller=principal(),
            usage=self._usage,
            deadline=Deadline.after(context.time_remaining()),
        )
        return pb.ResolveModesResponse(
            resolutions=[grpc_convert.resolution_out(r) for r in found.resolutions], policy_version=found.version
        )

    def ListActiveFeatures(self, request, context):
        found = active.list_active_features(
            request.tenant_id,
            request.user_id,
            request.window.seconds,
            request.window.nanos,
            cache=self._cache,
            usage=self._usage,
            caller=principal(),
            deadline=Deadline.after(context.time_remaining()),
        )
        return pb.ListActiveFeaturesResponse(
            features=[grpc_convert.active_feature_out(item) for item in found.items],
            usage_available=found.usage_available,
            usage_unavailable_reason=found.unavailable_reason,
            policy_version=found.version,
        )

    def CheckEntitlement(self, request, context):
        found = entitlements.check_entitlement(
            request.tenant_id,
            request.user_id,
            request.feature_id,
            request.metric,
            cache=self._cache,
            transactions=self._transactions,
            connections=self._connections,
            usage=self._usage,
            caller=principal(),
            deadline=Deadline.after(context.time_remaining()),
            notices=self._notices,
            dimension_values=dict(request.dimensions),
            answers=self._checks,
            reads=self._held_reads,
        )
        return self._checked.response(found.answer, lambda: grpc_convert.entitlement_out(found))

    def Reserve(self, request, context):
        found = entitlements.reserve(
            request.tenant_id,
            request.user_id,
            request.metric,
            request.amount,
            request.ttl.seconds,
            request.ttl.nanos,
            request.idempotency_key,
            cache=self._cache,
            transactions=self._transactions,
            connections=self._connections,
            usage=self._usage,
            caller=principal(),
            deadline=Deadline.after(context.time_remaining()),
            notices=self._notices,
            combiner=self._reserves,
            dimension_values=dict(request.dimensions),
        )
        response = pb.ReserveResponse(
            reserved=found.reservation is not None,
            quotas=[grpc_convert.balance_out(b) for b in found.balances],
            refusal=found.refusal,
        )
        if found.reservation is not None:
            response.reservation.CopyFrom(grpc_convert.reservation_out(found.reservation, found.now_us))
        return response

    def Commit(self, request, context):
        found = entitlements.commit(
            request.tenant_id,
            request.reservation_id,
            request.amount,
            transactions=self._transactions,
            dispatcher=self._dispatcher,
            caller=principal(),
            deadline=Deadline.after(context.time_remaining()),
            combiner=self._commits,
        )
        return pb.CommitResponse(reservation=grpc_convert.reservation_out(found.reservation, found.now_us))

    def Release(self, request, context):
        found = entitlements.release(
            request.tenant_id, request.reservation_id, transactions=self._transactions, caller=principal()
        )
        return pb.ReleaseResponse(reservation=grpc_convert.reservation_out(found.reservation, found.now_us))

    def WatchEntitlements(self, request, context):
        context.add_callback(self._notices.wake)  # a cancelled watch ends (and frees its thread) now, not at a poll

        over_http = isinstance(context, HttpContext)

        def active() -> bool:
            # gRPC ends a call past its deadline itself, DEADLINE_EXCEEDED: a watch that ended first would complete
            # the stream instead. Over HTTP the Connect timeout is only known as time left, and ends the stream.
            if not over_http:
                return context.is_active()
            remaining = context.time_remaining()
            return context.is_active() and (remaining is None or remaining > 0)

        for notification in self._notices.watch(
            request.tenant_id, request.after_sequence, sessions=self._sessions, caller=principal(), active=active
        ):
            yield pb.WatchEntitlementsResponse(notification=grpc_convert.notification_out(notification))


class PolicyAdminApi(policy_pb2_grpc.PolicyAdminServiceServicer):
    """tollgate.policy.v1.PolicyAdminService."""

    def __init__(self, *, sessions: Sessions, cache, usage):
        self._sessions = sessions
        self._cache = cache
        self._usage = usage

    def _writes(self) -> dict:
        return {"sessions": self._sessions, "cache": self._cache, "caller": principal()}

    def ImportRoles(self, request, context):
        diff, version = catalog.import_roles(
            [grpc_convert.role_in(r) for r in request.roles],
            dry_run=request.dry_run,
            prune=request.prune,
            **self._writes(),
        )
        return pb.ImportRolesResponse(
            added=diff.added,
            changed=diff.changed,
            removed=diff.removed,
            unchanged=diff.unchanged,
            dry_run=request.dry_run,
            policy_version=version,
        )

    def ListRoles(self, request, context):
        page = catalog.list_catalog(
            "roles", page_size=request.page_size, page_token=request.page_token, sessions=self._sessions
        )
        return pb.ListRolesResponse(
            roles=[grpc_convert.role_out(r) for r in page.items], next_page_token=page.next_page_token
        )

    def UpsertFeature(self, request, context):
        stored = catalog.upsert_feature(
            grpc_convert.feature_in(request.feature),
            usage=self._usage,
            deadline=Deadline.after(context.time_remaining()),
            **self._writes(),
        )
        return pb.UpsertFeatureResponse(
            feature=grpc_convert.feature_out(stored.value),
            created=stored.created,
            policy_version=stored.version,
            unchecked_metrics=stored.metrics.unchecked,
            metrics_unchecked_reason=stored.metrics.reason,
        )

    def ListFeatures(self, request, context):
        page = catalog.list_catalog(
            "features", page_size=request.page_size, page_token=request.page_token, sessions=self._sessions
        )
        return pb.ListFeaturesResponse(
            features=[grpc_convert.feature_out(f) for f in page.items], next_page_token=page.next_page_token
        )

    def UpsertPlan(self, request, context):
        stored = catalog.upsert_plan(
            *grpc_convert.plan_in(request.plan),
            usage=self._usage,
            deadline=Deadline.after(context.time_remaining()),
            **self._writes(),
        )
        return pb.UpsertPlanResponse(
            plan=grpc_convert.plan_out(stored.value),
            created=stored.created,
            policy_version=stored.version,
            unchecked_metrics=stored.metrics.unchecked,
            metrics_unchecked_reason=stored.metrics.reason,
        )

    def ListPlans(self, request, context):
        page = catalog.list_catalog(
            "plans", page_size=request.page_size, page_token=request.page_token, sessions=self._sessions
        )
        return pb.ListPlansResponse(
            plans=[grpc_convert.plan_out(p) for p in page.items], next_page_token=page.next_page_token
        )

    def GetSubscription(self, request, context):
        found = tenants.get_subscription(request.tenant_id, sessions=self._sessions, caller=principal())
        return pb.GetSubscriptionResponse(subscription=grpc_convert.subscription_out(found))

    def SetSubscription(self, request, context):
        given = request.subscription
        stored, version = tenants.set_subscription(
            given.tenant_id,
            given.plan_id,
            given.status,
            dict(given.feature_flags),
            anchor_us=grpc_convert.anchor_in(given),
            time_zone=given.time_zone,
            **self._writes(),
        )
        return pb.SetSubscriptionResponse(subscription=grpc_convert.subscription_out(stored), policy_version=version)

    def SetTenantPolicy(self, request, context):
        given = request.tenant_policy
        stored, version = tenants.set_tenant_policy(
            given.tenant_id, given.max_mode, given.default_role_id, **self._writes()
        )
        return pb.SetTenantPolicyResponse(tenant_policy=grpc_convert.tenant_policy_out(stored), policy_version=version)

    def SetOverride(self, request, context):
        stored, version = grants.set_override(
            request.tenant_id, request.role_id, request.feature_id, request.cap, request.reason, **self._writes()
        )
        return pb.SetOverrideResponse(override=grpc_convert.override_out(stored), policy_version=version)

    def DeleteOverride(self, request, context):
        version = grants.delete_override(request.tenant_id, request.override_id, **self._writes())
        return pb.DeleteOverrideResponse(policy_version=version)

    def ListOverrides(self, request, context):
        page = grants.list_overrides(
            request.tenant_id,
            page_size=request.page_size,
            page_token=request.page_token,
            sessions=self._sessions,
            caller=principal(),
        )
        return pb.ListOverridesResponse(
            overrides=[grpc_convert.override_out(o) for o in page.items], next_page_token=page.next_page_token
        )

    def BindRole(self, request, context):
        binding, version = grants.bind_role(request.tenant_id, request.user_id, request.role_id, **self._writes())
        return pb.BindRoleResponse(binding=grpc_convert.binding_out(binding), policy_version=version)

    def UnbindRole(self, request, context):
        version = grants.unbind_role(request.tenant_id, request.user_id, request.role_id, **self._writes())
        return pb.UnbindRoleResponse(policy_version=version)

    def ListBindings(self, request, context):
        page = grants.list_bindings(
            request.tenant_id,
            request.user_id,
            page_size=request.page_size,
            page_token=request.page_token,
            sessions=self._sessions,
            caller=principal(),
        )
        return pb.ListBindingsResponse(
            bindings=[grpc_convert.binding_out(b) for b in page.items], next_page_token=page.next_page_token
        )

    def CreateGrant(self, request, context):
        grant, version = usage_grants.create_grant(grpc_convert.grant_in(request.grant), **self._writes())
        return pb.CreateGrantResponse(grant=grpc_convert.grant_out(grant), policy_version=version)

    def VoidGrant(self, request, context):
        grant, version = usage_grants.void_grant(request.tenant_id, request.grant_id, **self._writes())
        return pb.VoidGrantResponse(grant=grpc_convert.grant_out(grant), policy_version=version)

    def ListGrants(self, request, context):
        page = usage_grants.list_grants(
            request.tenant_id,
            request.metric,
            request.user_id,
            page_size=request.page_size,
            page_token=request.page_token,
            sessions=self._sessions,
            caller=principal(),
        )
        return pb.ListGrantsResponse(
            grants=[grpc_convert.grant_out(g) for g in page.items], next_page_token=page.next_page_token
        )

    def InspectPolicy(self, request, context):
        snapshot = tenants.inspect_policy(request.tenant_id, sessions=self._sessions, caller=principal())
        return _inspection_out(snapshot)

    def ListAuditRecords(self, request, context):
        page = audit.list_records(
            request.tenant_id,
            page_size=request.page_size,
            page_token=request.page_token,
            sessions=self._sessions,
            caller=principal(),
        )
        return pb.ListAuditRecordsResponse(
            records=[grpc_audit.record_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    def VerifyAudit(self, request, context):
        result = audit.verify(sessions=self._sessions, caller=principal())
        broken = result.first_break
        return pb.VerifyAuditResponse(
            ok=result.ok,
            records_checked=result.records_checked,
            first_broken_sequence=broken.sequence if broken else 0,
            problem=broken.problem if broken else "",
        )


def _inspection_out(snapshot) -> pb.InspectPolicyResponse:
    response = pb.InspectPolicyResponse(
        tenant_policy=grpc_convert.tenant_policy_out(snapshot.tenant_policy),
        overrides=[
            grpc_convert.override_out(o)
            for o in sorted(snapshot.overrides.values(), key=lambda o: (o.role_id, o.feature_id))
        ],
        binding_count=sum(len(roles) for roles in snapshot.bindings.values()),
        policy_version=snapshot.version,
    )
    if snapshot.subscription is not None:
        response.subscription.CopyFrom(grpc_convert.subscription_out(snapshot.subscription))
    if snapshot.plan is not None:
        response.plan.CopyFrom(grpc_convert.plan_out(snapshot.plan))
    return response
