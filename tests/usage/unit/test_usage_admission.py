"""Admitting events (domain/admission.py), pure: each rule, the batch's checks, the horizon, the content hash."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.admission import (
    MAX_BATCH,
    MAX_ID_LENGTH,
    MAX_METADATA_BYTES,
    MAX_QUANTITY,
    admit,
    admit_batch,
    check_batch,
    classification_names,
    content_hash,
    in_order,
)
from tollgate.services.usage.domain.buckets import DAY_US, Period, start_of
from tollgate.services.usage.domain.catalog import IngestCatalog
from tollgate.services.usage.domain.dedup import accepted
from tollgate.services.usage.domain.model import (
    Candidate,
    Classification,
    Event,
    EventBatch,
    IngestRules,
    RejectReason,
    Verdict,
)
from tollgate.shared.errors import InvalidArgument

NOW = 19_700 * DAY_US + 12 * 3_600_000_000
RULES = IngestRules(future_skew_us=300_000_000, backfill_us=35 * DAY_US, external_prefixes=("ext-",))
CLASSES = {"api.requests": Classification.BILLABLE, "sla.timers.started": Classification.NON_BILLABLE}
CATALOG = IngestCatalog(CLASSES, frozenset({"sla.timers.started"}))


def event(event_id="e", metric="api.requests", quantity=1, at=NOW, **fields):
    return Event(
        event_id, metric, quantity, at, fields.pop("actor_id", ""), fields.pop("source_service", "svc"), **fields
    )


def reason(e):
    found = admit(0, e, catalog=CLASSES, rules=RULES, now_us=NOW)
    return None if isinstance(found, Candidate) else found.reason


@pytest.mark.parametrize(
    "bad, expected",
    [
        (event(event_id=""), RejectReason.MISSING_FIELD),
        (event(source_service=""), RejectReason.MISSING_FIELD),
        (event(at=None), RejectReason.MISSING_FIELD),
        (event(metric="nope"), RejectReason.UNKNOWN_METRIC),
        (event(quantity=0), RejectReason.NON_POSITIVE_QUANTITY),
        (event(quantity=MAX_QUANTITY + 1), RejectReason.QUANTITY_TOO_LARGE),
        (event(at=NOW + RULES.future_skew_us + 1), RejectReason.IN_FUTURE),
        (event(at=NOW - RULES.backfill_us - 1), RejectReason.TOO_OLD),
        (event(event_id="x" * (MAX_ID_LENGTH + 1)), RejectReason.FIELD_TOO_LONG),
        (event(actor_id="a\x00"), RejectReason.NUL_CHARACTER),
        (event(metadata={"k": ["\x00"]}), RejectReason.NUL_CHARACTER),
        (event(metadata={"k": "x" * MAX_METADATA_BYTES}), RejectReason.METADATA_TOO_LARGE),
        (event(source_service="ext-crm"), RejectReason.EXTERNAL_BILLABLE),
    ],
)
def test_each_rule_rejects_its_event_with_its_reason(bad, expected):
    assert reason(bad) is expected


def test_a_valid_event_at_the_edges_of_its_window_is_admitted_with_canonical_metadata():
    for at in (NOW + RULES.future_skew_us, NOW - RULES.backfill_us):
        edge = event(at=at, quantity=MAX_QUANTITY, source_service="ext-crm", metric="sla.timers.started")
        assert reason(edge) is None
    found = admit(3, event(metadata={"b": 1, "a": "é"}), catalog=CLASSES, rules=RULES, now_us=NOW)
    assert found.index == 3 and found.metadata_json == '{"a":"é","b":1}'


def test_a_batch_is_invalid_when_empty_too_large_or_of_a_malformed_tenant():
    for batch in (EventBatch("t", ()), EventBatch("t", (event(),) * (MAX_BATCH + 1)), EventBatch("", (event(),))):
        with pytest.raises(InvalidArgument):
            check_batch(batch)
    check_batch(EventBatch("t", (event(),) * MAX_BATCH))


def test_the_content_hash_covers_what_happened_and_not_the_identifiers():
    base = content_hash(event(), None)
    assert content_hash(event(event_id="other", idempotency_key="k"), None) == base
    for changed in (
        event(quantity=2),
        event(at=NOW + 1),
        event(actor_id="a"),
        event(source_service="s2"),
        event(correlation_id="c"),
        event(metric="sla.timers.started"),
    ):
        assert content_hash(changed, None) != base
    assert content_hash(event(), '{"a":1}') != base


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["api.requests", "sla.timers.started", "nope"]), st.integers(-40, 1), st.integers(0, 3)
        ),
        min_size=1,
        max_size=20,
    ),
    st.one_of(st.none(), st.integers(-40, 0)),
)
def test_every_event_of_a_batch_is_admitted_or_rejected_once_against_the_catalog_and_the_horizon(rows, horizon_day):
    batch = EventBatch(
        "t",
        tuple(event(f"e{i}", metric, quantity, NOW + day * DAY_US) for i, (metric, day, quantity) in enumerate(rows)),
    )
    horizon = None if horizon_day is None else NOW + horizon_day * DAY_US
    admitted = admit_batch(batch, catalog=CATALOG, rules=RULES, now_us=NOW, horizon_us=horizon)
    results = in_order([accepted(c) for c in admitted.candidates] + admitted.rejected)
    assert [r.index for r in results] == list(range(len(batch.events)))
    for candidate in admitted.candidates:
        at = candidate.event.occurred_at_us
        assert horizon is None or all(start_of(p, at) >= horizon for p in Period)
        assert candidate.business_key == (candidate.event.metric not in CATALOG.without_business_key)
    for result in admitted.rejected:
        assert result.verdict is Verdict.REJECTED and result.reason is not None


def test_an_event_in_a_purged_week_is_rejected_too_old_naming_the_horizon():
    horizon = start_of(Period.MONTH, NOW)
    batch = EventBatch("t", (event(at=horizon + 1),))
    admitted = admit_batch(batch, catalog=CATALOG, rules=RULES, now_us=NOW, horizon_us=horizon)
    assert admitted.candidates == [] and admitted.rejected[0].reason is RejectReason.TOO_OLD
    assert "2023-12-01T00:00:00Z" in admitted.rejected[0].message


def test_each_event_of_a_catalog_metric_is_counted_under_its_classification():
    batch = EventBatch("t", (event(metric="sla.timers.started"), event(metric="nope"), event()))
    assert classification_names(batch, CLASSES) == {0: "NON_BILLABLE", 2: "BILLABLE"}
