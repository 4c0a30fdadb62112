"""Rolled-up days kept in memory (repository/meter_memory.py), over gRPC on PostgreSQL, where SUM and COUNT questions
add the pieces of days whose version is still the one held: the rows held answer while the version holds, a
version changed by any writer makes the question read the database, a late event counts at once, and a rollup
since makes only the days it rewrote read again. Rows and versions are changed behind the service's back with
SQL (a fault injected on purpose) to tell memory from the database; SQLite keeps no days (its rows carry no
running sums).

The versions every rollup writes are held on both backends; DayMemory's bound without a database."""

import dataclasses
from array import array

import pytest
from sqlalchemy import select, text

from tests import http_support, support
from tests import usage_meters_model as model
from tests.usage.test_usage_meter_rollups import roll_up
from tests.usage.test_usage_meters_query import ai_events, new_meter, rows, send
from tests.usage_support import DAY_US, MINUTE_US, now_us, tenant_token, ts
from tollgate.services.usage import tables
from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.grpc_convert import meter_page
from tollgate.services.usage.repository import meter_memory
from tollgate.services.usage.repository.meter_memory import Day, DayMemory
from tollgate.services.usage.service.meters import MeterPage
from tollgate.shared.db import create_engine_for
from tollgate.shared.encoded import EncodedResponses
from tollgate.usage.v1 import usage_pb2 as u

HOUR_US = 60 * MINUTE_US
ZONE = "America/New_York"


@pytest.fixture
def sql(dbs):
    """Runs a statement in a transaction of its own."""
    engine = create_engine_for(dbs.usage_url, schema="usage")

    def run(statement: str, **values) -> None:
        with engine.begin() as connection:
            connection.execute(text(statement), values)

    yield run
    engine.dispose()


def _setup(usage_stub, usage_admin_stub, admin_token, dbs, tenant, aggregation):
    metric = new_meter(usage_admin_stub, admin_token, aggregation)
    token = tenant_token(dbs, tenant)
    start = (now_us() // HOUR_US - 5 * 24) * HOUR_US
    events = ai_events(start + 13 * MINUTE_US)
    send(usage_stub, token, tenant, metric, events)
    roll_up(usage_admin_stub, admin_token, tenant)
    end = start + 4 * DAY_US + HOUR_US

    def answer() -> list:
        return rows(
            usage_stub, token, tenant, metric, start, end, window=u.WINDOW_DAY, time_zone=ZONE, group_by=("model",)
        )

    def expected(kept) -> list:
        return model.query(
            kept, aggregation=aggregation, start_us=start, end_us=end, window="DAY", zone_name=ZONE, group_by=("model",)
        )

    return metric, token, start, events, answer, expected


def _double_rows(sql, tenant: str, metric: str) -> None:
    """Every running sum of the tenant's rows of the metric doubled, its versions untouched."""
    sql(
        """UPDATE "usage".meter_days
        SET running_quantities = (SELECT array_agg(q * 2) FROM unnest(running_quantities) AS q),
            running_counts = (SELECT array_agg(c * 2) FROM unnest(running_counts) AS c)
        WHERE tenant_id = :tenant AND metric = :metric""",
        tenant=tenant,
        metric=metric,
    )


def _delete_day(sql, tenant: str, metric: str, day: int) -> None:
    """The metric's raw events of the UTC day starting at `day` deleted, nothing else told."""
    sql(
        'DELETE FROM "usage".events WHERE tenant_id = :t AND metric = :m AND occurred_at_us >= :d AND '
        "occurred_at_us < :d + 86400000000",
        t=tenant,
        m=metric,
        d=day,
    )


def _doubled(expected: list[model.ModelRow]) -> list[model.ModelRow]:
    return [dataclasses.replace(row, value=row.value * 2, event_count=row.event_count * 2) for row in expected]


@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)
@pytest.mark.parametrize("aggregation", ["SUM", "COUNT"])
def test_held_days_answer_while_their_versions_hold_and_a_changed_version_reads_the_database(
    dbs, usage_stub, usage_admin_stub, admin_token, tenant, sql, aggregation
):
    metric, _, _, events, answer, expected = _setup(usage_stub, usage_admin_stub, admin_token, dbs, tenant, aggregation)
    assert answer() == expected(events)  # the days read, and held
    _double_rows(sql, tenant, metric)
    # The rows changed without a new version (no writer of Usage does that): the days held still answer. Every
    # window here is whole hours of rolled-up days, so a read of the rows would double the answer.
    assert answer() == expected(events)
    sql(
        'UPDATE "usage".meter_versions SET version = version + 1 WHERE tenant_id = :t AND metric = :m',
        t=tenant,
        m=metric,
    )
    # New versions: the question is read from the database, doubled.
    assert answer() == _doubled(expected(events))


@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)
def test_a_late_event_counts_at_once_and_a_rollup_since_makes_only_its_day_read_again(
    dbs, usage_stub, usage_admin_stub, admin_token, tenant, sql
):
    metric, token, start, events, answer, expected = _setup(
        usage_stub, usage_admin_stub, admin_token, dbs, tenant, "SUM"
    )
    assert answer() == expected(events)
    day = (start // DAY_US + 2) * DAY_US
    late = model.ModelEvent("late-1", 999, day + 7 * HOUR_US + 5 * MINUTE_US, "ann", {"model": "claude"})
    send(usage_stub, token, tenant, metric, [late])
    assert answer() == expected([*events, late])  # its day is marked: read from the database, the others held
    roll_up(usage_admin_stub, admin_token, tenant)
    # The rollup replaced that day's rows and version: the day held from before the late event is not current, so
    # the question is read whole and that day forgotten (the others stay held).
    kept = [*events, late]
    assert answer() == expected(kept)
    _double_rows(sql, tenant, metric)
    # The next question reads the forgotten day again, doubled behind the versions' back; the other days are
    # still held as they were.
    twice = [
        dataclasses.replace(e, event_id=f"{e.event_id}-again") for e in kept if day <= e.occurred_at_us < day + DAY_US
    ]
    assert twice
    assert answer() == expected([*kept, *twice])


@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)
@pytest.mark.parametrize("window", ["UNSPECIFIED", "DAY"])
def test_a_unique_count_adds_the_values_of_held_whole_days_while_their_versions_hold(
    dbs, usage_stub, usage_admin_stub, admin_token, tenant, sql, window
):
    metric = new_meter(usage_admin_stub, admin_token, "UNIQUE_COUNT", unique_of="actor_id")
    token = tenant_token(dbs, tenant)
    start = (now_us() // DAY_US - 5) * DAY_US + 3 * HOUR_US  # off the day: its first day is partly in the range
    events = ai_events(start + 13 * MINUTE_US)
    send(usage_stub, token, tenant, metric, events)
    roll_up(usage_admin_stub, admin_token, tenant)
    end = start + 4 * DAY_US + HOUR_US

    def answer() -> list:
        return rows(usage_stub, token, tenant, metric, start, end, window=u.Window.Value(f"WINDOW_{window}"))

    def expected(kept) -> list:
        return model.query(
            kept,
            aggregation="UNIQUE_COUNT",
            unique_of="actor_id",
            start_us=start,
            end_us=end,
            window="NONE" if window == "UNSPECIFIED" else window,
        )

    def delete_day(day: int) -> list[model.ModelEvent]:
        _delete_day(sql, tenant, metric, day)
        return [e for e in events if day <= e.occurred_at_us < day + DAY_US]

    first = (start // DAY_US + 1) * DAY_US  # the range's whole UTC days: first, first + 1 day, first + 2 days
    assert answer() == expected(events)  # asked once: read from raw events, nothing held
    gone = delete_day(first)
    kept = [e for e in events if e not in gone]
    assert gone and answer() == expected(kept)  # asked again: read from raw events, and the whole days held
    gone = delete_day(first + DAY_US)
    assert gone and answer() == expected(kept)  # that day's values and events are held, at a version that holds
    sql(
        'UPDATE "usage".meter_versions SET version = version + 1 WHERE tenant_id = :t AND metric = :m',
        t=tenant,
        m=metric,
    )
    kept = [e for e in kept if e not in gone]
    assert answer() == expected(kept)  # new versions: read from raw events, and the days forgotten
    late = model.ModelEvent("late-1", 5, first + 2 * DAY_US + 7 * HOUR_US, "newcomer", {})
    send(usage_stub, token, tenant, metric, [late])
    assert answer() == expected([*kept, late])  # its day is marked: read from raw events at once
    roll_up(usage_admin_stub, admin_token, tenant)
    assert answer() == expected([*kept, late])  # the rollup made a new version of that day
    assert answer() == expected([*kept, late])


@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)
def test_a_unique_count_with_more_values_than_one_read_may_hold_is_read_from_raw_events(
    dbs, usage_stub, usage_admin_stub, admin_token, tenant, sql, monkeypatch
):
    monkeypatch.setattr(meter_memory, "MAX_VALUES", 3)  # the days of ai_events hold more (day, actor) pairs
    metric = new_meter(usage_admin_stub, admin_token, "UNIQUE_COUNT", unique_of="actor_id")
    token = tenant_token(dbs, tenant)
    start = (now_us() // DAY_US - 5) * DAY_US
    events = ai_events(start + 13 * MINUTE_US)
    send(usage_stub, token, tenant, metric, events)
    roll_up(usage_admin_stub, admin_token, tenant)
    end = start + 4 * DAY_US

    def answer() -> list:
        return rows(usage_stub, token, tenant, metric, start, end)

    def expected(kept) -> list:
        return model.query(kept, aggregation="UNIQUE_COUNT", unique_of="actor_id", start_us=start, end_us=end)

    assert answer() == expected(events)
    assert answer() == expected(events)  # asked again: its days would be read into memory, but are too many
    day = start + DAY_US
    _delete_day(sql, tenant, metric, day)
    # Nothing was held: the deletion behind the service's back shows at once.
    assert answer() == expected([e for e in events if not day <= e.occurred_at_us < day + DAY_US])


@pytest.mark.parametrize("aggregation", ["SUM", "UNIQUE_COUNT"])
def test_every_rollup_that_stores_a_day_gives_that_day_alone_a_new_version(
    dbs, usage_stub, usage_admin_stub, admin_token, tenant, aggregation
):
    """What memory relies on, on both backends (SQLite writes versions though it keeps no days)."""
    metric = new_meter(usage_admin_stub, admin_token, aggregation, unique_of="actor_id" if aggregation != "SUM" else "")
    token = tenant_token(dbs, tenant)
    start = (now_us() // DAY_US - 5) * DAY_US
    events = ai_events(start + 13 * MINUTE_US)
    days = {e.occurred_at_us // DAY_US * DAY_US for e in events}
    engine = create_engine_for(dbs.usage_url, schema="usage")

    def versions() -> dict[int, int]:
        v = tables.meter_versions.c
        with engine.connect() as connection:
            found = connection.execute(
                select(v.day_us, v.version).where(v.tenant_id == tenant, v.metric == metric)
            ).all()
        return dict(found)

    try:
        send(usage_stub, token, tenant, metric, events)
        assert versions() == {}  # nothing stored yet
        roll_up(usage_admin_stub, admin_token, tenant)
        before = versions()
        assert set(before) == days
        day = start + 2 * DAY_US
        send(usage_stub, token, tenant, metric, [model.ModelEvent("late-1", 7, day + HOUR_US, "ann", {})])
        assert versions() == before  # an event marks its day; only the rollup that stores it changes the version
        roll_up(usage_admin_stub, admin_token, tenant)
        after = versions()
        assert after[day] != before[day]
        assert {d: v for d, v in after.items() if d != day} == {d: v for d, v in before.items() if d != day}
    finally:
        engine.dispose()


@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)
def test_a_question_asked_again_counts_what_its_raw_spans_gained_and_answers_alike_over_http(
    dbs, usage, usage_stub, usage_admin_stub, admin_token, tenant, sql
):
    """A question asked again is answered from its kept answer while its held days hold (rows doubled behind the
    versions' back do not show), and the events its raw spans gained since (a day without rows, the range's last
    minutes) count at once; over HTTP, in JSON and binary protobuf, as over gRPC."""
    metric = new_meter(usage_admin_stub, admin_token, "SUM")
    token = tenant_token(dbs, tenant)
    start = (now_us() // DAY_US - 6) * DAY_US
    events = ai_events(start + 13 * MINUTE_US)  # four days; the fifth has none, so no rows once rolled up
    send(usage_stub, token, tenant, metric, events)
    roll_up(usage_admin_stub, admin_token, tenant)
    end = start + 5 * DAY_US + 30 * MINUTE_US  # its last half hour read raw
    fields = dict(window=u.WINDOW_DAY, time_zone=ZONE, group_by=("model",))
    request = u.QueryUsageRequest(
        tenant_id=tenant, metric=metric, start_time=ts(start), end_time=ts(end), page_size=1000, **fields
    )

    def answer() -> list:
        return rows(usage_stub, token, tenant, metric, start, end, **fields)

    def expected(kept) -> list:
        return model.query(
            kept, aggregation="SUM", start_us=start, end_us=end, window="DAY", zone_name=ZONE, group_by=("model",)
        )

    assert answer() == expected(events)
    _double_rows(sql, tenant, metric)
    assert answer() == expected(events)  # asked again: the kept answer, not the doubled rows
    late = [
        model.ModelEvent("late-empty-day", 500, start + 4 * DAY_US + 7 * HOUR_US, "ann", {"model": "claude"}),
        model.ModelEvent("late-last-minutes", 70, start + 5 * DAY_US + 10 * MINUTE_US, "bob", {"model": "llama"}),
    ]
    send(usage_stub, token, tenant, metric, late)
    assert answer() == expected([*events, *late])  # the raw spans' new events, the held days as kept
    assert answer() == expected([*events, *late])
    over_grpc = usage_stub.QueryUsage(request, metadata=support.bearer(token), timeout=30)
    path = "/tollgate.usage.v1.UsageService/QueryUsage"
    for _ in range(2):
        as_json = http_support.post(usage.http_port, path, request, token=token)
        assert as_json.status == 200, as_json.body
        assert as_json.message(u.QueryUsageResponse) == over_grpc
        binary = http_support.post(
            usage.http_port, path, request.SerializeToString(), token=token, content_type="application/proto"
        )
        assert binary.status == 200 and u.QueryUsageResponse.FromString(binary.body) == over_grpc
    sql(
        'UPDATE "usage".meter_versions SET version = version + 1 WHERE tenant_id = :t AND metric = :m',
        t=tenant,
        m=metric,
    )
    # New versions: the doubled rows are read, beside the raw spans' events.
    twice = [dataclasses.replace(e, event_id=f"{e.event_id}-again") for e in events]
    assert answer() == expected([*events, *twice, *late])
    assert answer() == expected([*events, *twice, *late])


@pytest.mark.parametrize("dbs", ["postgres"], indirect=True)
def test_a_range_ending_later_within_the_hour_is_asked_again_with_its_own_raw_spans(
    dbs, usage_stub, usage_admin_stub, admin_token, tenant, sql
):
    """A range ending "now", asked every few minutes, cuts the same whole hours: its answer is kept from its second
    ask (the held days as kept: rows doubled behind the versions' back do not show), and each ask reads its own
    last minutes, so an event in them counts."""
    metric = new_meter(usage_admin_stub, admin_token, "SUM")
    token = tenant_token(dbs, tenant)
    start = (now_us() // DAY_US - 6) * DAY_US
    events = ai_events(start + 13 * MINUTE_US)
    send(usage_stub, token, tenant, metric, events)
    roll_up(usage_admin_stub, admin_token, tenant)
    hour = start + 5 * DAY_US + 2 * HOUR_US

    def answer(end: int) -> list:
        return rows(usage_stub, token, tenant, metric, start, end, window=u.WINDOW_DAY, time_zone=ZONE)

    def expected(kept, end: int) -> list:
        return model.query(kept, aggregation="SUM", start_us=start, end_us=end, window="DAY", zone_name=ZONE)

    assert answer(hour + 10 * MINUTE_US) == expected(events, hour + 10 * MINUTE_US)
    _double_rows(sql, tenant, metric)
    assert answer(hour + 20 * MINUTE_US) == expected(events, hour + 20 * MINUTE_US)  # kept from here
    late = model.ModelEvent("in-the-last-minutes", 41, hour + 25 * MINUTE_US, "ann", {"model": "claude"})
    send(usage_stub, token, tenant, metric, [late])
    assert answer(hour + 30 * MINUTE_US) == expected([*events, late], hour + 30 * MINUTE_US)
    assert answer(hour + 20 * MINUTE_US) == expected(events, hour + 20 * MINUTE_US)  # the event is past its end


def test_encoded_responses_are_kept_by_answer_within_their_bound():
    page = MeterPage([(0, ("claude",), 5, 2)], [(0, 3_600_000_000)], ("model",), "", Aggregation.SUM, (7, None, 1))
    encoded = EncodedResponses(max_bytes=1 << 20).response(page.answer, lambda: meter_page(page))
    assert isinstance(encoded, bytes)
    assert u.QueryUsageResponse.FromString(encoded).rows[0].group == {"model": "claude"}
    pages = EncodedResponses(max_bytes=2 * len(encoded))

    def response(shown: MeterPage):
        return pages.response(shown.answer, lambda: meter_page(shown))

    assert response(page) == encoded
    changed = page._replace(rows=[(0, ("claude",), 6, 2)])
    assert response(changed) is response(page)  # the same answer key: the bytes kept of it
    for other in (page._replace(answer=(n, None, 1)) for n in (8, 9)):
        assert response(other) == encoded
    assert u.QueryUsageResponse.FromString(response(changed)).rows[0].value == 6  # (7, ...) was let go
    assert isinstance(response(page._replace(answer=None)), u.QueryUsageResponse)  # not kept: a message
    none_kept = EncodedResponses(max_bytes=0)
    assert isinstance(none_kept.response(page.answer, lambda: meter_page(page)), u.QueryUsageResponse)


def test_day_memory_forgets_the_least_recently_read_days_past_its_bound():
    def day(values: int) -> Day:
        return Day(1, {f"v{k}": array("q", [0] * 50) for k in range(values)}, {})

    memory = DayMemory(3 * day(1).size())
    key = ("tenant", "metric", "model")
    memory.put(key, {1: day(1), 2: day(1), 3: day(1)})
    assert sorted(memory.get(key, [1, 2, 3])) == [1, 2, 3]
    memory.get(key, [1])  # day 1 read last: day 2 is now the least recently read
    assert (memory.size, memory.evicted) == (3 * day(1).size(), 0)
    memory.put(key, {4: day(1)})
    assert sorted(memory.get(key, [1, 2, 3, 4])) == [1, 3, 4]
    assert (memory.size, memory.evicted) == (3 * day(1).size(), 1)
    assert day(4).size() > memory.max_bytes
    memory.put(key, {5: day(4)})  # larger than the bound: the others go, and so does it
    assert memory.get(key, [1, 3, 4, 5]) == {}
    assert (memory.size, memory.evicted) == (0, 5)
    memory.put(key, {6: day(1)})
    memory.forget(key, [6])
    assert memory.get(key, [6]) == {}
    assert memory.get(("tenant", "other", "model"), [1]) == {}
    assert not memory.asked_before(key)
    assert memory.asked_before(key)
    assert not memory.asked_before(("tenant", "other", "model"))
