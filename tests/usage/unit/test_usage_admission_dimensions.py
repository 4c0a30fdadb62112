"""Admitting events' dimensions (domain/admission.py), pure: each rule with its own reason, the canonical form, and
the content hash that makes dimension values part of what decides DUPLICATE against CONFLICT."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.admission import MAX_ID_LENGTH, admit_batch, canonical, content_hash
from tollgate.services.usage.domain.buckets import DAY_US
from tollgate.services.usage.domain.catalog import IngestCatalog
from tollgate.services.usage.domain.model import Candidate, Classification, Event, EventBatch, IngestRules, RejectReason

NOW = 19_700 * DAY_US
RULES = IngestRules(future_skew_us=300_000_000, backfill_us=35 * DAY_US, external_prefixes=())
CATALOG = IngestCatalog(
    {"ai.tokens": Classification.BILLABLE, "api.requests": Classification.BILLABLE},
    frozenset(),
    {"ai.tokens": frozenset({"model", "token_type"} | {f"d{n}" for n in range(7)})},
)


def tokens(event_id: str, dimensions=None, metric="ai.tokens") -> Event:
    return Event(event_id, metric, 5, NOW - 60_000_000, "alice", "chat", dimensions=dimensions)


def verdicts(*events: Event) -> list:
    admitted = admit_batch(EventBatch("acme", events), catalog=CATALOG, rules=RULES, now_us=NOW, horizon_us=None)
    by_index = {c.index: c for c in admitted.candidates} | {r.index: r for r in admitted.rejected}
    return [by_index[i] if isinstance(by_index[i], Candidate) else by_index[i].reason for i in range(len(events))]


def test_each_bad_dimension_rejects_its_event_alone_with_its_own_reason():
    found = verdicts(
        tokens("ok", {"model": "gpt-4o", "token_type": "prompt"}),
        tokens("undeclared", {"model": "gpt-4o", "region": "eu"}),
        tokens("not-declared-here", {"model": "gpt-4o"}, metric="api.requests"),
        tokens("too-many", {f"d{n}": "x" for n in range(7)} | {"model": "m", "token_type": "t"}),
        tokens("empty", {"model": ""}),
        tokens("long", {"model": "m" * (MAX_ID_LENGTH + 1)}),
        tokens("nul", {"model": "gpt\x00"}),
        tokens("longest", {"model": "m" * MAX_ID_LENGTH}),
        tokens("none", {}),
    )
    assert found[1:7] == [
        RejectReason.UNDECLARED_DIMENSION,
        RejectReason.UNDECLARED_DIMENSION,
        RejectReason.TOO_MANY_DIMENSIONS,
        RejectReason.EMPTY_DIMENSION_VALUE,
        RejectReason.FIELD_TOO_LONG,
        RejectReason.NUL_CHARACTER,
    ]
    assert [c.dimensions_json for c in (found[0], found[7], found[8])] == [
        '{"model":"gpt-4o","token_type":"prompt"}',
        '{"model":"' + "m" * MAX_ID_LENGTH + '"}',
        None,
    ]


def test_the_rejection_says_which_dimension_and_what_the_metric_declares():
    admitted = admit_batch(
        EventBatch("acme", (tokens("e", {"region": "eu"}),)), catalog=CATALOG, rules=RULES, now_us=NOW, horizon_us=None
    )
    assert "'region'" in admitted.rejected[0].message and "'model'" in admitted.rejected[0].message


def test_an_event_without_dimensions_hashes_as_it_did_before_dimensions_existed():
    event = tokens("e")
    legacy = hashlib.sha256("\x00".join(["ai.tokens", "5", str(NOW - 60_000_000), "alice", "chat", "", ""]).encode())
    assert content_hash(event, None) == content_hash(event, None, None) == legacy.hexdigest()


@settings(max_examples=200, deadline=None)
@given(
    first=st.dictionaries(st.sampled_from(["model", "token_type", "d0"]), st.text(min_size=1, max_size=4), max_size=3),
    second=st.dictionaries(st.sampled_from(["model", "token_type", "d0"]), st.text(min_size=1, max_size=4), max_size=3),
)
def test_two_events_hash_alike_exactly_when_their_dimensions_are_equal(first, second):
    one, other = (tokens("e", d) for d in (first, second))
    hashes = [content_hash(e, None, canonical(e.dimensions) if e.dimensions else None) for e in (one, other)]
    assert (hashes[0] == hashes[1]) == (first == second)
    assert canonical(dict(reversed(list(first.items())))) == canonical(first)
