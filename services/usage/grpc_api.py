"""Usage servicers: proto in, one service call, proto out."""

from __future__ import annotations

from tollgate.usage.v1 import usage_pb2_grpc

USAGE = "tollgate.usage.v1.UsageService"
ADMIN = "tollgate.usage.v1.UsageAdminService"

# The scope each RPC needs; an RPC missing here is refused to every credential.
METHOD_SCOPES = {
    f"/{USAGE}/RecordEvents": "usage:write",
    f"/{USAGE}/StreamEvents": "usage:write",
    f"/{USAGE}/GetUsage": "usage:read",
    f"/{USAGE}/ListAggregates": "usage:read",
    f"/{USAGE}/ListEvents": "usage:read",
    f"/{USAGE}/ListMetrics": "usage:read",
    f"/{ADMIN}/RunRollup": "usage:admin",
    f"/{ADMIN}/GetRollupStatus": "usage:admin",
    f"/{ADMIN}/UpsertMetric": "usage:admin",
    f"/{ADMIN}/PurgeEvents": "usage:admin",
}


class UsageApi(usage_pb2_grpc.UsageServiceServicer):
    """tollgate.usage.v1.UsageService; RPCs not built yet answer UNIMPLEMENTED."""

    def __init__(self, *, sessions, settings):
        self._sessions = sessions
        self._settings = settings


class UsageAdminApi(usage_pb2_grpc.UsageAdminServiceServicer):
    """tollgate.usage.v1.UsageAdminService; RPCs not built yet answer UNIMPLEMENTED."""

    def __init__(self, *, sessions, settings):
        self._sessions = sessions
        self._settings = settings
