"""Policy servicers: proto in, one service call, proto out."""

from __future__ import annotations

from tollgate.policy.v1 import policy_pb2_grpc

POLICY = "tollgate.policy.v1.PolicyService"
ADMIN = "tollgate.policy.v1.PolicyAdminService"

_READS = ["ListRoles", "ListFeatures", "ListPlans", "GetSubscription", "ListOverrides", "ListBindings",
          "InspectPolicy"]
_WRITES = ["ImportRoles", "UpsertFeature", "UpsertPlan", "SetSubscription", "SetTenantPolicy", "SetOverride",
           "DeleteOverride", "BindRole", "UnbindRole", "ListAuditRecords", "VerifyAudit"]

# The scope each RPC needs; an RPC missing here is refused to every credential.
METHOD_SCOPES = {
    **{f"/{POLICY}/{name}": "policy:read" for name in ["ResolveMode", "ResolveModes", "ListActiveFeatures"]},
    **{f"/{ADMIN}/{name}": "policy:read" for name in _READS},
    **{f"/{ADMIN}/{name}": "policy:admin" for name in _WRITES},
}


class PolicyApi(policy_pb2_grpc.PolicyServiceServicer):
    """tollgate.policy.v1.PolicyService; RPCs not built yet answer UNIMPLEMENTED."""

    def __init__(self, *, sessions, settings):
        self._sessions = sessions
        self._settings = settings


class PolicyAdminApi(policy_pb2_grpc.PolicyAdminServiceServicer):
    """tollgate.policy.v1.PolicyAdminService; RPCs not built yet answer UNIMPLEMENTED."""

    def __init__(self, *, sessions, settings):
        self._sessions = sessions
        self._settings = settings
