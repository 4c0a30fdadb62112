"""Rollups that carry dimensions (domain/meter_rollups.py): which metrics are rolled up, which cuboid answers a
question, how windows split into day pieces and raw spans (a cover of every instant, exactly once), and a day's
rows against brute force."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.aggregations import ACTOR_ID, Aggregation, Sample, partial
from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US
from tollgate.services.usage.domain.meter_rollups import (
    APEX,
    DayPiece,
    cell,
    cuboid_for,
    cuboids,
    day_rows,
    rolled_up,
    split,
)

MINUTE_US = 60_000_000


def test_metrics_rolled_up_are_those_with_dimensions_or_another_aggregation_than_sum_and_never_unique_count():
    assert not rolled_up(Aggregation.SUM, [])  # GetUsage's aggregates hold it already
    assert rolled_up(Aggregation.SUM, ["model"])
    assert rolled_up(Aggregation.MIN, [])
    assert rolled_up(Aggregation.LATEST, [])
    assert not rolled_up(Aggregation.UNIQUE_COUNT, ["model"])  # distinct sets do not add: raw events


def test_a_question_reads_the_smallest_cuboid_holding_its_dimensions():
    assert cuboids(["token_type", "model"]) == [APEX, "model", "token_type"]
    assert cuboid_for(Aggregation.SUM, [], [], []) == APEX
    assert cuboid_for(Aggregation.SUM, ["model"], [], []) == "model"
    assert cuboid_for(Aggregation.MAX, ["model"], ["model"], []) == "model"
    assert cuboid_for(Aggregation.SUM, ["model"], ["region"], []) is None  # two dimensions: raw events
    assert cuboid_for(Aggregation.SUM, [ACTOR_ID], [], []) is None  # rollups carry no actor
    assert cuboid_for(Aggregation.SUM, [], [], ["ann"]) is None
    assert cuboid_for(Aggregation.UNIQUE_COUNT, [], [], []) is None


def test_a_cell_keeps_the_cuboids_dimensions_with_the_empty_value_for_a_missing_one():
    values = {"model": "m1", "region": "eu"}
    assert cell(APEX, values) == "{}"
    assert cell("model", values) == '{"model":"m1"}'
    assert cell("token_type", values) == '{"token_type":""}'


def test_a_new_york_day_is_two_day_pieces_and_edges_off_the_hour_are_raw():
    day = 20_000 * DAY_US
    windows = [(day + 5 * HOUR_US + 30 * MINUTE_US, day + DAY_US + 5 * HOUR_US)]
    cut = split(windows, 0)
    assert cut.pieces == [DayPiece(0, day, 6, 24), DayPiece(0, day + DAY_US, 0, 5)]
    assert cut.raw == [(0, day + 5 * HOUR_US + 30 * MINUTE_US, day + 6 * HOUR_US)]


def test_a_window_inside_one_hour_is_raw_and_earlier_windows_than_the_page_are_left_out():
    day = 20_000 * DAY_US
    windows = [(day, day + HOUR_US), (day + HOUR_US + MINUTE_US, day + HOUR_US + 45 * MINUTE_US)]
    assert split(windows, 1).pieces == []
    assert split(windows, 1).raw == [(1, day + HOUR_US + MINUTE_US, day + HOUR_US + 45 * MINUTE_US)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3 * DAY_US // MINUTE_US, 3 * DAY_US // MINUTE_US), min_size=2, max_size=6, unique=True))
def test_day_pieces_and_raw_spans_cover_every_window_once(bounds):
    cuts = sorted(b * MINUTE_US for b in bounds)
    windows = list(zip(cuts, cuts[1:]))
    cut = split(windows, 0)
    spans = [(p.n, p.day_us + p.first_hour * HOUR_US, p.day_us + p.end_hour * HOUR_US) for p in cut.pieces] + cut.raw
    for piece in cut.pieces:
        assert 0 <= piece.first_hour < piece.end_hour <= 24 and piece.day_us % DAY_US == 0
    for n, (lo, hi) in enumerate(windows):
        mine = sorted((a, b) for m, a, b in spans if m == n)
        assert all(a < b for a, b in mine)
        assert [mine[0][0], mine[-1][1]] == [lo, hi] and all(x[1] == y[0] for x, y in zip(mine, mine[1:]))
    assert all(-(-a // HOUR_US) * HOUR_US + HOUR_US > b for _, a, b in cut.raw)  # no whole hour is read raw


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, DAY_US - 1),
            st.text("ab", min_size=1, max_size=2),
            st.integers(1, 10**12),
            st.fixed_dictionaries({}, optional={"model": st.sampled_from(["m1", "m2"]), "region": st.just("eu")}),
        ),
        max_size=30,
        unique_by=lambda e: e[1],
    )
)
def test_a_days_rows_hold_each_cuboids_groups_hour_by_hour(events):
    day = 20_000 * DAY_US
    samples = [(Sample(day + at, event_id, q), dims) for at, event_id, q, dims in events]
    rows = day_rows(day, samples, ["model", "region"])
    for kind in cuboids(["model", "region"]):
        for key in {cell(kind, dims) for _, dims in samples}:
            hours = rows[(kind, key)]
            assert [h.offset for h in hours] == sorted(
                {(s.occurred_at_us - day) // HOUR_US for s, d in samples if cell(kind, d) == key}
            )
            for h in hours:
                mine = [
                    s for s, d in samples if cell(kind, d) == key and (s.occurred_at_us - day) // HOUR_US == h.offset
                ]
                whole = partial(mine)
                assert (h.quantity, h.events, h.low, h.high, h.latest) == (
                    whole.total,
                    whole.count,
                    whole.low,
                    whole.high,
                    whole.latest,
                )
    assert sum(len(hours) for (kind, _), hours in rows.items() if kind == APEX) == len(
        {(s.occurred_at_us - day) // HOUR_US for s, _ in samples}
    )
