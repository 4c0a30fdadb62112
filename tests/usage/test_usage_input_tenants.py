"""The tenant-id format (shared/tenant_ids.py), enforced alike by Usage, Policy and tollgate-token; and an
empty tenant_id is a bad argument, not someone else's tenant. Real servers on SQLite and PostgreSQL."""

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from tests import support
from tests.usage.test_usage_stream_batches import field_violations
from tests.usage_support import event, now_us, tenant_token, ts
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.shared import credentials_cli, tenant_ids
from tollgate.usage.v1 import usage_pb2 as u

BAD = ["bad tenant!", "a/b", "-leading-dash", "tenant\n", "é", "x" * 129, "t\x00"]
GOOD = ["demo", "t-0123abcd", "3f2b8c1e-9d4a-4e0b-8a7c-2f1d0e9b6a5c", "Acme_Corp.eu", "x" * 128, "7"]


def violations(error: grpc.RpcError) -> dict[str, str]:
    """{field: description} of the BadRequest detail of a failed call."""
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    return {}


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("value", GOOD)
def test_the_rule_accepts_letters_digits_underscore_dot_and_dash_up_to_128(value):
    assert tenant_ids.problem(value) is None


@pytest.mark.parametrize("value", BAD + [""])
def test_the_rule_refuses_anything_else_and_says_what_a_tenant_id_must_be(value):
    assert tenant_ids.problem(value) == ("is required" if value == "" else tenant_ids.RULE)


def usage_calls(tenant_id: str) -> dict:
    """Every Usage RPC of one request, naming `tenant_id` and valid otherwise."""
    start, end = ts(now_us() - 3_600_000_000), ts(now_us())
    return {
        "RecordEvents": ("usage", u.RecordEventsRequest(tenant_id=tenant_id, events=[event("e1")])),
        "GetUsage": ("usage", u.GetUsageRequest(tenant_id=tenant_id, start_time=start, end_time=end)),
        "ListEvents": ("usage", u.ListEventsRequest(tenant_id=tenant_id)),
        "ListAggregates": (
            "usage",
            u.ListAggregatesRequest(tenant_id=tenant_id, metric="api.requests", period=u.PERIOD_DAY),
        ),
        "RunRollup": ("admin", u.RunRollupRequest(tenant_id=tenant_id)),
        "GetRollupStatus": ("admin", u.GetRollupStatusRequest(tenant_id=tenant_id)),
        "PurgeEvents": ("admin", u.PurgeEventsRequest(tenant_id=tenant_id, before_time=start, dry_run=True)),
        "ListAuditRecords": ("admin", u.ListAuditRecordsRequest(tenant_id=tenant_id)),
    }


RPCS = list(usage_calls("t"))


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize("bad", ["bad tenant!", "é"])
def test_every_usage_rpc_refuses_a_malformed_tenant_id_naming_the_field_and_the_rule(
    usage_stub, usage_admin_stub, admin_token, rpc, bad
):
    which, request = usage_calls(bad)[rpc]
    stub = usage_stub if which == "usage" else usage_admin_stub
    error = refused(lambda: getattr(stub, rpc)(request, metadata=support.bearer(admin_token), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == {"tenant_id": tenant_ids.RULE}


def test_a_malformed_tenant_is_refused_before_anything_is_stored(usage_stub, admin_token):
    request = u.RecordEventsRequest(tenant_id="bad tenant!", events=[event("e1")])
    refused(lambda: usage_stub.RecordEvents(request, metadata=support.bearer(admin_token), timeout=30))
    # Listing the same tenant is refused too, so no row of it can ever be read or written.
    error = refused(
        lambda: usage_stub.ListEvents(
            u.ListEventsRequest(tenant_id="bad tenant!"), metadata=support.bearer(admin_token), timeout=30
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("rpc", ["RecordEvents", "GetUsage", "ListEvents", "ListAggregates"])
def test_an_empty_tenant_id_with_a_tenant_token_is_an_invalid_argument_not_a_denial(dbs, usage_stub, tenant, rpc):
    token = tenant_token(dbs, tenant)
    _, request = usage_calls("")[rpc]
    error = refused(lambda: getattr(usage_stub, rpc)(request, metadata=support.bearer(token), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == {"tenant_id": "is required"}


@pytest.mark.parametrize("rpc", ["RunRollup", "GetRollupStatus", "PurgeEvents", "ListAuditRecords"])
def test_an_empty_tenant_id_on_an_admin_rpc_means_every_tenant_and_stays_platform_only(
    dbs, usage_admin_stub, tenant, rpc
):
    token = support.make_token(dbs, tenant=tenant, scopes=["usage:admin"])
    _, request = usage_calls("")[rpc]
    error = refused(lambda: getattr(usage_admin_stub, rpc)(request, metadata=support.bearer(token), timeout=30))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_policy_refuses_the_same_malformed_tenant_ids_with_the_same_rule(policy_stub, policy_admin_stub, admin_token):
    writes = [
        lambda: policy_stub.ResolveMode(
            pb.ResolveModeRequest(tenant_id="bad tenant!", user_id="u", feature_id="f"),
            metadata=support.bearer(admin_token),
        ),
        lambda: policy_stub.ResolveModes(
            pb.ResolveModesRequest(tenant_id="bad tenant!", user_id="u"), metadata=support.bearer(admin_token)
        ),
        lambda: policy_admin_stub.SetTenantPolicy(
            pb.SetTenantPolicyRequest(tenant_policy=pb.TenantPolicy(tenant_id="bad tenant!")),
            metadata=support.bearer(admin_token),
        ),
        lambda: policy_admin_stub.BindRole(
            pb.BindRoleRequest(tenant_id="bad tenant!", user_id="u", role_id="r"), metadata=support.bearer(admin_token)
        ),
    ]
    for write in writes:
        error = refused(write)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert tenant_ids.RULE in violations(error).values()


def test_tollgate_token_refuses_a_malformed_tenant_with_a_clear_message_and_stores_nothing(dbs, monkeypatch, capsys):
    monkeypatch.setenv("USAGE_DATABASE_URL", dbs.usage_url)
    monkeypatch.setenv("POLICY_DATABASE_URL", dbs.policy_url)
    before = _listed(capsys)
    code = credentials_cli.main(["create", "--tenant", "bad tenant!", "--scopes", "usage:read"])
    assert code != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "'bad tenant!'" in captured.err and tenant_ids.RULE in captured.err
    assert _listed(capsys) == before


def _listed(capsys) -> str:
    assert credentials_cli.main(["list"]) == 0
    return capsys.readouterr().out


def test_a_streamed_batch_naming_a_malformed_or_no_tenant_is_answered_invalid_and_the_stream_goes_on(
    dbs, usage_stub, tenant
):
    token = tenant_token(dbs, tenant)
    answers = list(
        usage_stub.StreamEvents(
            iter(
                [
                    u.StreamEventsRequest(batch_id="bad", tenant_id="bad tenant!", events=[event("e1")]),
                    u.StreamEventsRequest(batch_id="none", events=[event("e2")]),
                    u.StreamEventsRequest(batch_id="mine", tenant_id=tenant, events=[event("e3")]),
                ]
            ),
            metadata=support.bearer(token),
            timeout=30,
        )
    )
    assert [(a.batch_id, a.error.code) for a in answers] == [
        ("bad", code_pb2.INVALID_ARGUMENT),
        ("none", code_pb2.INVALID_ARGUMENT),
        ("mine", 0),
    ]
    assert [field_violations(a.error) for a in answers[:2]] == [["tenant_id"], ["tenant_id"]]
