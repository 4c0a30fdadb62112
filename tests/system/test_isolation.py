"""Every RPC of both services x every bad credential: denied with the right status, nothing leaked."""

import grpc
import pytest
from google.rpc import code_pb2

from tests import support
from tests.conftest import ALL_SCOPES
from tollgate.policy.v1 import policy_pb2, policy_pb2_grpc
from tollgate.services.policy.grpc_api import METHOD_SCOPES as POLICY_SCOPES
from tollgate.services.usage.grpc_api import METHOD_SCOPES as USAGE_SCOPES
from tollgate.shared import credentials_cli
from tollgate.usage.v1 import usage_pb2, usage_pb2_grpc

SERVICES = [
    ("usage", usage_pb2, "UsageService", usage_pb2_grpc.UsageServiceStub),
    ("usage", usage_pb2, "UsageAdminService", usage_pb2_grpc.UsageAdminServiceStub),
    ("policy", policy_pb2, "PolicyService", policy_pb2_grpc.PolicyServiceStub),
    ("policy", policy_pb2, "PolicyAdminService", policy_pb2_grpc.PolicyAdminServiceStub),
]
STREAMING = {"StreamEvents"}


def every_rpc() -> list:
    return [
        pytest.param(server, module, method, stub_class, id=f"{service}.{method.name}")
        for server, module, service, stub_class in SERVICES
        for method in module.DESCRIPTOR.services_by_name[service].methods
    ]


def request_for(module, method, tenant_id: str):
    """A request naming `tenant_id` wherever the message has a tenant (nested or not)."""
    request = getattr(module, method.input_type.name)()
    _name_tenant(request, tenant_id)
    return request


def _name_tenant(message, tenant_id: str) -> None:
    for field in message.DESCRIPTOR.fields:
        if field.name == "tenant_id":
            message.tenant_id = tenant_id
        elif (
            field.message_type is not None
            and not field.is_repeated
            and not field.message_type.GetOptions().map_entry
            and field.message_type.full_name.startswith("tollgate.")
        ):
            _name_tenant(getattr(message, field.name), tenant_id)


def call(stub_class, channel, method, request, metadata) -> grpc.StatusCode:
    stub = stub_class(channel)
    rpc = getattr(stub, method.name)
    try:
        if method.name in STREAMING:
            # A batch refused whole is answered on the stream (its error); the stream itself goes on.
            for answer in rpc(iter([request]), metadata=metadata, timeout=10):
                if answer.error.code:
                    return grpc.StatusCode[code_pb2.Code.Name(answer.error.code)]
        elif method.server_streaming:
            # A refused watch fails at its first read; an allowed one would send or wait, so one read decides.
            next(iter(rpc(request, metadata=metadata, timeout=10)), None)
        else:
            rpc(request, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def credentials(dbs):
    """Tokens for tenant A: every scope, revoked, one service's scope each, and per scope one lacking only it."""
    tenant_a = support.new_tenant()
    revoked = support.make_token(dbs, tenant=tenant_a, scopes=ALL_SCOPES)
    env = {"USAGE_DATABASE_URL": dbs.usage_url, "POLICY_DATABASE_URL": dbs.policy_url}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert credentials_cli.main(["revoke", revoked.split("_")[1]]) == 0
    return {
        "tenant_a": tenant_a,
        "a_all": support.make_token(dbs, tenant=tenant_a, scopes=ALL_SCOPES),
        "revoked": revoked,
        "usage_only": support.make_token(dbs, tenant=tenant_a, scopes=["usage:write"]),
        "policy_only": support.make_token(dbs, tenant=tenant_a, scopes=["policy:read"]),
        # Stored in the scope's service (its other scopes name it), so only the missing scope refuses it.
        "lacking": {
            scope: support.make_token(
                dbs,
                tenant=tenant_a,
                scopes=[other for other in ALL_SCOPES if other != scope and other.split(":")[0] == scope.split(":")[0]],
            )
            for scope in ALL_SCOPES
        },
    }


def channel_for(server, usage_channel, policy_channel):
    return usage_channel if server == "usage" else policy_channel


@pytest.mark.parametrize("server,module,method,stub_class", every_rpc())
def test_every_rpc_refuses_missing_malformed_unknown_and_revoked_tokens(
    server, module, method, stub_class, usage_channel, policy_channel, credentials
):
    channel = channel_for(server, usage_channel, policy_channel)
    request = request_for(module, method, credentials["tenant_a"])
    unknown = "tg_0123456789abcdef_" + "A" * 43
    cases = {
        "none": (),
        "malformed": (("authorization", "Bearer nonsense"),),
        "not bearer": (("authorization", "Basic dXNlcjpwYXNz"),),
        "unknown": support.bearer(unknown),
        "revoked": support.bearer(credentials["revoked"]),
    }
    codes = {name: call(stub_class, channel, method, request, metadata) for name, metadata in cases.items()}
    assert codes == {name: grpc.StatusCode.UNAUTHENTICATED for name in cases}


@pytest.mark.parametrize("server,module,method,stub_class", every_rpc())
def test_every_rpc_refuses_a_credential_without_its_scope(
    server, module, method, stub_class, usage_channel, policy_channel, credentials
):
    channel = channel_for(server, usage_channel, policy_channel)
    scope = {**USAGE_SCOPES, **POLICY_SCOPES}[f"/{method.containing_service.full_name}/{method.name}"]
    request = request_for(module, method, credentials["tenant_a"])
    assert (
        call(stub_class, channel, method, request, support.bearer(credentials["lacking"][scope]))
        == grpc.StatusCode.PERMISSION_DENIED
    )


@pytest.mark.parametrize("server,module,method,stub_class", every_rpc())
def test_every_rpc_knows_no_token_whose_scopes_are_all_for_the_other_service(
    server, module, method, stub_class, usage_channel, policy_channel, credentials
):
    channel = channel_for(server, usage_channel, policy_channel)
    other_service = credentials["policy_only"] if server == "usage" else credentials["usage_only"]
    request = request_for(module, method, credentials["tenant_a"])
    assert call(stub_class, channel, method, request, support.bearer(other_service)) == grpc.StatusCode.UNAUTHENTICATED


def tenant_scoped(method) -> bool:
    return any(f.name == "tenant_id" for f in method.input_type.fields) or any(
        f.message_type is not None
        and f.message_type.full_name.startswith("tollgate.")
        and any(g.name == "tenant_id" for g in f.message_type.fields)
        for f in method.input_type.fields
    )


def tenant_rpcs():
    return [p for p in every_rpc() if tenant_scoped(p.values[2])]


# RPCs that act on the catalog or on every tenant: a tenant credential, even with every scope, is refused.
PLATFORM_ONLY = {
    "UpsertMetric",
    "ImportRoles",
    "UpsertFeature",
    "UpsertPlan",
    "VerifyAudit",
    "SetSubscription",
    "SetTenantPolicy",
}


@pytest.mark.parametrize("server,module,method,stub_class", tenant_rpcs())
def test_every_tenant_rpc_refuses_another_tenants_credential(
    server, module, method, stub_class, usage_channel, policy_channel, credentials
):
    channel = channel_for(server, usage_channel, policy_channel)
    request = request_for(module, method, support.new_tenant())
    assert (
        call(stub_class, channel, method, request, support.bearer(credentials["a_all"]))
        == grpc.StatusCode.PERMISSION_DENIED
    )


@pytest.mark.parametrize(
    "server,module,method,stub_class",
    [
        p
        for p in every_rpc()
        if p.values[2].name in PLATFORM_ONLY
        or (
            tenant_scoped(p.values[2])
            and p.values[2].name in {"RunRollup", "GetRollupStatus", "PurgeEvents", "ListAuditRecords"}
        )
    ],
)
def test_platform_wide_rpcs_refuse_a_tenant_credential(
    server, module, method, stub_class, usage_channel, policy_channel, credentials
):
    channel = channel_for(server, usage_channel, policy_channel)
    request = request_for(module, method, "")  # no tenant named: the whole platform
    _name_tenant(request, credentials["tenant_a"]) if method.name in {"SetSubscription", "SetTenantPolicy"} else None
    assert (
        call(stub_class, channel, method, request, support.bearer(credentials["a_all"]))
        == grpc.StatusCode.PERMISSION_DENIED
    )
