"""The rules docs/api.md states for Usage's input and answers ("Usage rules"), each held here through real
servers on SQLite and PostgreSQL: what same content means, which key wins, how long a string and how large
metadata may be, which reason wins, empty ranges, metrics without usage, and a purged event's id."""

import grpc
import pytest

from tests import support
from tests.usage.test_usage_input_tenants import refused, violations
from tests.usage_support import DAY_US, MINUTE_US, event, list_all, now_us, record, totals, ts, verdicts
from tollgate.services.usage.domain.buckets import HOUR_US, Period, start_of
from tollgate.usage.v1 import usage_pb2 as u


@pytest.fixture
def token(dbs, tenant):
    return support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read", "usage:admin"])


def outcome(result) -> tuple:
    return (
        u.Verdict.Name(result.verdict).removeprefix("VERDICT_"),
        u.DedupKey.Name(result.dedup_key).removeprefix("DEDUP_KEY_"),
        result.existing_event_id,
    )


# ---- what "the same content" means ----


@pytest.mark.parametrize(
    "first,again",
    [
        ({"metadata": {}}, {}),  # {} is no metadata
        ({"metadata": {"a": 1, "b": [1, "x"]}}, {"metadata": {"b": [1.0, "x"], "a": 1.0}}),  # key order; 1 is 1.0
        ({"idempotency_key": "k1"}, {"idempotency_key": "k2"}),  # identifiers are not content
    ],
)
def test_events_differing_only_in_what_is_not_content_are_duplicates(usage_stub, token, tenant, first, again):
    at = now_us() - 60 * MINUTE_US
    record(usage_stub, token, tenant, [event("e1", at_us=at, **first)])
    assert outcome(record(usage_stub, token, tenant, [event("e1", at_us=at, **again)])[0]) == (
        "DUPLICATE",
        "EVENT_ID",
        "e1",
    )
    [stored] = list_all(usage_stub, token, tenant)
    assert stored.event.HasField("metadata") == bool(first.get("metadata"))


@pytest.mark.parametrize(
    "field,value",
    [
        ("metric", "leads.routed"),
        ("quantity", 2),
        ("actor_id", "bob"),
        ("source_service", "billing"),
        ("correlation_id", "job-2"),
        ("metadata", {"a": 2}),
        ("at_us", 1),
    ],
)
def test_every_content_field_makes_a_resend_a_conflict(usage_stub, token, tenant, field, value):
    at = now_us() - 60 * MINUTE_US
    base = dict(
        metric="api.requests",
        quantity=1,
        actor_id="alice",
        source_service="crm",
        correlation_id="job-1",
        metadata={"a": 1},
        at_us=at,
    )
    record(usage_stub, token, tenant, [event("e1", **base)])
    changed = dict(base, **{field: at + value if field == "at_us" else value})
    assert outcome(record(usage_stub, token, tenant, [event("e1", **changed)])[0])[0] == "CONFLICT"


# ---- which key wins ----


def test_an_event_matching_stored_events_through_different_keys_is_judged_against_event_id_then_idempotency_key(
    usage_stub, token, tenant
):
    at = now_us() - 60 * MINUTE_US
    stored = [
        event("A", at_us=at, quantity=1),
        event("B", at_us=at, quantity=2, idempotency_key="key-B"),
        event("C", at_us=at + MINUTE_US, quantity=3, correlation_id="job-C"),
    ]
    assert verdicts(record(usage_stub, token, tenant, stored)) == ["ACCEPTED"] * 3
    # The content of B, the id of A: judged against A, whose content differs.
    by_id = event("A", at_us=at, quantity=2, idempotency_key="key-B")
    # The content of C, B's idempotency key and C's business key: judged against B.
    by_key = event("D", at_us=at + MINUTE_US, quantity=3, correlation_id="job-C", idempotency_key="key-B")
    assert [outcome(r) for r in record(usage_stub, token, tenant, [by_id, by_key])] == [
        ("CONFLICT", "EVENT_ID", "A"),
        ("CONFLICT", "IDEMPOTENCY_KEY", "B"),
    ]
    assert totals(usage_stub, token, tenant) == {"api.requests": (6, 3)}


# ---- bounds ----


def test_strings_are_bounded_in_characters_not_bytes(usage_stub, token, tenant):
    results = record(usage_stub, token, tenant, [event("e1", actor_id="é" * 128), event("e2", actor_id="é" * 129)])
    assert [(outcome(r)[0], r.reason) for r in results] == [
        ("ACCEPTED", u.REJECT_REASON_UNSPECIFIED),
        ("REJECTED", u.REJECT_REASON_FIELD_TOO_LONG),
    ]
    assert [s.event.actor_id for s in list_all(usage_stub, token, tenant)] == ["é" * 128]


def test_metadata_is_measured_in_utf8_bytes_of_its_compact_sorted_json(usage_stub, token, tenant):
    # {"b":"<text>"} is 8 bytes around the text; é is 2 bytes; a number is written as a float (1 -> 1.0).
    fits = {"b": "é" * 2044}  # 4,096 bytes, 2,052 characters
    over = {"b": "é" * 2044 + "x"}  # 4,097 bytes
    number = {"b": "x" * 4084, "n": 1}  # {"b":"...","n":1.0}: 4,084 + 16 = 4,100 bytes
    results = record(
        usage_stub,
        token,
        tenant,
        [event("fits", metadata=fits), event("over", metadata=over), event("number", metadata=number)],
    )
    assert [r.reason for r in results] == [
        u.REJECT_REASON_UNSPECIFIED,
        u.REJECT_REASON_METADATA_TOO_LARGE,
        u.REJECT_REASON_METADATA_TOO_LARGE,
    ]
    assert "4097 bytes" in results[1].message and "4100 bytes" in results[2].message


# ---- which reason wins ----

# In the order they are judged: an event with several faults is rejected for the first of them.
FAULTS = [
    (u.REJECT_REASON_MISSING_FIELD, {"source_service": ""}),
    (u.REJECT_REASON_NUL_CHARACTER, {"correlation_id": "c\x00"}),
    (u.REJECT_REASON_FIELD_TOO_LONG, {"actor_id": "a" * 129}),
    (u.REJECT_REASON_UNKNOWN_METRIC, {"metric": "no.such.metric"}),
    (u.REJECT_REASON_NON_POSITIVE_QUANTITY, {"quantity": 0}),
    (u.REJECT_REASON_IN_FUTURE, {"at_us": "future"}),
    (u.REJECT_REASON_EXTERNAL_BILLABLE, {"source_service": "webhook:stripe"}),
    (u.REJECT_REASON_METADATA_TOO_LARGE, {"metadata": {"blob": "z" * 4100}}),
]


@pytest.mark.parametrize("first", range(len(FAULTS)), ids=[u.RejectReason.Name(r) for r, _ in FAULTS])
def test_an_event_with_several_faults_is_rejected_for_the_first_in_the_documented_order(
    usage_stub, token, tenant, first
):
    fields = {}
    for _, fault in reversed(FAULTS[first:]):  # earlier faults win a shared field (source_service)
        fields.update(fault)
    if fields.get("at_us") == "future":
        fields["at_us"] = now_us() + 10 * MINUTE_US
    [result] = record(usage_stub, token, tenant, [event("x", **fields)])
    assert result.reason == FAULTS[first][0]


def test_a_quantity_too_large_is_judged_before_the_time_and_too_old_before_the_source(usage_stub, token, tenant):
    results = record(
        usage_stub,
        token,
        tenant,
        [
            event("big", quantity=10**12 + 1, at_us=now_us() + 10 * MINUTE_US),
            event("old", at_us=now_us() - 40 * DAY_US, source_service="webhook:stripe"),
        ],
    )
    assert [r.reason for r in results] == [u.REJECT_REASON_QUANTITY_TOO_LARGE, u.REJECT_REASON_TOO_OLD]


# ---- ranges and answers ----


def test_an_empty_range_start_equal_to_end_is_invalid_in_every_listing(usage_stub, token, tenant):
    at = ts(now_us())
    calls = {
        "GetUsage": u.GetUsageRequest(tenant_id=tenant, start_time=at, end_time=at),
        "ListEvents": u.ListEventsRequest(tenant_id=tenant, start_time=at, end_time=at),
        "ListAggregates": u.ListAggregatesRequest(
            tenant_id=tenant, metric="api.requests", period=u.PERIOD_DAY, start_time=at, end_time=at
        ),
    }
    for rpc, request in calls.items():
        error = refused(
            lambda rpc=rpc, request=request: getattr(usage_stub, rpc)(
                request, metadata=support.bearer(token), timeout=30
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(error) == {"end_time": "must be after start_time"}


def test_a_metric_named_in_get_usage_without_usage_in_the_range_is_omitted_not_zero(usage_stub, token, tenant):
    record(usage_stub, token, tenant, [event("e1", quantity=5, actor_id="alice")])
    named = ["api.requests", "leads.routed", "no.such.metric"]
    assert totals(usage_stub, token, tenant, metrics=named) == {"api.requests": (5, 1)}
    assert totals(usage_stub, token, tenant, metrics=named, group_by_actor=True) == {("api.requests", "alice"): (5, 1)}
    assert totals(usage_stub, token, tenant, metrics=["leads.routed"]) == {}


def test_a_purged_events_id_may_be_reused_and_a_resend_of_it_is_too_old_not_counted_again(
    usage_stub, usage_admin_stub, token, tenant
):
    # The horizon starts this week or this month, whichever starts first; an event in both of them (from the later
    # start on) is open to ingest whatever the date. An hour ago may not be: on a Monday's first hour, with the month
    # begun earlier in the week before, it falls in a week holding purged days.
    week, month = start_of(Period.WEEK, now_us()), start_of(Period.MONTH, now_us())
    horizon = min(week, month)
    old = event("e1", quantity=3, at_us=horizon - DAY_US)
    assert verdicts(record(usage_stub, token, tenant, [old])) == ["ACCEPTED"]
    usage_admin_stub.RunRollup(u.RunRollupRequest(tenant_id=tenant), metadata=support.bearer(token), timeout=60)
    purged = usage_admin_stub.PurgeEvents(
        u.PurgeEventsRequest(tenant_id=tenant, before_time=ts(horizon)), metadata=support.bearer(token), timeout=60
    )
    assert purged.events_deleted == 1
    resend = record(usage_stub, token, tenant, [old])
    assert (outcome(resend[0])[0], resend[0].reason) == ("REJECTED", u.REJECT_REASON_TOO_OLD)
    reused = record(usage_stub, token, tenant, [event("e1", quantity=4, at_us=max(week, month, now_us() - HOUR_US))])
    assert verdicts(reused) == ["ACCEPTED"]
    whole_hours = start_of(Period.HOUR, now_us()) + HOUR_US
    assert totals(usage_stub, token, tenant, start_us=horizon - 2 * DAY_US, end_us=whole_hours) == {
        "api.requests": (7, 2)
    }


def _unset(metadata) -> str:
    metadata.fields["unset"].Clear()  # present in the map, no kind set
    return "events[1].metadata.unset"


def _unset_in_a_list(metadata) -> str:
    items = metadata.fields["deep"].struct_value.fields["list"].list_value.values
    items.add().string_value = "fine"
    items.add()
    return "events[1].metadata.deep.list[1]"


def _nan(metadata) -> str:
    metadata.fields["ratio"].number_value = float("nan")
    return "events[1].metadata.ratio"


@pytest.mark.parametrize(
    "spoil, described",
    [(_unset, "no kind set"), (_unset_in_a_list, "no kind set"), (_nan, "JSON numbers are finite")],
    ids=["unset", "unset-in-a-list", "nan"],
)
def test_metadata_json_cannot_hold_is_invalid_argument_naming_its_path_and_stores_nothing(
    usage_stub, token, tenant, spoil, described
):
    bad = event("bad-metadata")
    path = spoil(bad.metadata)
    request = u.RecordEventsRequest(tenant_id=tenant, events=[event("good-metadata"), bad])
    error = refused(lambda: usage_stub.RecordEvents(request, metadata=support.bearer(token), timeout=30))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert described in violations(error)[path]
    assert list_all(usage_stub, token, tenant) == []
