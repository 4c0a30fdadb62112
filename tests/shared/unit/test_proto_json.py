"""proto_json reads every body exactly as json_format does (the same message bytes, or the same error), and reads
the shapes callers send on its own fast path."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.shared import proto_json
from tollgate.usage.v1 import usage_pb2 as u


def outcome(read, data: bytes, message_class: type[Message]) -> tuple:
    try:
        return ("message", read(data, message_class).SerializeToString(deterministic=True))
    except Exception as error:  # noqa: BLE001 - the error is the outcome compared
        return ("error", type(error).__name__, str(error))


def by_json_format(data: bytes, message_class: type[Message]) -> Message:
    return json_format.Parse(data, message_class(), ignore_unknown_fields=False)


def assert_same(data: bytes, message_class: type[Message]) -> tuple:
    ours = outcome(proto_json.parse, data, message_class)
    assert ours == outcome(by_json_format, data, message_class), data[:300]
    return ours


def event(**fields) -> dict:
    return {"eventId": "e1", "metric": "api.requests", "quantity": "3", "occurredAt": "2026-12-04T10:00:00Z", **fields}


def record(*events: dict, **fields) -> bytes:
    return json.dumps({"tenantId": "t1", "events": list(events), **fields}).encode()


COMMON = [
    (record(event()), u.RecordEventsRequest),
    (
        record(
            event(
                quantity=-7,
                occurredAt="2026-03-29T01:30:00.123456789+02:00",
                metadata={"plan": "pro", "n": 3, "ok": True, "none": None, "list": [1, 2.5, "x", {"deep": [[]]}]},
                dimensions={"region": "eu", "model": "gpt"},
                actorId="u1",
            ),
            {"event_id": "e2", "metric": "m", "quantity": 1, "occurred_at": "1999-12-31T23:59:59.5-05:30"},
            event(occurredAt="2026-12-04T10:00:00.1Z", metadata={}, dimensions={}),
        ),
        u.RecordEventsRequest,
    ),
    (
        json.dumps({"tenantId": "t", "userId": "u", "featureId": "f", "requestedMode": "MODE_SUGGEST"}).encode(),
        pb.ResolveModeRequest,
    ),
    (
        json.dumps({"tenant_id": "t", "user_id": "u", "requested_mode": 4, "min_policy_version": "12"}).encode(),
        pb.ResolveModeRequest,
    ),
    (json.dumps({"tenantId": "t", "userId": "u", "featureIds": ["a", "b"]}).encode(), pb.ResolveModesRequest),
    (b"{}", u.RecordEventsRequest),
]


@pytest.mark.parametrize("data, message_class", COMMON)
def test_the_shapes_callers_send_are_read_on_the_fast_path_as_json_format_reads_them(data, message_class):
    fast = proto_json._read(data, message_class)
    assert fast is not None
    # Equal messages (a map's entries may serialize in another order unless asked to be deterministic).
    expected = by_json_format(data, message_class)
    assert fast == expected and fast.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


DOUBTFUL = [
    record(event(unknown=1)),
    record(event(event_id="both spellings")),
    b'{"tenantId": "a", "tenantId": "b"}',
    record(event(metric=None)),
    record(event(quantity=1.0)),
    record(event(quantity=1.5)),
    record(event(quantity="1e3")),
    record(event(quantity=True)),
    record(event(quantity=" 5")),
    record(event(quantity="+5")),
    record(event(quantity="99999999999999999999")),
    record(event(quantity=-(2**63))),
    record(event(eventId=5)),
    record(event(dimensions={"k": 5})),
    record(event(dimensions={"k": None})),
    record(event(dimensions=["k"])),
    record(event(metadata=[1])),
    record(event(metadata={"x": 1e400})),
    b'{"tenantId": "t", "events": [{"metadata": {"x": NaN}}]}',
    b'{"tenantId": "t", "events": [{"metadata": {"x": -Infinity}}]}',
    record(event(metadata=deep(12))),
    record(event(metadata=deep(60))),
    json.dumps({"tenantId": "t", "events": {}}).encode(),
    json.dumps({"tenantId": "t", "events": "e"}).encode(),
    record(event(occurredAt="2026-12-04t10:00:00Z")),
    record(event(occurredAt="2026-12-04T10:00:00z")),
    record(event(occurredAt="2026-13-01T00:00:00Z")),
    record(event(occurredAt="2026-02-30T00:00:00Z")),
    record(event(occurredAt="2026-12-04T10:00:60Z")),
    record(event(occurredAt="2026-12-04T10:00:00.1234567890Z")),
    record(event(occurredAt="2026-1-04T10:00:00Z")),
    record(event(occurredAt="2026-12-04T10:00:00+5:00")),
    record(event(occurredAt="2026-12-04T10:00:00")),
    record(event(occurredAt="2026-12-04")),
    record(event(occurredAt="0001-01-01T00:00:00+01:00")),
    record(event(occurredAt="9999-12-31T23:59:59-01:00")),
    record(event(occurredAt=1733306400)),
    record(event(occurredAt={"seconds": 1})),
    b'{"tenantId": "\\ud800"}',
    b'{"tenantId": "\\ud83d\\ude00"}',
    '{"tenantId": "é"}'.encode("utf-16"),
    b'{"tenantId": "\xff"}',
    b"[]",
    b"",
    b"{",
    b"null",
    json.dumps({"tenantId": "t", "userId": "u", "requestedMode": "NOPE"}).encode(),
    json.dumps({"tenantId": "t", "userId": "u", "requestedMode": True}).encode(),
    json.dumps({"tenantId": "t", "userId": "u", "requestedMode": "3"}).encode(),
    json.dumps({"tenantId": "t", "userId": "u", "requestedMode": 2.0}).encode(),
    json.dumps({"tenantId": "t", "userId": "u", "requestedMode": 99}).encode(),
]


@pytest.mark.parametrize("data", DOUBTFUL)
def test_doubtful_bodies_get_json_format_s_message_or_error(data):
    message_class = pb.ResolveModeRequest if b"requestedMode" in data else u.RecordEventsRequest
    assert_same(data, message_class)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "5", "-0", "007", "1.5", "MODE_OFF", "2026-12-04T10:00:00Z", "2026-12-04T10:00:00.5+01:00"])
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
EVENT_KEYS = [f.json_name for f in u.UsageEvent.DESCRIPTOR.fields] + [f.name for f in u.UsageEvent.DESCRIPTOR.fields]
EVENTS = st.dictionaries(st.sampled_from([*EVENT_KEYS, "other"]), JSON_VALUES, max_size=6)
REQUESTS = st.fixed_dictionaries(
    {"tenantId": st.text(max_size=3) | JSON_VALUES, "events": st.lists(EVENTS, max_size=3) | JSON_VALUES}
)


@settings(max_examples=150, deadline=None)
@given(REQUESTS)
def test_any_json_is_read_as_json_format_reads_it(document):
    assert_same(json.dumps(document).encode(), u.RecordEventsRequest)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["tenantId", "userId", "featureId", "requestedMode", "minPolicyVersion", "x"]), JSON_VALUES
    )
)
def test_any_json_is_read_as_json_format_reads_it_with_enums(document):
    assert_same(json.dumps(document).encode(), pb.ResolveModeRequest)


METADATA = st.dictionaries(st.text(max_size=4), JSON_VALUES.filter(lambda v: not isinstance(v, int) or abs(v) < 2**53))
VALID_EVENTS = st.builds(
    lambda event_id, quantity, seconds, nanos, metadata, dimensions: u.UsageEvent(
        event_id=event_id,
        metric="m",
        quantity=quantity,
        occurred_at={"seconds": seconds, "nanos": nanos},
        metadata=metadata,
        dimensions=dimensions,
    ),
    st.text(max_size=8),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-62135596800, max_value=253402300799),
    st.integers(min_value=0, max_value=999_999_999),
    METADATA,
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(VALID_EVENTS, max_size=4), st.booleans())
def test_what_json_format_writes_is_read_back_on_the_fast_path(events, snake_case):
    request = u.RecordEventsRequest(tenant_id="t", events=events)
    data = json_format.MessageToJson(request, preserving_proto_field_name=snake_case, ensure_ascii=False).encode()
    fast = proto_json._read(data, u.RecordEventsRequest)
    assert fast is not None and fast == request == by_json_format(data, u.RecordEventsRequest)
