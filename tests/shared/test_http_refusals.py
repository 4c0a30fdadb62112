"""Hostile input on the HTTP port: bad JSON, wrong content types, bodies past the 16 MiB limit, unknown routes,
missing or bad tokens, the wrong scope. Each gets a 4xx with a message that says what was wrong, never a 5xx,
and changes nothing. Real servers on SQLite and PostgreSQL, real sockets on loopback."""

from __future__ import annotations

import http.client
import json

import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from tests import http_support, support
from tests.usage_support import event, list_all
from tollgate.shared import metrics
from tollgate.shared.server import MAX_MESSAGE_BYTES
from tollgate.usage.v1 import usage_pb2 as u

RECORD = "/tollgate.usage.v1.UsageService/RecordEvents"
GET_USAGE = "/tollgate.usage.v1.UsageService/GetUsage"


def _batch(tenant: str, *ids: str) -> u.RecordEventsRequest:
    return u.RecordEventsRequest(tenant_id=tenant, events=[event(i) for i in ids or ("e1",)])


def _refused(reply: http_support.Reply, status: int, code: str) -> dict:
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["code"] == code and body["message"], body
    return body


def _nothing_stored(usage_stub, admin_token: str, tenant: str) -> None:
    assert list_all(usage_stub, admin_token, tenant) == []


def test_malformed_json_is_invalid_argument_and_stores_nothing(usage, usage_stub, admin_token, tenant):
    body = json_format.MessageToJson(_batch(tenant))[:-5]
    reply = http_support.post(usage.http_port, RECORD, body, token=admin_token)
    assert "json" in _refused(reply, 400, "invalid_argument")["message"].lower()
    _nothing_stored(usage_stub, admin_token, tenant)


def test_an_unknown_json_field_is_refused_by_name_not_dropped(usage, usage_stub, admin_token, tenant):
    body = json.loads(json_format.MessageToJson(_batch(tenant)))
    body["events"][0]["quantitty"] = 5
    reply = http_support.post(usage.http_port, RECORD, body, token=admin_token)
    assert "quantitty" in _refused(reply, 400, "invalid_argument")["message"]
    _nothing_stored(usage_stub, admin_token, tenant)


def test_a_binary_body_that_is_no_message_names_the_request_like_grpc(usage, admin_token):
    reply = http_support.post(
        usage.http_port, RECORD, b"\xff\xff\xff", token=admin_token, content_type="application/proto"
    )
    assert "not a valid message" in _refused(reply, 400, "invalid_argument")["message"]
    assert _violations(reply) == ["request"]


def _violations(reply: http_support.Reply) -> list[str]:
    """The fields a BadRequest detail of a Connect error names."""
    (bad,) = [value for kind, value in reply.details() if kind == "google.rpc.BadRequest"]
    return [v.field for v in error_details_pb2.BadRequest.FromString(bad).field_violations]


def test_a_malformed_tenant_names_the_field_in_a_bad_request_detail(usage, usage_stub, admin_token):
    reply = http_support.post(usage.http_port, RECORD, _batch("bad tenant!"), token=admin_token)
    _refused(reply, 400, "invalid_argument")
    assert _violations(reply) == ["tenant_id"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "", "application/grpc"])
def test_a_content_type_no_rpc_speaks_is_415_naming_the_ones_it_does(usage, admin_token, tenant, content_type):
    reply = http_support.post(usage.http_port, RECORD, _batch(tenant), token=admin_token, content_type=content_type)
    body = _refused(reply, 415, "unimplemented")
    assert "application/json" in body["message"] and "application/json" in reply.headers["accept-post"]


@pytest.mark.parametrize(
    "path", ["/", "/v2/events", "/tollgate.usage.v1.UsageService/Nope", "/tollgate.usage.v1.Nope/RecordEvents"]
)
def test_an_unknown_route_is_404_saying_what_the_paths_look_like(usage, admin_token, path):
    reply = http_support.post(usage.http_port, path, {}, token=admin_token)
    assert "/tollgate.usage.v1.UsageService/RecordEvents" in _refused(reply, 404, "not_found")["message"]


def test_a_policy_rpc_is_not_served_on_the_usage_port(usage, admin_token):
    reply = http_support.post(usage.http_port, "/tollgate.policy.v1.PolicyService/ResolveMode", {}, token=admin_token)
    _refused(reply, 404, "not_found")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_an_rpc_is_called_with_post_only(usage, admin_token, method):
    reply = http_support.post(usage.http_port, GET_USAGE, {}, token=admin_token, method=method)
    assert reply.headers["allow"] == "POST"
    assert "POST" in _refused(reply, 405, "unimplemented")["message"]


def test_a_body_past_the_message_limit_is_refused_unread_and_stores_nothing(usage, usage_stub, admin_token, tenant):
    body = b'{"tenantId": "%s", "events": [], "x": "' % tenant.encode() + b"a" * (MAX_MESSAGE_BYTES + 1) + b'"}'
    reply = http_support.post(usage.http_port, RECORD, body, token=admin_token)
    assert "larger than" in _refused(reply, 429, "resource_exhausted")["message"]
    _nothing_stored(usage_stub, admin_token, tenant)


def test_a_chunked_body_past_the_limit_is_refused_once_it_passes_it(usage, admin_token, tenant):
    conn = http.client.HTTPConnection("127.0.0.1", usage.http_port, timeout=60)
    chunk = b"a" * (1024 * 1024)
    parts = [b'{"tenantId": "%s", "x": "' % tenant.encode()] + [chunk] * 17 + [b'"}']
    try:
        conn.request(
            "POST",
            RECORD,
            body=iter(parts),
            headers={"content-type": "application/json", "authorization": f"Bearer {admin_token}"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        reply = http_support.Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()
    _refused(reply, 429, "resource_exhausted")


def test_after_a_chunked_body_refused_past_the_limit_the_connection_serves_the_next_call(
    usage, usage_stub, admin_token, tenant
):
    """A client that kept its connection (Connect-Web, a keep-alive pool) reads its 429 and sends its next call on
    the same connection, which serves it: nothing of the refused body is taken for the next request."""
    conn = http.client.HTTPConnection("127.0.0.1", usage.http_port, timeout=60)
    chunk = b"a" * (1024 * 1024)
    parts = [b'{"tenantId": "%s", "x": "' % tenant.encode()] + [chunk] * 17 + [b'"}']
    headers = {"content-type": "application/json", "authorization": f"Bearer {admin_token}"}
    try:
        conn.request("POST", RECORD, body=iter(parts), headers=headers, encode_chunked=True)
        refused = conn.getresponse()
        _refused(
            http_support.Reply(refused.status, dict(refused.getheaders()), refused.read()), 429, "resource_exhausted"
        )
        kept = conn.sock  # http.client would open a new socket for the next request, were this one closed
        body = json_format.MessageToJson(_batch(tenant, "after"))
        conn.request("POST", RECORD, body=body.encode(), headers=headers)
        answer = conn.getresponse()
        assert (answer.status, json.loads(answer.read())["results"][0]["verdict"]) == (200, "VERDICT_ACCEPTED")
        assert kept is not None and conn.sock is kept
    finally:
        conn.close()
    assert [stored.event.event_id for stored in list_all(usage_stub, admin_token, tenant)] == ["after"]


def test_a_body_past_the_transport_bound_is_413_from_the_server_itself(usage, admin_token):
    conn = http.client.HTTPConnection("127.0.0.1", usage.http_port, timeout=60)
    try:
        conn.putrequest("POST", RECORD)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(3 * MAX_MESSAGE_BYTES))
        conn.endheaders()
        # The answer comes before the body: nothing past the headers is sent or read.
        response = conn.getresponse()
        assert response.status == 413
    finally:
        conn.close()


def test_a_missing_token_is_401_unauthenticated_with_its_error_info(usage, usage_stub, admin_token, tenant):
    reply = http_support.post(usage.http_port, RECORD, _batch(tenant))
    _refused(reply, 401, "unauthenticated")
    assert [kind for kind, _ in reply.details()] == ["google.rpc.ErrorInfo"]
    _nothing_stored(usage_stub, admin_token, tenant)


@pytest.mark.parametrize("value", ["Bearer tg_nope_nope", "Basic dXNlcjpwYXNz", "Bearer "])
def test_a_bad_token_is_401(usage, usage_stub, admin_token, tenant, value):
    reply = http_support.post(usage.http_port, RECORD, _batch(tenant), headers={"authorization": value})
    _refused(reply, 401, "unauthenticated")
    _nothing_stored(usage_stub, admin_token, tenant)


def test_the_wrong_scope_or_tenant_is_403_and_stores_nothing(dbs, usage, usage_stub, admin_token, tenant):
    reader = support.make_token(dbs, tenant=tenant, scopes=["usage:read"])
    _refused(http_support.post(usage.http_port, RECORD, _batch(tenant), token=reader), 403, "permission_denied")
    other = support.make_token(dbs, tenant=support.new_tenant(), scopes=["usage:write"])
    _refused(http_support.post(usage.http_port, RECORD, _batch(tenant), token=other), 403, "permission_denied")
    _nothing_stored(usage_stub, admin_token, tenant)


def test_a_usage_only_token_is_unknown_to_policy_over_http_too(dbs, policy, tenant):
    token = support.make_token(dbs, tenant=tenant, scopes=["usage:read"], service="usage")
    reply = http_support.post(
        policy.http_port,
        "/tollgate.policy.v1.PolicyService/ResolveMode",
        {"tenantId": tenant, "userId": "u", "featureId": "f"},
        token=token,
    )
    _refused(reply, 401, "unauthenticated")


def test_the_request_id_is_echoed_or_made_and_a_connection_serves_many_calls(usage, admin_token, tenant):
    conn = http.client.HTTPConnection("127.0.0.1", usage.http_port, timeout=60)
    try:
        given = http_support.post(
            usage.http_port,
            RECORD,
            _batch(tenant),
            token=admin_token,
            headers={"x-request-id": "req-42"},
            connection=conn,
        )
        made = http_support.post(usage.http_port, RECORD, _batch(tenant), connection=conn)
    finally:
        conn.close()
    assert given.status == 200 and given.headers["x-request-id"] == "req-42"
    assert made.status == 401 and len(made.headers["x-request-id"]) == 32


def test_http_calls_are_counted_in_the_grpc_server_series(usage, tenant):
    handled = metrics.RPC_HANDLED.labels("unary", "tollgate.usage.v1.UsageService", "RecordEvents", "UNAUTHENTICATED")
    before = handled._value.get()
    http_support.post(usage.http_port, RECORD, _batch(tenant))
    assert handled._value.get() == before + 1
