"""QueryUsage and ListDimensionValues over gRPC: every aggregation, windows in a zone with DST, groups, filters,
paging, the purge horizon, precise refusals; answers checked against the brute-force model of
tests/usage_meters_model.py, on SQLite and PostgreSQL."""

import uuid
from datetime import UTC, datetime

import grpc
import pytest

from tests import support
from tests import usage_meters_model as model
from tests.usage_support import DAY_US, MINUTE_US, event, every_page, now_us, record, tenant_token, ts, verdicts
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

HOUR_US = 60 * MINUTE_US
AGGREGATIONS = ["SUM", "COUNT", "MIN", "MAX", "LATEST", "UNIQUE_COUNT"]


@pytest.fixture
def token(dbs, tenant):
    return tenant_token(dbs, tenant)


def new_meter(admin_stub, admin_token: str, aggregation: str = "SUM", unique_of: str = "") -> str:
    name = f"ai.{aggregation.lower()}.{uuid.uuid4().hex[:8]}"
    metric = u.Metric(
        name=name,
        classification=u.CLASSIFICATION_BILLABLE,
        unit="token",
        aggregation=u.Aggregation.Value(f"AGGREGATION_{aggregation}"),
        unique_of=unique_of,
        dimensions=["model", "token_type"],
    )
    admin_stub.UpsertMetric(u.UpsertMetricRequest(metric=metric), metadata=support.bearer(admin_token), timeout=30)
    return name


def query(stub, token: str, tenant: str, metric: str, start_us: int, end_us: int, **fields) -> u.QueryUsageResponse:
    request = u.QueryUsageRequest(
        tenant_id=tenant, metric=metric, start_time=ts(start_us), end_time=ts(end_us), **fields
    )
    return stub.QueryUsage(request, metadata=support.bearer(token), timeout=30)


def rows(stub, token: str, tenant: str, metric: str, start_us: int, end_us: int, **fields) -> list[model.ModelRow]:
    """Every row of the query, following page tokens, as the model writes them."""
    group_by = list(fields.get("group_by", []))
    found = every_page(
        lambda page_token: query(stub, token, tenant, metric, start_us, end_us, page_token=page_token, **fields),
        "rows",
    )
    return [
        model.ModelRow(
            r.window_start.ToMicroseconds(),
            r.window_end.ToMicroseconds(),
            tuple((name, r.group[name]) for name in group_by),
            r.value,
            r.event_count,
        )
        for r in found
    ]


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def ai_events(start_us: int) -> list[model.ModelEvent]:
    """Tokens by model and token type, spread over four days, some without a token type."""
    found = []
    for k in range(36):
        dimensions = {"model": ["gpt-4o", "claude", "llama"][k % 3]}
        if k % 4:
            dimensions["token_type"] = ["prompt", "completion", "cached"][k % 3 - 1]
        found.append(
            model.ModelEvent(
                f"e{k:02d}", 100 + 37 * k % 250, start_us + k * 160 * MINUTE_US, f"user{k % 5}", dimensions
            )
        )
    return found


def send(stub, token: str, tenant: str, metric: str, events: list[model.ModelEvent]) -> None:
    sent = [
        event(
            e.event_id,
            metric=metric,
            quantity=e.quantity,
            at_us=e.occurred_at_us,
            actor_id=e.actor_id,
            dimensions=e.dimensions,
        )
        for e in events
    ]
    assert verdicts(record(stub, token, tenant, sent)) == ["ACCEPTED"] * len(sent)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_each_aggregation_by_day_in_new_york_grouped_by_model_equals_the_model(
    usage_stub, usage_admin_stub, admin_token, token, tenant, aggregation
):
    unique_of = "token_type" if aggregation == "UNIQUE_COUNT" else ""
    metric = new_meter(usage_admin_stub, admin_token, aggregation, unique_of)
    start = now_us() - 5 * DAY_US - 17 * MINUTE_US  # not on an hour
    events = ai_events(start)
    send(usage_stub, token, tenant, metric, events)
    end = start + 4 * DAY_US + 7 * MINUTE_US
    zone, group_by = "America/New_York", ("model",)
    expected = model.query(
        events,
        aggregation=aggregation,
        start_us=start,
        end_us=end,
        window="DAY",
        zone_name=zone,
        group_by=group_by,
        unique_of=unique_of,
    )
    found = rows(usage_stub, token, tenant, metric, start, end, window=u.WINDOW_DAY, time_zone=zone, group_by=group_by)
    assert found == expected and len(expected) >= 12
    assert query(usage_stub, token, tenant, metric, start, end).aggregation == u.Aggregation.Value(
        f"AGGREGATION_{aggregation}"
    )


def test_groups_filters_actors_and_zones_with_a_half_hour_offset(
    usage_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_meter(usage_admin_stub, admin_token)
    start = now_us() - 4 * DAY_US - 44 * MINUTE_US
    events = ai_events(start)
    send(usage_stub, token, tenant, metric, events)
    end = start + 4 * DAY_US
    cases = [
        ({"window": "HOUR", "zone_name": "Asia/Kolkata", "group_by": ("token_type",)}, {}),
        ({"window": "DAY", "zone_name": "Asia/Kathmandu", "group_by": ("actor_id", "model")}, {}),
        (
            {"filters": {"model": {"claude", "llama"}, "token_type": {""}}, "group_by": ("model",)},
            {
                "filters": {
                    "model": u.DimensionValues(values=["claude", "llama"]),
                    "token_type": u.DimensionValues(values=[""]),
                }
            },
        ),
        ({"actor_ids": {"user1", "user3"}, "group_by": ("actor_id",)}, {"actor_ids": ["user1", "user3"]}),
    ]
    for model_fields, request_fields in cases:
        window = model_fields.get("window", "NONE")
        request = {
            "window": u.Window.Value(f"WINDOW_{window}") if window != "NONE" else u.WINDOW_UNSPECIFIED,
            "time_zone": model_fields.get("zone_name", ""),
            "group_by": list(model_fields.get("group_by", ())),
            **request_fields,
        }
        expected = model.query(events, aggregation="SUM", start_us=start, end_us=end, **model_fields)
        assert rows(usage_stub, token, tenant, metric, start, end, page_size=7, **request) == expected
        assert expected


def test_a_late_event_counts_the_moment_it_is_acknowledged(usage_stub, usage_admin_stub, admin_token, token, tenant):
    metric = new_meter(usage_admin_stub, admin_token, "MAX")
    start = now_us() - 3 * DAY_US
    send(usage_stub, token, tenant, metric, [model.ModelEvent("e1", 5, start + HOUR_US, "", {"model": "m"})])
    usage_admin_stub.RunRollup(u.RunRollupRequest(tenant_id=tenant), metadata=support.bearer(admin_token), timeout=60)
    send(usage_stub, token, tenant, metric, [model.ModelEvent("late", 9, start + 2 * HOUR_US, "", {"model": "m"})])
    [row] = rows(usage_stub, token, tenant, metric, start, now_us())
    assert (row.value, row.event_count) == (9, 2)


def test_a_question_after_a_catalog_change_answers_by_the_metric_as_it_is_now(
    usage_stub, usage_admin_stub, admin_token, token, tenant
):
    """The service keeps the metric it read for the next questions; each question checks it is still so."""
    metric = new_meter(usage_admin_stub, admin_token, "MAX")
    start = now_us() - 3 * DAY_US
    assert rows(usage_stub, token, tenant, metric, start, now_us()) == []  # the metric is read and kept as MAX
    changed = u.Metric(
        name=metric,
        classification=u.CLASSIFICATION_BILLABLE,
        unit="token",
        aggregation=u.AGGREGATION_MIN,
        dimensions=["model", "token_type", "region"],
    )
    usage_admin_stub.UpsertMetric(u.UpsertMetricRequest(metric=changed), metadata=support.bearer(admin_token))
    events = [
        model.ModelEvent("e1", 5, start + HOUR_US, "", {"model": "m", "region": "eu"}),
        model.ModelEvent("e2", 9, start + 2 * HOUR_US, "", {"model": "m", "region": "eu"}),
    ]
    send(usage_stub, token, tenant, metric, events)
    [whole] = rows(usage_stub, token, tenant, metric, start, now_us())
    [by_region] = rows(usage_stub, token, tenant, metric, start, now_us(), group_by=["region"])
    assert (whole.value, whole.event_count) == (5, 2)
    assert (by_region.group, by_region.value, by_region.event_count) == ((("region", "eu"),), 5, 2)


def test_bad_questions_are_refused_naming_the_field(usage_stub, usage_admin_stub, admin_token, token, tenant):
    metric = new_meter(usage_admin_stub, admin_token)
    start, end = now_us() - DAY_US, now_us()
    cases = [
        ({"metric": "no.such.metric"}, ["metric"]),
        ({"group_by": ["region"]}, ["group_by[0]"]),
        ({"group_by": ["model", "model"]}, ["group_by[1]"]),
        ({"filters": {"region": u.DimensionValues(values=["eu"])}}, ["filters[region]"]),
        ({"filters": {"model": u.DimensionValues()}}, ["filters[model]"]),
        ({"time_zone": "Mars/Olympus"}, ["time_zone"]),
        ({"window": 9}, ["window"]),
        ({"window": u.WINDOW_HOUR, "end_us": start + 10_001 * HOUR_US}, ["window"]),
        ({"end_us": start}, ["end_time"]),
        ({"page_token": "not-a-token"}, ["page_token"]),
    ]
    for fields, violations in cases:
        fields = {"metric": metric, "start_us": start, "end_us": end} | fields
        error = refused(
            lambda fields=fields: query(
                usage_stub, token, tenant, fields.pop("metric"), fields.pop("start_us"), fields.pop("end_us"), **fields
            )
        )
        assert (error.code(), support.field_violations(error)) == (grpc.StatusCode.INVALID_ARGUMENT, violations)


def test_a_page_token_serves_only_its_own_question(usage_stub, usage_admin_stub, admin_token, token, tenant):
    metric = new_meter(usage_admin_stub, admin_token)
    start = now_us() - 2 * DAY_US
    send(usage_stub, token, tenant, metric, ai_events(start)[:12])
    first = query(
        usage_stub, token, tenant, metric, start, now_us(), group_by=["model"], window=u.WINDOW_HOUR, page_size=2
    )
    assert first.next_page_token
    error = refused(
        lambda: query(
            usage_stub,
            token,
            tenant,
            metric,
            start,
            now_us(),
            group_by=["token_type"],
            window=u.WINDOW_HOUR,
            page_token=first.next_page_token,
        )
    )
    assert support.field_violations(error) == ["page_token"]


def test_a_range_before_the_purge_horizon_is_refused_naming_it(
    usage_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_meter(usage_admin_stub, admin_token)
    cutoff = now_us() - 10 * DAY_US
    usage_admin_stub.PurgeEvents(
        u.PurgeEventsRequest(tenant_id=tenant, before_time=ts(cutoff)), metadata=support.bearer(admin_token), timeout=60
    )
    error = refused(lambda: query(usage_stub, token, tenant, metric, cutoff - HOUR_US, now_us()))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ts(cutoff).ToJsonString() in error.details()
    assert query(usage_stub, token, tenant, metric, cutoff, now_us()).rows == []


def test_a_tenant_reads_only_its_own_meters(dbs, usage_stub, usage_admin_stub, admin_token, tenant):
    metric = new_meter(usage_admin_stub, admin_token)
    other = tenant_token(dbs, support.new_tenant())
    writer = support.make_token(dbs, tenant=tenant, scopes=["usage:write"])
    for credential in (other, writer):
        error = refused(lambda credential=credential: query(usage_stub, credential, tenant, metric, 0, now_us()))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_dimension_values_are_distinct_ordered_paged_and_ranged(
    usage_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_meter(usage_admin_stub, admin_token)
    start = now_us() - 4 * DAY_US
    events = ai_events(start)
    send(usage_stub, token, tenant, metric, events)

    def values(dimension: str, **fields) -> list[str]:
        return every_page(
            lambda page_token: usage_stub.ListDimensionValues(
                u.ListDimensionValuesRequest(
                    tenant_id=tenant, metric=metric, dimension=dimension, page_size=2, page_token=page_token, **fields
                ),
                metadata=support.bearer(token),
                timeout=30,
            ),
            "values",
        )

    assert values("model") == ["claude", "gpt-4o", "llama"]
    assert values("token_type") == ["cached", "completion", "prompt"]
    assert values("actor_id") == [f"user{k}" for k in range(5)]
    late = events[-1].occurred_at_us
    assert values("model", start_time=ts(late)) == [events[-1].dimensions["model"]]
    error = refused(lambda: values("region"))
    assert (error.code(), support.field_violations(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["dimension"])


# Calendar edges at the API: a server that accepts events ten years old (and purges none), so the tests can name
# real DST days, month ends and a leap day of the past.
@pytest.fixture(scope="module")
def history_stub(dbs):
    from tollgate.services.usage import server as usage_server
    from tollgate.services.usage.config import Settings

    settings = support.test_settings(
        Settings(), database_url=dbs.usage_url, rollup_interval_seconds=0, backfill_days=3660, retention_days=0
    )
    running = usage_server.build(settings)
    with support.channel(running.port) as channel:
        yield usage_pb2_grpc.UsageServiceStub(channel)
    running.stop(grace=1)


def utc_us(text: str) -> int:
    """Epoch microseconds of a UTC instant written as ISO 8601 without a zone."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000


def edge_events(*instants: str, prefix: str = "e") -> list[model.ModelEvent]:
    return [
        model.ModelEvent(f"{prefix}{n:02d}", 10 + n, utc_us(at), f"user{n % 2}", {"model": ["a", "b"][n % 2]})
        for n, at in enumerate(instants)
    ]


def spans(found: list[model.ModelRow]) -> list[tuple[int, int]]:
    return sorted({(r.window_start_us, r.window_end_us) for r in found})


def edge_rows(stub, token, tenant, metric, start: str, end: str, window: str, zone: str, group_by=("model",)):
    """The rows QueryUsage answers for the range, and what the brute-force model says they must be."""
    start_us, end_us = utc_us(start), utc_us(end)
    found = rows(
        stub,
        token,
        tenant,
        metric,
        start_us,
        end_us,
        window=u.Window.Value(f"WINDOW_{window}"),
        time_zone=zone,
        group_by=list(group_by),
    )
    return found, (start_us, end_us, window, zone, group_by)


def modelled(events, spec) -> list[model.ModelRow]:
    start_us, end_us, window, zone, group_by = spec
    return model.query(
        events, aggregation="SUM", start_us=start_us, end_us=end_us, window=window, zone_name=zone, group_by=group_by
    )


def test_berlin_days_last_23_hours_on_the_last_sunday_of_march_and_25_on_the_last_of_october(
    history_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_meter(usage_admin_stub, admin_token)
    # The first and the last minute of the changing days (CET is UTC+1, CEST UTC+2), and the next day's first.
    events = edge_events(
        "2025-03-29T23:00",  # 00:00 CET, the 30th
        "2025-03-30T21:59",  # 23:59 CEST, the 30th
        "2025-03-30T22:00",  # 00:00 CEST, the 31st
        "2025-10-25T22:00",  # 00:00 CEST, the 26th
        "2025-10-26T22:59",  # 23:59 CET, the 26th
        "2025-10-26T23:00",  # 00:00 CET, the 27th
    )
    send(history_stub, token, tenant, metric, events)
    for start, end, lengths in (
        ("2025-03-29T23:00", "2025-03-31T22:00", [23, 24]),
        ("2025-10-25T22:00", "2025-10-27T23:00", [25, 24]),
    ):
        found, spec = edge_rows(history_stub, token, tenant, metric, start, end, "DAY", "Europe/Berlin")
        assert found == modelled(events, spec)
        assert [(window_end - window_start) // HOUR_US for window_start, window_end in spans(found)] == lengths
        assert [r.event_count for r in found] == [1, 1, 1]
    # The hour the clock goes back through is two windows (02:00 CEST, then 02:00 CET), each with its own event.
    repeated = edge_events("2025-10-26T00:30", "2025-10-26T01:30", prefix="r")
    send(history_stub, token, tenant, metric, repeated)
    found, spec = edge_rows(
        history_stub, token, tenant, metric, "2025-10-26T00:00", "2025-10-26T02:00", "HOUR", "Europe/Berlin", ()
    )
    start = utc_us("2025-10-26T00:00")
    assert found == modelled(repeated, spec)
    assert [(r.window_start_us, r.window_end_us, r.value) for r in found] == [
        (start, start + HOUR_US, repeated[0].quantity),
        (start + HOUR_US, start + 2 * HOUR_US, repeated[1].quantity),
    ]


def test_months_run_from_the_31st_into_february_in_utc_and_in_a_zone_with_dst(
    history_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_meter(usage_admin_stub, admin_token)
    events = edge_events(
        "2025-01-31T23:59",  # the 31st in UTC; 18:59 on the 31st in New York
        "2025-02-01T00:00",  # February in UTC; still January 31st in New York (19:00 EST)
        "2025-02-01T05:00",  # February everywhere here: 00:00 EST
        "2025-02-28T23:59",  # the last minute of February in UTC; 18:59 in New York
        "2025-03-01T04:59",  # March in UTC; 23:59 on February 28th in New York
        "2025-03-31T03:59",  # March in New York (23:59 EDT on the 30th), after its DST change
    )
    send(history_stub, token, tenant, metric, events)
    start, end = "2025-01-15T00:00", "2025-04-15T00:00"
    utc, _ = edge_rows(history_stub, token, tenant, metric, start, end, "MONTH", "UTC", ())
    new_york, spec = edge_rows(history_stub, token, tenant, metric, start, end, "MONTH", "America/New_York", ())
    assert utc == modelled(events, (*spec[:3], "UTC", ()))
    assert new_york == modelled(events, spec)
    assert spans(utc) == [
        (utc_us("2025-01-15T00:00"), utc_us("2025-02-01T00:00")),  # clipped by the range
        (utc_us("2025-02-01T00:00"), utc_us("2025-03-01T00:00")),  # 28 days
        (utc_us("2025-03-01T00:00"), utc_us("2025-04-01T00:00")),
    ]
    assert [r.event_count for r in utc] == [1, 3, 2]
    assert spans(new_york) == [
        (utc_us("2025-01-15T00:00"), utc_us("2025-02-01T05:00")),
        (utc_us("2025-02-01T05:00"), utc_us("2025-03-01T05:00")),  # 28 days of EST
        (utc_us("2025-03-01T05:00"), utc_us("2025-04-01T04:00")),  # 31 days less the hour DST took
    ]
    assert [r.event_count for r in new_york] == [2, 3, 1]


def test_the_leap_day_is_a_day_of_february_in_every_zone_and_february_has_29(
    history_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_meter(usage_admin_stub, admin_token)
    events = edge_events(
        "2024-02-28T18:29",  # the 28th in Kolkata (23:59 IST)
        "2024-02-28T18:30",  # the 29th in Kolkata: 00:00 IST
        "2024-02-29T00:00",  # the 29th in UTC
        "2024-02-29T23:59",  # the 29th in UTC; March 1st in Kolkata
        "2024-03-01T00:00",  # March in UTC
    )
    send(history_stub, token, tenant, metric, events)
    start, end = "2024-02-28T00:00", "2024-03-02T00:00"
    kolkata, spec = edge_rows(history_stub, token, tenant, metric, start, end, "DAY", "Asia/Kolkata", ())
    assert kolkata == modelled(events, spec)
    leap_day = (utc_us("2024-02-28T18:30"), utc_us("2024-02-29T18:30"))
    assert leap_day in spans(kolkata)
    assert next(r.event_count for r in kolkata if (r.window_start_us, r.window_end_us) == leap_day) == 2
    utc, spec = edge_rows(history_stub, token, tenant, metric, "2024-02-01T00:00", end, "MONTH", "UTC", ())
    assert utc == modelled(events, spec)
    assert spans(utc)[0] == (utc_us("2024-02-01T00:00"), utc_us("2024-03-01T00:00"))
    assert (spans(utc)[0][1] - spans(utc)[0][0]) // HOUR_US == 29 * 24
    assert [r.event_count for r in utc] == [4, 1]


def test_windows_are_clipped_by_the_range_and_the_range_is_half_open(
    history_stub, usage_admin_stub, admin_token, token, tenant
):
    metric = new_meter(usage_admin_stub, admin_token)
    events = edge_events(
        "2025-06-10T09:59",  # before the range
        "2025-06-10T10:17",  # the range's first instant
        "2025-06-11T12:00",
        "2025-06-12T07:40",  # the range's end, which it does not hold
    )
    send(history_stub, token, tenant, metric, events)
    start, end = "2025-06-10T10:17", "2025-06-12T07:40"
    for window, zone in (("DAY", "Asia/Kathmandu"), ("WEEK", "America/New_York"), ("MONTH", "Australia/Lord_Howe")):
        found, spec = edge_rows(history_stub, token, tenant, metric, start, end, window, zone, ())
        assert found == modelled(events, spec)
        assert found[0].window_start_us == utc_us(start) and found[-1].window_end_us <= utc_us(end)
        assert sum(r.event_count for r in found) == 2
    # A range inside one window answers that window clipped on both sides; its end is exclusive.
    inside, spec = edge_rows(history_stub, token, tenant, metric, start, "2025-06-11T12:00", "MONTH", "UTC", ())
    assert [(r.window_start_us, r.window_end_us, r.event_count) for r in inside] == [
        (utc_us(start), utc_us("2025-06-11T12:00"), 1)
    ]
