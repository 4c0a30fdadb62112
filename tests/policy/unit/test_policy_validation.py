"""Policy's input checks, pure: each names every bad field at once and normalizes what it accepts."""

import time

import pytest

from tollgate.services.policy import validation
from tollgate.services.policy.domain.model import SubscriptionStatus
from tollgate.services.policy.domain.modes import Mode
from tollgate.services.policy.usage_port import NO_DEADLINE, Deadline
from tollgate.shared.errors import InvalidArgument


def fields(call) -> list[str]:
    with pytest.raises(InvalidArgument) as raised:
        call()
    return [violation.field for violation in raised.value.violations]


def test_a_resolve_names_every_bad_field_at_once():
    assert fields(lambda: validation.resolve_one("", "u" * 129, "", 7, -1)) == [
        "tenant_id",
        "user_id",
        "requested_mode",
        "min_policy_version",
        "feature_id",
    ]
    assert fields(lambda: validation.resolve_many("t", "", ["f", "", *["g"] * 499], 0, 0)) == [
        "user_id",
        "feature_ids",
        "feature_ids[1]",
    ]


def test_a_resolve_asks_for_the_highest_mode_when_none_is_named():
    assert validation.resolve_one("t", "u", "f", 0, 0) == Mode.AUTONOMOUS
    assert validation.resolve_many("t", "u", [], Mode.SUGGEST, 3) == Mode.SUGGEST


def test_the_ranking_window_defaults_to_30_days_and_stops_at_400():
    assert validation.active_features("t", "u", 0, 0) == 30 * 86400
    assert validation.active_features("t", "u", 400 * 86400, 0) == 400 * 86400
    assert fields(lambda: validation.active_features("", "", 400 * 86400 + 1, 0)) == ["tenant_id", "user_id", "window"]
    assert fields(lambda: validation.active_features("t", "u", 5, -1)) == ["window"]


def test_tenant_writes_name_their_fields_under_the_message_they_sit_in():
    assert fields(lambda: validation.tenant_policy("", 9, "bad id")) == [
        "tenant_policy.tenant_id",
        "tenant_policy.max_mode",
        "tenant_policy.default_role_id",
    ]
    assert fields(lambda: validation.subscription("t", "", 9, {"1x": True})) == [
        "subscription.plan_id",
        "subscription.status",
        "subscription.feature_flags['1x']",
    ]
    assert validation.subscription("t", "PRO", 3, {}) == SubscriptionStatus.PAST_DUE
    assert fields(lambda: validation.override("t", "R", "f", 0, "x" * 501)) == ["cap", "reason"]
    assert validation.override("t", "R", "f", Mode.OBSERVE, "") == Mode.OBSERVE


def test_a_deadline_counts_down_and_none_means_no_deadline():
    assert NO_DEADLINE.remaining() is None and Deadline.after(None).remaining() is None
    assert Deadline(time.monotonic() - 1).remaining() == 0.0
    assert 0 < Deadline.after(60).remaining() <= 60


def test_a_quotas_period_scope_and_kind_are_checked_and_unspecified_means_per_tenant_and_soft():
    from typing import cast

    from tollgate.services.policy.domain.model import LimitKind, Plan, QuotaLimit, QuotaScope

    bad = QuotaLimit("m", 5, 1, Mode.OFF, scope=cast(QuotaScope, 9), kind=cast(LimitKind, 7))
    assert fields(lambda: validation.plan(Plan("P", "", {}, quotas=(bad,)), [])) == [
        "plan.quotas[0].period",
        "plan.quotas[0].scope",
        "plan.quotas[0].kind",
    ]
    unset = QuotaLimit("m", 4, 1, Mode.OFF, scope=cast(QuotaScope, 0), kind=cast(LimitKind, 0))
    [quota] = validation.plan(Plan("P", "", {}, quotas=(unset,)), []).quotas
    assert (quota.period, quota.scope, quota.kind) == (4, QuotaScope.TENANT, LimitKind.SOFT)


def test_reserve_and_grant_requests_name_every_bad_field_and_the_ttl_defaults_to_a_minute():
    from tollgate.services.policy.domain.model import Grant

    bad_dimensions = {"Model": "x", "region": "", "tier": "t" * 129, "model": "gpt-4o"}
    assert fields(lambda: validation.reserve("", "", "", 0, 86_401, 0, "", bad_dimensions)) == [
        "tenant_id",
        "user_id",
        "metric",
        "idempotency_key",
        "amount",
        "ttl",
        "dimensions[Model]",
        "dimensions[region]",
        "dimensions[tier]",
    ]
    nine = {f"d{n}": "v" for n in range(9)}
    assert fields(lambda: validation.reserve("t", "u", "m", 1, 0, 0, "k", nine)) == ["dimensions"]
    assert validation.reserve("t", "u", "m", 1, 0, 0, "k", {"model": "gpt-4o"}) == 60_000_000
    assert validation.reserve("t", "u", "m", 1, 0, 1_000, "k", {}) == 1
    assert fields(lambda: validation.grant(Grant("", "t", "m", -1, 10, 10, 2_000_000), 5)) == [
        "grant.amount",
        "grant.priority",
        "grant.expire_time",
    ]
    assert validation.grant(Grant("", "t", "m", 1, 0), 5).effective_us == 5  # unset: now


def test_a_time_zone_needs_an_anchor_and_must_be_a_known_iana_zone():
    assert fields(lambda: validation.subscription("t", "P", 1, {}, None, "Europe/Paris")) == ["subscription.time_zone"]
    assert fields(lambda: validation.subscription("t", "P", 1, {}, 0, "Mars/Olympus")) == ["subscription.time_zone"]
    assert validation.subscription("t", "P", 1, {}, 0, "Asia/Kathmandu") == SubscriptionStatus.ACTIVE
