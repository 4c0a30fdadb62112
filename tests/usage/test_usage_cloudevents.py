"""POST /v1/events: CloudEvents (structured, batch, binary mode) recorded through RecordEvents' own path, with its
verdicts, its dedup (source + id as one event_id), its tenant rules and its refusals; hostile bodies get a precise
4xx and store nothing. Real servers on SQLite and PostgreSQL over HTTP on loopback."""

from __future__ import annotations

import datetime
import http.client
import json
import uuid

import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from tests import http_support, support
from tests.usage_support import MINUTE_US, event, list_all, now_us, record, tenant_token, totals, ts, verdicts
from tollgate.services.usage.cloudevents import event_id
from tollgate.shared import metrics
from tollgate.shared.server import MAX_MESSAGE_BYTES
from tollgate.usage.v1 import usage_pb2 as u

PATH = "/v1/events"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def _time(at_us: int) -> str:
    return datetime.datetime.fromtimestamp(at_us / 1e6, datetime.UTC).isoformat().replace("+00:00", "Z")


AN_HOUR_AGO = now_us() - 60 * MINUTE_US


def cloud_event(id_: str, *, source: str = "/checkout", quantity=1, **fields) -> dict:
    """A CloudEvent of `api.requests` an hour ago; `data` and any attribute may be overridden or removed (None)."""
    body = {
        "specversion": "1.0",
        "id": id_,
        "source": source,
        "type": "api.requests",
        "time": _time(AN_HOUR_AGO),
        "datacontenttype": "application/json",
        "data": {"quantity": quantity},
    }
    body |= fields
    return {key: value for key, value in body.items() if value is not None}


def send(port: int, body, token: str | None, *, content_type: str = BATCH, headers=None) -> http_support.Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http_support.post(port, PATH, data, token=token, content_type=content_type, headers=headers)


def results(reply: http_support.Reply) -> list[u.EventResult]:
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    return list(reply.message(u.RecordEventsResponse).results)


def refused(reply: http_support.Reply, status: int, code: str) -> dict:
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["code"] == code and body["message"], body
    return body


def violations(reply: http_support.Reply) -> list[str]:
    (bad,) = [value for kind, value in reply.details() if kind == "google.rpc.BadRequest"]
    return [v.field for v in error_details_pb2.BadRequest.FromString(bad).field_violations]


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


@pytest.fixture
def meter(usage_admin_stub, admin_token) -> str:
    """A fresh metric declaring model and token_type (the catalog is global: each test makes its own)."""
    name = f"ai.tokens.{uuid.uuid4().hex[:10]}"
    usage_admin_stub.UpsertMetric(
        u.UpsertMetricRequest(
            metric=u.Metric(
                name=name, classification=u.CLASSIFICATION_BILLABLE, unit="token", dimensions=["model", "token_type"]
            )
        ),
        metadata=support.bearer(admin_token),
        timeout=30,
    )
    return name


def test_one_structured_event_is_recorded_with_the_mapping(usage, usage_stub, token, tenant):
    body = cloud_event("order-1", quantity="25", subject="alice", data=None) | {
        "data": {"quantity": "25", "metadata": {"plan": "pro"}, "correlationId": "order-1/line-1"}
    }
    (result,) = results(send(usage.http_port, body, token, content_type=STRUCTURED))
    assert verdicts([result]) == ["ACCEPTED"] and result.event_id == "ce:9:/checkout:order-1"
    (stored,) = list_all(usage_stub, token, tenant)
    assert stored.event.event_id == "ce:9:/checkout:order-1"
    assert (stored.event.metric, stored.event.quantity) == ("api.requests", 25)
    assert (stored.event.actor_id, stored.event.source_service) == ("alice", "/checkout")
    assert stored.event.correlation_id == "order-1/line-1"
    assert json_format.MessageToDict(stored.event.metadata) == {"plan": "pro"}
    assert stored.event.occurred_at == ts(AN_HOUR_AGO)


def test_a_batch_gets_recordevents_verdicts_per_event_in_order(usage, usage_stub, token, tenant):
    batch = [
        cloud_event("a", quantity=2),
        cloud_event("a", quantity=2),  # redelivered in the same batch
        cloud_event("a", source="/billing", quantity=3),  # the same id from another source: another event
        cloud_event("a", quantity=5),  # the same source and id with other content
        cloud_event("b", type="no.such.metric"),
        cloud_event("c", time=None),  # a CloudEvent may lack time; a usage event may not
        cloud_event("d", quantity=0),
    ]
    got = results(send(usage.http_port, batch, token))
    assert verdicts(got) == ["ACCEPTED", "DUPLICATE", "ACCEPTED", "CONFLICT", "REJECTED", "REJECTED", "REJECTED"]
    assert [r.index for r in got] == list(range(7))
    assert got[1].existing_event_id == got[0].event_id == "ce:9:/checkout:a"
    assert got[2].event_id == "ce:8:/billing:a"
    assert [u.RejectReason.Name(r.reason) for r in got[4:]] == [
        "REJECT_REASON_UNKNOWN_METRIC",
        "REJECT_REASON_MISSING_FIELD",
        "REJECT_REASON_NON_POSITIVE_QUANTITY",
    ]
    assert "occurred_at" in got[5].message
    assert totals(usage_stub, token, tenant) == {"api.requests": (5, 2)}


def test_a_redelivered_cloudevent_is_duplicate_and_counts_once(usage, usage_stub, token, tenant):
    body = cloud_event("order-7", quantity=4, subject="bob")
    first = results(send(usage.http_port, body, token, content_type=STRUCTURED))
    again = results(send(usage.http_port, [body], token))
    assert verdicts(first) == ["ACCEPTED"] and verdicts(again) == ["DUPLICATE"]
    assert u.DedupKey.Name(again[0].dedup_key) == "DEDUP_KEY_EVENT_ID"
    assert totals(usage_stub, token, tenant) == {"api.requests": (4, 1)}


def test_the_answer_and_what_is_stored_equal_recordevents_over_grpc(dbs, usage, usage_stub, token, tenant):
    """The same events through RecordEvents over gRPC for another tenant: the same verdicts and stored events."""
    other = support.new_tenant()
    other_token = tenant_token(dbs, other)
    batch = [cloud_event("x", quantity=3, subject="al"), cloud_event("x", quantity=4), cloud_event("y", type="nope")]
    over_http = results(send(usage.http_port, batch, token))
    events = [
        event("ce:9:/checkout:x", quantity=3, actor_id="al", source_service="/checkout", at_us=AN_HOUR_AGO),
        event("ce:9:/checkout:x", quantity=4, source_service="/checkout", at_us=AN_HOUR_AGO),
        event("ce:9:/checkout:y", metric="nope", source_service="/checkout", at_us=AN_HOUR_AGO),
    ]
    over_grpc = record(usage_stub, other_token, other, events)
    assert over_http == over_grpc
    mine = [s.event for s in list_all(usage_stub, token, tenant)]
    theirs = [s.event for s in list_all(usage_stub, other_token, other)]
    assert mine == theirs and len(mine) == 1


def test_a_long_source_and_id_map_to_a_bounded_event_id_that_still_deduplicates(usage, usage_stub, token, tenant):
    source, id_ = "https://shop.example.com/" + "s" * 110, "i" * 60
    body = cloud_event(id_, source=source)
    first, again = (results(send(usage.http_port, [body], token)) for _ in range(2))
    assert verdicts(first + again) == ["REJECTED", "REJECTED"]  # source_service is bounded by 128 characters
    short = cloud_event("i" * 121, source="/s")
    first, again = (results(send(usage.http_port, [short], token)) for _ in range(2))
    assert verdicts(first + again) == ["ACCEPTED", "DUPLICATE"]
    assert first[0].event_id == event_id("/s", "i" * 121) and first[0].event_id.startswith("ce:sha256:")
    assert len(first[0].event_id) <= 128


def test_event_id_separates_source_and_id_unambiguously():
    assert event_id("a:b", "c") != event_id("a", "b:c")
    assert event_id("/checkout", "1") == "ce:9:/checkout:1"
    assert event_id("x" * 200, "1") == event_id("x" * 200, "1") != event_id("x" * 200, "2")


def test_dimensions_are_stored_and_judged_like_recordevents(usage, usage_stub, token, tenant, meter):
    batch = [
        cloud_event("d1", type=meter, data={"quantity": 7, "dimensions": {"model": "gpt-4o", "token_type": "prompt"}}),
        cloud_event("d2", type=meter, data={"quantity": 1, "dimensions": {"region": "eu"}}),
    ]
    got = results(send(usage.http_port, batch, token))
    assert verdicts(got) == ["ACCEPTED", "REJECTED"]
    assert u.RejectReason.Name(got[1].reason) == "REJECT_REASON_UNDECLARED_DIMENSION"
    (stored,) = list_all(usage_stub, token, tenant)
    assert dict(stored.event.dimensions) == {"model": "gpt-4o", "token_type": "prompt"}


def test_actor_id_in_data_wins_over_subject(usage, usage_stub, token, tenant):
    body = cloud_event("s1", subject="from-subject", data={"quantity": 1, "actor_id": "from-data"})
    assert verdicts(results(send(usage.http_port, [body], token))) == ["ACCEPTED"]
    assert [s.event.actor_id for s in list_all(usage_stub, token, tenant)] == ["from-data"]


def test_binary_mode_maps_the_same_event_as_structured_mode(usage, usage_stub, token, tenant):
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "order-9",
        "ce-source": "/checkout",
        "ce-type": "api.requests",
        "ce-time": _time(AN_HOUR_AGO),
        "ce-subject": "carol",
    }
    reply = send(usage.http_port, {"quantity": 6}, token, content_type="application/json", headers=headers)
    assert verdicts(results(reply)) == ["ACCEPTED"]
    again = results(send(usage.http_port, [cloud_event("order-9", quantity=6, subject="carol")], token))
    assert verdicts(again) == ["DUPLICATE"]
    (stored,) = list_all(usage_stub, token, tenant)
    assert (stored.event.event_id, stored.event.actor_id, stored.event.quantity) == (
        "ce:9:/checkout:order-9",
        "carol",
        6,
    )


def test_binary_mode_without_its_headers_is_400_naming_them(usage, usage_stub, admin_token, token, tenant):
    reply = send(usage.http_port, {"quantity": 6}, token, content_type="application/json", headers={"ce-id": "1"})
    refused(reply, 400, "invalid_argument")
    assert violations(reply) == ["ce-specversion", "ce-source", "ce-type"]
    assert list_all(usage_stub, admin_token, tenant) == []


def test_a_platform_token_names_the_tenant_in_the_tenantid_extension(usage, usage_stub, admin_token, tenant):
    reply = send(usage.http_port, [cloud_event("p1", tenantid=tenant)], admin_token)
    assert verdicts(results(reply)) == ["ACCEPTED"]
    assert len(list_all(usage_stub, admin_token, tenant)) == 1


def test_a_platform_token_without_tenantid_is_400_naming_it(usage, admin_token):
    reply = send(usage.http_port, [cloud_event("p1")], admin_token)
    refused(reply, 400, "invalid_argument")
    assert violations(reply) == ["[0].tenantid"]


def test_a_tenant_token_may_name_its_own_tenant_only(usage, usage_stub, admin_token, token, tenant):
    assert verdicts(results(send(usage.http_port, [cloud_event("own", tenantid=tenant)], token))) == ["ACCEPTED"]
    other = support.new_tenant()
    reply = send(usage.http_port, [cloud_event("theirs", tenantid=other)], token)
    refused(reply, 403, "permission_denied")
    assert list_all(usage_stub, admin_token, other) == []
    assert [s.event.event_id for s in list_all(usage_stub, admin_token, tenant)] == ["ce:9:/checkout:own"]


def test_a_batch_naming_two_tenants_is_400_and_stores_nothing(usage, usage_stub, admin_token, tenant):
    other = support.new_tenant()
    batch = [cloud_event("m1", tenantid=tenant), cloud_event("m2", tenantid=other)]
    reply = send(usage.http_port, batch, admin_token)
    refused(reply, 400, "invalid_argument")
    assert violations(reply) == ["[1].tenantid"]
    assert list_all(usage_stub, admin_token, tenant) == [] and list_all(usage_stub, admin_token, other) == []


def test_a_malformed_tenantid_is_400_naming_it(usage, admin_token):
    reply = send(usage.http_port, [cloud_event("m1", tenantid="bad tenant!")], admin_token)
    refused(reply, 400, "invalid_argument")
    assert violations(reply) == ["[0].tenantid"]


def test_the_call_is_a_recordevents_call_in_metrics_and_echoes_the_request_id(usage, token):
    handled = metrics.RPC_HANDLED.labels("unary", "tollgate.usage.v1.UsageService", "RecordEvents", "OK")
    before = handled._value.get()
    reply = send(usage.http_port, [cloud_event("r1")], token, headers={"x-request-id": "ce-req-1"})
    assert verdicts(results(reply)) == ["ACCEPTED"] and reply.headers["x-request-id"] == "ce-req-1"
    assert handled._value.get() == before + 1


# Hostile input: each a precise 4xx, nothing stored.


def _nothing_stored(usage_stub, admin_token, tenant) -> None:
    assert list_all(usage_stub, admin_token, tenant) == []


def test_a_missing_token_is_401_whatever_the_body(usage, usage_stub, admin_token, tenant):
    for body in ([cloud_event("t1", tenantid=tenant)], b"{not json"):
        reply = send(usage.http_port, body, None)
        refused(reply, 401, "unauthenticated")
        assert [kind for kind, _ in reply.details()] == ["google.rpc.ErrorInfo"]
    _nothing_stored(usage_stub, admin_token, tenant)


def test_a_token_without_usage_write_is_403(dbs, usage, usage_stub, admin_token, tenant):
    reader = support.make_token(dbs, tenant=tenant, scopes=["usage:read"])
    refused(send(usage.http_port, [cloud_event("t1")], reader), 403, "permission_denied")
    _nothing_stored(usage_stub, admin_token, tenant)


@pytest.mark.parametrize("body", [b"[{", b"", b"[NaN]", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000])
def test_a_body_that_is_not_json_is_400(usage, usage_stub, admin_token, token, tenant, body):
    reply = send(usage.http_port, body, token)
    assert "not JSON" in refused(reply, 400, "invalid_argument")["message"]
    _nothing_stored(usage_stub, admin_token, tenant)


@pytest.mark.parametrize("attribute", ["specversion", "id", "source", "type"])
def test_a_missing_required_attribute_is_400_naming_it(usage, usage_stub, admin_token, token, tenant, attribute):
    batch = [cloud_event("ok"), cloud_event("bad", **{attribute: None})]
    reply = send(usage.http_port, batch, token)
    refused(reply, 400, "invalid_argument")
    assert violations(reply) == [f"[1].{attribute}"]
    single = send(usage.http_port, cloud_event("bad", **{attribute: None}), token, content_type=STRUCTURED)
    assert violations(single) == [attribute]
    _nothing_stored(usage_stub, admin_token, tenant)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"id": ""}, "id"),
        ({"id": 17}, "id"),
        ({"source": ["/a"]}, "source"),
        ({"type": ""}, "type"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2026-12-05T10:00:00"}, "time"),
        ({"time": 1764928800}, "time"),
        ({"subject": ""}, "subject"),
        ({"Tenant-Id": "x"}, "Tenant-Id"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"data": None}, "data"),
        ({"data": "25"}, "data"),
        ({"data": [25]}, "data"),
        ({"data_base64": "MjU="}, "data_base64"),
        ({"data": {}}, "data.quantity"),
        ({"data": {"quantity": 1.5}}, "data.quantity"),
        ({"data": {"quantity": "abc"}}, "data.quantity"),
        ({"data": {"quantity": True}}, "data.quantity"),
        ({"data": {"quantity": {"n": 1}}}, "data.quantity"),
        ({"data": {"quantity": 2**63}}, "data.quantity"),
        ({"data": {"quantity": 1, "quantitty": 1}}, "data.quantitty"),
        ({"data": {"quantity": 1, "actor_id": 5}}, "data.actor_id"),
        ({"data": {"quantity": 1, "actor_id": "a", "actorId": "b"}}, "data.actorId"),
        ({"data": {"quantity": 1, "dimensions": ["model"]}}, "data.dimensions"),
        ({"data": {"quantity": 1, "dimensions": {"model": 4}}}, "data.dimensions.model"),
        ({"data": {"quantity": 1, "metadata": "plan=pro"}}, "data.metadata"),
        ({"id": "\ud800"}, "id"),
        ({"data": {"quantity": 1, "actor_id": "a\ud800"}}, "data.actor_id"),
    ],
)
def test_a_malformed_cloudevent_is_400_naming_the_field(usage, usage_stub, admin_token, token, tenant, change, field):
    body = cloud_event("bad") | change
    body = {key: value for key, value in body.items() if value is not None}
    reply = send(usage.http_port, [cloud_event("ok"), body], token)
    refused(reply, 400, "invalid_argument")
    assert violations(reply) == [f"[1].{field}"]
    _nothing_stored(usage_stub, admin_token, tenant)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(BATCH, {"id": "1"}), (BATCH, []), (BATCH, [cloud_event(f"e{n}") for n in range(1001)]), (STRUCTURED, [])],
)
def test_a_body_of_the_wrong_shape_is_400(usage, usage_stub, admin_token, token, tenant, content_type, body):
    reply = send(usage.http_port, body, token, content_type=content_type)
    refused(reply, 400, "invalid_argument")
    assert violations(reply) == ["body"]
    _nothing_stored(usage_stub, admin_token, tenant)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/cloudevents+xml", "", "application/proto", "application/x-www-form"]
)
def test_another_content_type_is_415_naming_the_ones_taken(usage, usage_stub, admin_token, token, tenant, content_type):
    reply = send(usage.http_port, [cloud_event("c1")], token, content_type=content_type)
    body = refused(reply, 415, "unimplemented")
    assert BATCH in body["message"] and BATCH in reply.headers["accept-post"]
    _nothing_stored(usage_stub, admin_token, tenant)


def test_a_compressed_body_is_415(usage, token):
    reply = send(usage.http_port, [cloud_event("c1")], token, headers={"content-encoding": "gzip"})
    refused(reply, 415, "unimplemented")


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_events_are_sent_with_post_only(usage, token, method):
    reply = http_support.post(usage.http_port, PATH, b"", token=token, content_type=BATCH, method=method)
    assert reply.headers["allow"] == "POST"
    refused(reply, 405, "unimplemented")


def test_a_body_past_the_message_limit_is_429_and_stores_nothing(usage, usage_stub, admin_token, token, tenant):
    padding = "x" * (MAX_MESSAGE_BYTES + 1)
    reply = send(usage.http_port, [cloud_event("big", data={"quantity": 1, "metadata": {"p": padding}})], token)
    assert "larger than" in refused(reply, 429, "resource_exhausted")["message"]
    _nothing_stored(usage_stub, admin_token, tenant)


def test_a_chunked_body_is_refused_once_it_passes_the_limit(usage, usage_stub, admin_token, token, tenant):
    conn = http.client.HTTPConnection("127.0.0.1", usage.http_port, timeout=60)
    chunk = b"a" * (1024 * 1024)
    parts = [b'[{"id": "big", "x": "'] + [chunk] * 17 + [b'"}]']
    try:
        conn.request(
            "POST",
            PATH,
            body=iter(parts),
            headers={"content-type": BATCH, "authorization": f"Bearer {token}"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        reply = http_support.Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()
    refused(reply, 429, "resource_exhausted")
    _nothing_stored(usage_stub, admin_token, tenant)


def test_policy_takes_no_events(policy, admin_token):
    reply = send(policy.http_port, [cloud_event("p1")], admin_token)
    refused(reply, 404, "not_found")


@pytest.mark.parametrize(
    ("change", "body", "field"),
    [
        ({"ce-time": "yesterday"}, b'{"quantity": 1}', "ce-time"),
        ({"ce-specversion": "0.3"}, b'{"quantity": 1}', "ce-specversion"),
        ({}, b'{"quantity": 1', "data"),
        ({}, b'{"quantity": "many"}', "data.quantity"),
    ],
)
def test_a_malformed_binary_mode_event_is_400_naming_the_header_or_data(
    usage, usage_stub, admin_token, token, tenant, change, body, field
):
    headers = {"ce-specversion": "1.0", "ce-id": "b1", "ce-source": "/s", "ce-type": "api.requests"} | change
    reply = send(usage.http_port, body, token, content_type="application/json", headers=headers)
    refused(reply, 400, "invalid_argument")
    assert violations(reply) == [field]
    _nothing_stored(usage_stub, admin_token, tenant)
