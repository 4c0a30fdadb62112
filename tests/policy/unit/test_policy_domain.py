"""The effective-mode rule, pure: exhaustive over small cap sets, and properties with hypothesis."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.policy.domain.model import (
    Feature,
    Plan,
    Role,
    Snapshot,
    Subscription,
    SubscriptionStatus,
    TenantPolicy,
)
from tollgate.services.policy.domain.modes import Cap, CapSource, Mode, effective_mode, requested_mode
from tollgate.shared.audit import ZERO_HASH, check_links, new_record

MODES = list(Mode)
SOURCES = [CapSource.ROLE, CapSource.FEATURE, CapSource.PLAN, CapSource.TENANT]


def caps_of(values, sources=SOURCES):
    return [Cap(source, value, source.name.lower()) for source, value in zip(sources, values)]


def test_every_combination_of_three_caps_and_a_request_gives_the_minimum_with_exact_binding_flags():
    for requested, *values in itertools.product(MODES, MODES, MODES, MODES):
        result, basis = effective_mode(requested, caps_of(values))
        assert result == min(requested, *values)
        assert basis[0].source == CapSource.REQUESTED and not basis[0].binding
        assert [e.binding for e in basis[1:]] == [result < requested and v == result for v in values]


def test_an_unspecified_request_means_the_highest_mode():
    assert requested_mode(0) == Mode.AUTONOMOUS
    assert requested_mode(Mode.SUGGEST) == Mode.SUGGEST


def test_the_basis_follows_cap_source_order_whatever_order_caps_arrive_in():
    caps = list(reversed(caps_of([Mode.OFF, Mode.SUGGEST, Mode.OBSERVE, Mode.AUTONOMOUS])))
    quota = Cap(CapSource.QUOTA, Mode.OFF, "scoring.requests over 1000/month")
    _result, basis = effective_mode(Mode.AUTONOMOUS, caps, extra=[quota])
    assert [e.source for e in basis] == [CapSource.REQUESTED, *SOURCES, CapSource.QUOTA]
    assert [e.binding for e in basis] == [False, True, False, False, False, True]


cap_lists = st.lists(st.tuples(st.sampled_from(SOURCES + [CapSource.QUOTA]), st.sampled_from(MODES)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MODES), cap_lists)
def test_the_result_is_never_above_any_cap_or_the_request(requested, pairs):
    result, _basis = effective_mode(requested, [Cap(s, m, "") for s, m in pairs])
    assert result <= requested and all(result <= m for _s, m in pairs)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MODES), cap_lists.filter(bool), st.data())
def test_raising_any_cap_never_lowers_the_result(requested, pairs, data):
    index = data.draw(st.integers(0, len(pairs) - 1))
    source, mode = pairs[index]
    raised = data.draw(st.sampled_from([m for m in MODES if m >= mode]))
    before, _ = effective_mode(requested, [Cap(s, m, "") for s, m in pairs])
    changed = pairs[:index] + [(source, raised)] + pairs[index + 1 :]
    after, _ = effective_mode(requested, [Cap(s, m, "") for s, m in changed])
    assert after >= before


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MODES), cap_lists)
def test_the_entries_marked_binding_are_exactly_those_below_the_request_at_the_results_level(requested, pairs):
    result, basis = effective_mode(requested, [Cap(s, m, "") for s, m in pairs])
    for entry in basis:
        assert entry.binding == (entry.source != CapSource.REQUESTED and entry.cap == result and result < requested)


def snapshot(**changes):
    values = dict(
        tenant_id="t",
        version=1,
        tenant_policy=TenantPolicy("t", Mode.AUTONOMOUS, "VIEWER"),
        subscription=Subscription("t", "PRO", SubscriptionStatus.ACTIVE, {}),
        plan=Plan("PRO", "Pro", {}, Mode.AUTONOMOUS),
        roles={
            "VIEWER": Role("VIEWER", "Viewer", {"f": Mode.OBSERVE}),
            "OWNER": Role("OWNER", "Owner", {}, Mode.AUTONOMOUS),
        },
        features={"f": Feature("f", "F", "", Mode.AUTONOMOUS)},
        overrides={},
        bindings={"boss": ("OWNER",)},
    )
    values.update(changes)
    return Snapshot(**values)


def test_a_user_without_binding_gets_the_default_role_and_the_detail_says_so():
    resolution = snapshot().resolve("someone", "f", Mode.AUTONOMOUS)
    assert resolution.effective == Mode.OBSERVE
    assert resolution.basis[1].detail == "default role VIEWER (no binding)"


def test_a_canceled_subscription_without_inactive_cap_gives_off():
    subscription = Subscription("t", "PRO", SubscriptionStatus.CANCELED, {})
    resolution = snapshot(subscription=subscription).resolve("boss", "f", Mode.AUTONOMOUS)
    assert resolution.effective == Mode.OFF and resolution.basis[3].binding


def test_an_untouched_chain_checks_and_a_changed_field_breaks_it_at_that_record():
    records, previous = [], ZERO_HASH
    for sequence in range(1, 6):
        record = new_record(
            sequence=sequence,
            time_us=sequence,
            actor="a",
            action="SetOverride",
            target="x",
            tenant_id="t",
            change={"n": sequence},
            previous_hash=previous,
        )
        records.append(record)
        previous = record.hash
    assert check_links(records, after_sequence=0, after_hash=ZERO_HASH) == (5, previous, None)
    tampered = records[:2] + [records[2].__class__(**{**records[2].__dict__, "actor": "mallory"})] + records[3:]
    assert check_links(tampered, after_sequence=0, after_hash=ZERO_HASH)[2].sequence == 3


def test_a_snapshot_reuses_an_answer_only_for_the_same_roles_feature_and_request_and_never_with_quota_caps():
    roles = {
        "VIEWER": Role("VIEWER", "Viewer", {"f": Mode.OBSERVE}),
        "OWNER": Role("OWNER", "Owner", {}, Mode.AUTONOMOUS),
    }
    shared = snapshot(roles=roles, bindings={"boss": ("OWNER",), "other": ("OWNER",)})
    assert shared.resolve("boss", "f", Mode.SUGGEST) == shared.resolve("other", "f", Mode.SUGGEST)
    assert shared.resolve("boss", "f", Mode.SUGGEST).effective == Mode.SUGGEST
    assert shared.resolve("boss", "f", Mode.AUTONOMOUS).effective == Mode.AUTONOMOUS
    assert shared.resolve("someone", "f", Mode.AUTONOMOUS).effective == Mode.OBSERVE  # the default role's answer
    quota = Cap(CapSource.QUOTA, Mode.OFF, "quota m 1/day reached")
    capped = shared.resolve("boss", "f", Mode.AUTONOMOUS, [quota])
    assert capped.effective == Mode.OFF and capped.basis[-1].detail == quota.detail
    assert shared.resolve("boss", "f", Mode.AUTONOMOUS).effective == Mode.AUTONOMOUS
