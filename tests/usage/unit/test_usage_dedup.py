"""Exactly-once planning (domain/dedup.py), pure: rounds against a brute-force model, judging against stored keys."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.dedup import (
    StoredIndex,
    accepted,
    judge_round,
    keys_of,
    lookup_keys,
    plan_round,
    refused,
)
from tollgate.services.usage.domain.model import Candidate, Classification, DedupKey, Event, StoredKeys, Verdict


def candidate(index, event_id, key="", corr="", at=5, business_key=True, digest="h", metric="m"):
    event = Event(event_id, metric, 1, at, "", "s", corr, key)
    return Candidate(index, event, Classification.BILLABLE, None, digest, business_key)


def stored(event_id, key=None, corr=None, at=5, business_key=True, digest="h", metric="m"):
    return StoredKeys(event_id, key, corr, metric, at, digest, business_key)


# Few names, so that batches share keys often.
batches = st.lists(
    st.tuples(
        st.sampled_from("abcd"),
        st.sampled_from(["", "k1", "k2"]),
        st.sampled_from(["", "c1"]),
        st.sampled_from([5, 6]),
        st.booleans(),
    ),
    max_size=10,
).map(lambda rows: [candidate(i, *row) for i, row in enumerate(rows)])


@settings(max_examples=100, deadline=None)
@given(batches)
def test_a_round_holds_exactly_the_events_sharing_no_key_with_an_earlier_one_of_the_batch(batch):
    now, later = plan_round(batch)
    model_now = [c for i, c in enumerate(batch) if not any(set(keys_of(c)) & set(keys_of(b)) for b in batch[:i])]
    assert now == model_now
    assert later == [c for c in batch if c not in model_now]
    for first, second in itertools.combinations(now, 2):
        assert not set(keys_of(first)) & set(keys_of(second))


def test_empty_optional_keys_are_no_keys_and_a_metric_without_the_business_key_has_none():
    assert keys_of(candidate(0, "a")) == [("id", "a")]
    assert keys_of(candidate(0, "a", key="k", corr="c")) == [("id", "a"), ("key", "k"), ("corr", "c", "m", 5)]
    assert keys_of(candidate(0, "a", key="k", corr="c", business_key=False)) == [("id", "a"), ("key", "k")]


def test_a_shared_correlation_id_delays_an_event_only_when_both_metrics_keep_the_business_key():
    first, second = candidate(0, "a", corr="c"), candidate(1, "b", corr="c")
    assert plan_round([first, second]) == ([first], [second])
    kept_apart = candidate(1, "b", corr="c", business_key=False)
    assert plan_round([first, kept_apart]) == ([first, kept_apart], [])


def test_a_refused_event_is_a_duplicate_with_the_same_content_and_a_conflict_otherwise_naming_the_key():
    index = StoredIndex([stored("a", key="k")])
    same = index.judge(candidate(0, "a", key="k"))
    assert (same.verdict, same.dedup_key, same.existing_event_id) == (Verdict.DUPLICATE, DedupKey.EVENT_ID, "a")
    other = index.judge(candidate(1, "b", key="k", digest="other"))
    assert (other.verdict, other.dedup_key, other.existing_event_id) == (
        Verdict.CONFLICT,
        DedupKey.IDEMPOTENCY_KEY,
        "a",
    )
    assert "idempotency_key" in other.message and "different content" in other.message
    assert index.judge(candidate(2, "c")) is None


def test_a_stored_event_without_the_business_key_matches_no_correlation():
    index = StoredIndex([stored("a", corr="c", business_key=False)])
    assert index.judge(candidate(0, "b", corr="c")) is None
    match = StoredIndex([stored("a", corr="c")]).judge(candidate(0, "b", corr="c"))
    assert match.dedup_key is DedupKey.CORRELATION


def test_a_round_accepts_the_inserted_judges_the_refused_and_leaves_the_unmatched_to_go_round_again():
    batch = [candidate(0, "a"), candidate(1, "b"), candidate(2, "c")]
    assert refused(batch, {"a"}) == batch[1:]
    results, unresolved = judge_round(batch, {"a"}, [stored("b")])
    assert results == [accepted(batch[0]), StoredIndex([stored("b")]).judge(batch[1])]
    assert results[1].verdict is Verdict.DUPLICATE and unresolved == [batch[2]]


def test_the_keys_looked_up_are_every_event_id_and_the_non_empty_optional_keys_in_order():
    batch = [candidate(0, "a", key="k", corr="c"), candidate(1, "b"), candidate(2, "c", corr="d", business_key=False)]
    keys = lookup_keys(batch)
    assert keys == (["a", "b", "c"], ["k"], ["c"])
    assert lookup_keys([]) == ([], [], [])
