"""The bound on distinct dimension combinations, pure: which new combinations fit (domain/admission.py), the events
refused for the others, and the per-process cache of known ones (service/ingest.py's KnownCombinations)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.admission import admit_batch, beyond_limit, combinations, refuse_combinations
from tollgate.services.usage.domain.buckets import DAY_US
from tollgate.services.usage.domain.catalog import IngestCatalog
from tollgate.services.usage.domain.model import Classification, Event, EventBatch, IngestRules, RejectReason
from tollgate.services.usage.service.ingest import KnownCombinations

NOW = 19_700 * DAY_US
RULES = IngestRules(future_skew_us=300_000_000, backfill_us=35 * DAY_US, external_prefixes=())
CATALOG = IngestCatalog(
    {"ai.tokens": Classification.BILLABLE, "ai.calls": Classification.BILLABLE},
    frozenset(),
    {"ai.tokens": frozenset({"model", "token_type"}), "ai.calls": frozenset({"model"})},
)


def admitted(*events: Event):
    return admit_batch(EventBatch("acme", events), catalog=CATALOG, rules=RULES, now_us=NOW, horizon_us=None)


def call(event_id: str, metric: str = "ai.tokens", **dimensions: str) -> Event:
    return Event(event_id, metric, 5, NOW - 60_000_000, "alice", "chat", dimensions=dimensions or None)


def test_combinations_are_distinct_in_the_order_of_their_first_event_and_none_without_dimensions():
    batch = admitted(
        call("a", model="m1"),
        call("b"),
        call("c", model="m2", token_type="prompt"),
        call("d", token_type="prompt", model="m2"),  # the same combination: canonical JSON sorts the keys
        call("e", metric="ai.calls", model="m1"),
    )
    assert combinations(batch.candidates) == [
        ("ai.tokens", '{"model":"m1"}'),
        ("ai.tokens", '{"model":"m2","token_type":"prompt"}'),
        ("ai.calls", '{"model":"m1"}'),
    ]


def test_the_first_new_combinations_fit_and_each_metric_has_its_own_room():
    new = [("a", "1"), ("b", "1"), ("a", "2"), ("a", "3"), ("b", "2")]
    assert beyond_limit(new, {"a": 1}, limit=3) == {("a", "3")}
    assert beyond_limit(new, {"a": 3, "b": 3}, limit=3) == set(new)
    assert beyond_limit(new, {}, limit=10) == set()


@settings(max_examples=200, deadline=None)
@given(
    new=st.lists(st.tuples(st.sampled_from("abc"), st.text("xyz", min_size=1, max_size=3)), unique=True, max_size=30),
    counts=st.dictionaries(st.sampled_from("abc"), st.integers(0, 12)),
    limit=st.integers(1, 10),
)
def test_no_metric_ever_passes_the_limit_and_every_combination_with_room_fits(new, counts, limit):
    refused = beyond_limit(new, counts, limit)
    for metric in "abc":
        let_in = [c for c in new if c[0] == metric and c not in refused]
        assert len(let_in) == max(0, min(limit - counts.get(metric, 0), len([c for c in new if c[0] == metric])))
        # The ones let in are the first of the metric's new ones.
        assert let_in == [c for c in new if c[0] == metric][: len(let_in)]


def test_events_of_a_refused_combination_are_rejected_with_their_reason_and_the_others_kept():
    batch = admitted(call("a", model="m1"), call("b", model="m2"), call("c"), call("d", model="m2"))
    kept = refuse_combinations(batch, {("ai.tokens", '{"model":"m2"}')}, limit=1)
    assert [c.event.event_id for c in kept.candidates] == ["a", "c"]
    assert [(r.event_id, r.reason) for r in kept.rejected] == [
        ("b", RejectReason.TOO_MANY_DIMENSION_COMBINATIONS),
        ("d", RejectReason.TOO_MANY_DIMENSION_COMBINATIONS),
    ]
    assert "1 distinct combinations" in kept.rejected[0].message and '{"model":"m2"}' in kept.rejected[0].message
    assert refuse_combinations(batch, set(), limit=1) is batch


def test_known_combinations_are_per_tenant_and_the_least_recently_used_leave_first():
    known = KnownCombinations(capacity=3)
    known.add("t1", [("m", "1"), ("m", "2")])
    known.add("t2", [("m", "1")])
    assert known.unknown("t1", [("m", "1"), ("m", "3")]) == [("m", "3")]  # and ("m", "1") of t1 is used again
    assert known.unknown("t3", [("m", "1")]) == [("m", "1")]
    known.add("t1", [("m", "3")])  # the fourth: ("m", "2") of t1, least recently used, leaves
    assert known.unknown("t1", [("m", "1"), ("m", "2"), ("m", "3")]) == [("m", "2")]
    assert known.unknown("t2", [("m", "1")]) == []
