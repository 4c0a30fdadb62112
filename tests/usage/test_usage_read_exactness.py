"""GetUsage equals a brute-force sum of the accepted events, whatever the rollups have done so far.

Hypothesis interleaves batches of events (late ones too), partial and full rollups, and questions
over ranges that start and end on and off hour and day boundaries. Reads mix clean aggregates,
dirty buckets and raw edges in every combination; the answer must never move off the raw sum.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from tests import support
from tests.usage_support import MINUTE_US, event, now_us, record, totals
from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US, Period, start_of
from tollgate.services.usage.domain.read_plan import plan
from tollgate.usage.v1 import usage_pb2 as u

METRICS = ["api.requests", "leads.routed"]
ACTORS = ["ann", "bob", ""]
SPAN_DAYS = 3
# Instants as offsets from the start of a day a week ago: minutes that fall on, next to and far from
# hour and day boundaries.
OFFSETS_MIN = st.sampled_from([0, 1, 59, 60, 61, 24 * 60 - 1, 24 * 60, 24 * 60 + 1, 48 * 60]) | st.integers(
    0, SPAN_DAYS * 24 * 60 - 1
)

EVENTS = st.lists(
    st.tuples(st.sampled_from(METRICS), st.sampled_from(ACTORS), st.integers(1, 1000), OFFSETS_MIN),
    min_size=1,
    max_size=12,
)
# None: no rollup now; 0: every dirty bucket; n: at most n buckets, claimed hours first, so small
# runs leave days dirty over clean hours and larger ones the reverse.
ROLLUP = st.none() | st.just(0) | st.integers(1, 40)
WHOLE_SPAN = SPAN_DAYS * 24 * 60
RANGES = st.lists(
    st.sampled_from([(0, WHOLE_SPAN), (1, WHOLE_SPAN - 1), (60, 2 * 24 * 60 + 61)])
    | st.tuples(OFFSETS_MIN, OFFSETS_MIN).filter(lambda r: r[0] != r[1]).map(sorted),
    min_size=1,
    max_size=3,
)
STEPS = st.lists(st.tuples(EVENTS, ROLLUP, RANGES), min_size=1, max_size=4)


def _expected(stored, low_us, high_us, *, actor=None, by_actor=False) -> dict:
    found: dict = {}
    for metric, who, quantity, at_us in stored:
        if low_us <= at_us < high_us and (actor is None or who == actor):
            key = (metric, who) if by_actor or actor is not None else metric
            total, count = found.get(key, (0, 0))
            found[key] = (total + quantity, count + 1)
    return found


@settings(max_examples=40, deadline=None)
@given(steps=STEPS)
def test_get_usage_equals_the_raw_sum_at_any_rollup_lag(usage_stub, usage_admin_stub, admin_token, steps):
    tenant = support.new_tenant()  # one per example: examples must not see each other's events
    base = start_of(Period.DAY, now_us() - 7 * DAY_US)
    stored: list[tuple[str, str, int, int]] = []
    for batch, rollup, ranges in steps:
        messages = [
            event(f"e{len(stored) + i}", metric=m, quantity=q, at_us=base + minute * MINUTE_US, actor_id=a)
            for i, (m, a, q, minute) in enumerate(batch)
        ]
        results = record(usage_stub, admin_token, tenant, messages)
        assert all(r.verdict == u.VERDICT_ACCEPTED for r in results)
        stored += [(m, a, q, base + minute * MINUTE_US) for m, a, q, minute in batch]
        if rollup is not None:
            usage_admin_stub.RunRollup(
                u.RunRollupRequest(tenant_id=tenant, max_buckets=rollup),
                metadata=support.bearer(admin_token),
                timeout=30,
            )
        for low, high in ranges:
            low_us, high_us = base + low * MINUTE_US, base + high * MINUTE_US
            assert totals(usage_stub, admin_token, tenant, start_us=low_us, end_us=high_us) == _expected(
                stored, low_us, high_us
            )
            assert totals(
                usage_stub, admin_token, tenant, start_us=low_us, end_us=high_us, group_by_actor=True
            ) == _expected(stored, low_us, high_us, by_actor=True)
            assert totals(
                usage_stub, admin_token, tenant, start_us=low_us, end_us=high_us, actor_id="ann", metrics=[METRICS[0]]
            ) == {k: v for k, v in _expected(stored, low_us, high_us, actor="ann").items() if k[0] == METRICS[0]}


def test_the_read_plan_covers_every_instant_once():
    """The cover's parts are disjoint and together are exactly [start, end), for awkward ranges."""
    base = start_of(Period.DAY, now_us())
    for low, high in [
        (0, 1),
        (1, HOUR_US),
        (0, HOUR_US),
        (HOUR_US - 1, HOUR_US + 1),
        (1, DAY_US - 1),
        (0, DAY_US),
        (1, 3 * DAY_US + 1),
        (-5 * DAY_US - 7, 2 * DAY_US + HOUR_US),
        (-3 * HOUR_US + 5, 2 * HOUR_US - 5),
        (-3 * HOUR_US, DAY_US + 2 * HOUR_US),
    ]:
        cover = plan(base + low, base + high)
        pieces = list(cover.raw) + list(cover.hours) + ([cover.days] if cover.days else [])
        pieces.sort()
        assert pieces[0][0] == base + low and pieces[-1][1] == base + high
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
        assert all(h[0] % HOUR_US == 0 and h[1] % HOUR_US == 0 for h in cover.hours)
        # Each range of hours lies in one day, whose row holds them.
        assert all(start_of(Period.DAY, h[0]) == start_of(Period.DAY, h[1] - 1) for h in cover.hours)
        assert cover.days is None or (cover.days[0] % DAY_US == 0 and cover.days[1] % DAY_US == 0)
