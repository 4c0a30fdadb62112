"""The quota rule, pure: every case of a quota's cap, which quotas a resolve reads, and the period windows."""

import dataclasses
import itertools
from datetime import UTC, datetime

from tollgate.services.policy.domain.model import (
    Feature,
    Grant,
    Plan,
    QuotaLimit,
    QuotaScope,
    Role,
    Snapshot,
    TenantPolicy,
)
from tollgate.services.policy.domain.modes import HIGHEST, CapSource, Mode
from tollgate.services.policy.domain.quotas import DAY, MONTH, period_window, quota_cap, quota_caps, to_read
from tollgate.services.policy.domain.usage import QuotaUsage, Window

MICROS = 1_000_000
NOW_US = int(datetime(2026, 3, 17, 13, 45, tzinfo=UTC).timestamp() * MICROS)


def plan_snapshot(*quotas: QuotaLimit) -> Snapshot:
    features = {
        "a": Feature("a", "A", "", Mode.AUTONOMOUS, ("m.a",)),
        "b": Feature("b", "B", "", Mode.AUTONOMOUS, ("m.b",)),
        "c": Feature("c", "C", "", Mode.AUTONOMOUS),
    }
    return Snapshot(
        "t",
        1,
        TenantPolicy("t", Mode.AUTONOMOUS, "R"),
        None,
        Plan("P", "P", {}, quotas=quotas),
        {"R": Role("R", "R", {}, Mode.AUTONOMOUS)},
        features,
        {},
    )


def test_every_quota_case_gives_its_cap_exactly_when_reached_or_unknown_and_failing_closed():
    for limit, used, fail_closed, period in itertools.product(
        [0, 1, 100], [None, 0, 99, 100, 101], [False, True], [DAY, MONTH]
    ):
        quota = QuotaLimit("m.a", period, limit, Mode.OBSERVE, fail_closed=fail_closed)
        usage = QuotaUsage(unavailable="down") if used is None else QuotaUsage({("m.a", period, ()): used})
        cap = quota_cap(quota, usage)
        caps = limit == 0 or (used is None and fail_closed) or (used is not None and used >= limit)
        assert cap.source == CapSource.QUOTA
        assert cap.cap == (Mode.OBSERVE if caps else HIGHEST), (limit, used, fail_closed)
        assert cap.detail.startswith(f"quota m.a {limit}/{'day' if period == DAY else 'month'}")


def test_a_metric_without_usage_counts_as_zero_but_unknown_usage_is_none():
    assert QuotaUsage({("m.a", MONTH, ()): 5}).of(("m.b", MONTH, ())) == 0
    assert QuotaUsage({("m.a", MONTH, ()): 5}).of(("m.a", DAY, ())) == 0
    assert QuotaUsage({("m.a", MONTH, ()): 5}, unavailable="down").of(("m.a", MONTH, ())) is None


def test_a_quota_caps_the_features_it_names_else_those_its_metric_measures():
    named = QuotaLimit("m.a", MONTH, 10, Mode.OFF, feature_ids=("b",))
    by_metric = QuotaLimit("m.a", DAY, 10, Mode.OFF)
    snapshot = plan_snapshot(named, by_metric)
    usage = QuotaUsage({("m.a", MONTH, ()): 10, ("m.a", DAY, ()): 10})
    assert [c.detail for c in quota_caps(snapshot, "a", usage, NOW_US, "u")] == [
        "quota m.a 10/day reached: 10 used of 10 allowed"
    ]
    assert [c.detail for c in quota_caps(snapshot, "b", usage, NOW_US, "u")] == [
        "quota m.a 10/month reached: 10 used of 10 allowed"
    ]
    assert quota_caps(snapshot, "c", usage, NOW_US, "u") == []


def test_a_resolve_reads_every_quota_with_a_limit_once_any_applies_and_none_otherwise():
    on_a = QuotaLimit("m.a", MONTH, 10, Mode.OFF)
    on_b = QuotaLimit("m.b", DAY, 5, Mode.OFF)
    zero = QuotaLimit("m.a", DAY, 0, Mode.OFF, feature_ids=("c",))
    snapshot = plan_snapshot(on_a, on_b, zero)
    assert to_read(snapshot, ["a"], NOW_US, "u") == (on_a, on_b)  # one read serves every feature of the tenant
    assert to_read(snapshot, ["c"], NOW_US, "u") == ()  # a limit of 0 caps without asking Usage
    assert to_read(snapshot, [], NOW_US, "u") == ()
    assert to_read(plan_snapshot(), ["a", "b"], NOW_US, "u") == ()


def test_a_user_scoped_quota_of_0_is_read_and_capped_by_its_grant_only_for_the_user_it_was_granted_to():
    zero = QuotaLimit("m.a", DAY, 0, Mode.OFF, scope=QuotaScope.USER)
    granted = Grant("g", "t", "m.a", 3, 0, user_id="alice")
    snapshot = dataclasses.replace(plan_snapshot(zero), grants=(granted,))
    assert to_read(snapshot, ["a"], NOW_US, "alice") == (zero,)
    assert to_read(snapshot, ["a"], NOW_US, "bob") == ()  # a limit of 0 caps bob without asking Usage
    usage = QuotaUsage(user_used={("m.a", DAY, ()): 2})
    [alice] = quota_caps(snapshot, "a", usage, NOW_US, "alice")
    [bob] = quota_caps(snapshot, "a", usage, NOW_US, "bob")
    assert (alice.cap, alice.detail) == (
        HIGHEST,
        "quota m.a 0/day per user not reached: 2 used of 3 allowed (0 + 3 granted)",
    )
    assert (bob.cap, bob.detail) == (Mode.OFF, "quota m.a 0/day per user reached: a limit of 0 allows nothing")


def test_the_period_window_starts_at_the_utc_day_or_month_and_ends_just_after_now():
    now = datetime(2026, 3, 17, 13, 45, 10, 5, tzinfo=UTC)
    end = int(now.timestamp() * MICROS) + 1
    day = int(datetime(2026, 3, 17, tzinfo=UTC).timestamp() * MICROS)
    month = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * MICROS)
    assert period_window(DAY, end - 1) == Window(day, end)
    assert period_window(MONTH, end - 1) == Window(month, end)
    assert Window.ending_at(end - 1, 60) == Window(end - 1 - 60 * MICROS, end)
