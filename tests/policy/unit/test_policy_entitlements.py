"""Balances, pure (domain/entitlements.py): the formula, the burn order, grants starting, expiring and voided
mid-period, which quota decides, which refuses a reservation, and the quota caps that agree with them."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.policy.domain.entitlements import (
    EXPIRED,
    OPEN,
    Reservation,
    balance_of,
    burn_order,
    decide,
    event_id_of,
    refusal,
    reservation_of_event,
)
from tollgate.services.policy.domain.model import Grant, LimitKind, QuotaLimit, QuotaScope
from tollgate.services.policy.domain.modes import HIGHEST, Mode
from tollgate.services.policy.domain.periods import DAY, MONTH
from tollgate.services.policy.domain.quotas import quota_cap
from tollgate.services.policy.domain.usage import QuotaUsage

WINDOW = (1_000, 2_000)
HARD = QuotaLimit("m", MONTH, 100, Mode.OFF, kind=LimitKind.HARD)
SOFT = QuotaLimit("m", MONTH, 100, Mode.OBSERVE)


def grant(
    grant_id: str, amount: int, *, priority: int = 0, effective: int = 0, expires=None, void=None, user: str = ""
) -> Grant:
    return Grant(grant_id, "t", "m", amount, effective, expires, priority, void_us=void, user_id=user)


def test_balance_is_allowance_plus_active_grants_minus_usage_minus_reservations_never_below_zero():
    b = balance_of(HARD, WINDOW, [grant("g1", 50)], used=60, reserved=30, at_us=1_500, user_id="u")
    assert (b.allowed, b.balance, b.overage, b.exhausted) == (150, 60, 0, False)
    b = balance_of(HARD, WINDOW, [grant("g1", 50)], used=170, reserved=30, at_us=1_500, user_id="u")
    assert (b.balance, b.overage, b.exhausted) == (0, 20, True)
    assert balance_of(
        HARD, WINDOW, [], used=100, reserved=0, at_us=1_500, user_id="u"
    ).exhausted  # reaching the limit exhausts
    assert not balance_of(
        HARD, WINDOW, [], used=99, reserved=50, at_us=1_500, user_id="u"
    ).exhausted  # claims never exhaust


def test_grants_count_only_while_effective_not_expired_and_not_voided():
    grants = [
        grant("later", 10, effective=1_600),
        grant("ended", 20, expires=1_400),
        grant("voided", 40, void=1_450),
        grant("live", 80, effective=1_000, expires=1_900),
    ]
    assert balance_of(HARD, WINDOW, grants, used=0, reserved=0, at_us=1_300, user_id="u").granted == 20 + 40 + 80
    assert balance_of(HARD, WINDOW, grants, used=0, reserved=0, at_us=1_500, user_id="u").granted == 80
    assert balance_of(HARD, WINDOW, grants, used=0, reserved=0, at_us=1_700, user_id="u").granted == 10 + 80
    assert (
        balance_of(HARD, WINDOW, grants, used=0, reserved=0, at_us=1_900, user_id="u").granted == 10
    )  # expiry is exclusive


def test_a_grant_counts_in_its_metric_and_its_owners_scope_only():
    other = Grant("g", "t", "other", 10, 0)
    assert balance_of(HARD, WINDOW, [other], used=0, reserved=0, at_us=1_500, user_id="u").granted == 0
    per_user = QuotaLimit("m", DAY, 5, Mode.OFF, scope=QuotaScope.USER, kind=LimitKind.HARD)
    grants = [grant("tenant", 10), grant("alice", 20, user="alice"), grant("bob", 40, user="bob")]
    # The tenant's grant in tenant-scoped quotas, whoever asks; a user's grant in that user's user-scoped quotas.
    assert [balance_of(HARD, WINDOW, grants, used=0, reserved=0, at_us=1_500, user_id=u).granted for u in "ab"] == [
        10,
        10,
    ]
    granted = {
        who: balance_of(per_user, WINDOW, grants, used=0, reserved=0, at_us=1_500, user_id=who).granted
        for who in ("alice", "bob", "carol", "")
    }
    assert granted == {"alice": 20, "bob": 40, "carol": 0, "": 0}
    b = balance_of(per_user, WINDOW, grants, used=12, reserved=3, at_us=1_500, user_id="alice")
    assert (b.allowed, b.balance, [(p.grant.grant_id, p.remaining) for p in b.grants]) == (25, 10, [("alice", 10)])


def test_burn_order_is_allowance_then_priority_then_earliest_expiry_then_effective_time_then_id():
    grants = [
        grant("paid", 100, priority=5),
        grant("promo_late", 10, priority=1, expires=1_900),
        grant("promo_soon", 10, priority=1, expires=1_800),
        grant("promo_b", 10, priority=1),
        grant("promo_a", 10, priority=1),
    ]
    assert [g.grant_id for g in burn_order(grants)] == ["promo_soon", "promo_late", "promo_a", "promo_b", "paid"]
    b = balance_of(HARD, WINDOW, grants, used=115, reserved=10, at_us=1_500, user_id="u")  # 25 beyond the allowance
    assert [(p.grant.grant_id, p.remaining) for p in b.grants] == [
        ("promo_soon", 0),
        ("promo_late", 0),
        ("promo_a", 5),
        ("promo_b", 10),
        ("paid", 100),
    ]


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(0, 1_000),
    amounts=st.lists(st.tuples(st.integers(1, 500), st.integers(-3, 3)), max_size=6),
    used=st.integers(0, 4_000),
    reserved=st.integers(0, 1_000),
)
def test_what_remains_of_allowance_and_grants_is_the_balance_and_grants_burn_in_order(limit, amounts, used, reserved):
    quota = QuotaLimit("m", MONTH, limit, Mode.OFF, kind=LimitKind.HARD)
    grants = [grant(f"g{i}", amount, priority=priority) for i, (amount, priority) in enumerate(amounts)]
    b = balance_of(quota, WINDOW, grants, used=used, reserved=reserved, at_us=1_500, user_id="u")
    assert b.balance == max(0, limit + sum(a for a, _ in amounts) - used - reserved)
    allowance_left = max(0, limit - used - reserved)
    assert allowance_left + sum(p.remaining for p in b.grants) == b.balance
    burned = [p.grant.amount - p.remaining for p in b.grants]
    # A grant is touched only once every grant before it in the burn order is spent.
    for earlier, later in zip(b.grants, b.grants[1:]):
        assert earlier.remaining == 0 or later.remaining == later.grant.amount
    assert sum(burned) == min(sum(a for a, _ in amounts), max(0, used + reserved - limit))


def test_the_least_balance_decides_a_hard_quota_before_a_soft_one_on_a_tie_then_plan_order():
    day = QuotaLimit("m", DAY, 10, Mode.OFF, kind=LimitKind.HARD)
    month = QuotaLimit("m", MONTH, 100, Mode.OFF)
    balances = [balance_of(q, WINDOW, [], used=5, reserved=0, at_us=1_500, user_id="u") for q in (month, day)]
    assert [b.decides for b in decide(balances)] == [False, True]
    tie = [balance_of(q, WINDOW, [], used=100, reserved=0, at_us=1_500, user_id="u") for q in (SOFT, HARD)]
    assert [b.decides for b in decide(tie)] == [False, True]
    assert decide([]) == []


def test_only_a_hard_quota_short_of_the_amount_refuses_and_the_shortest_is_named():
    soft = balance_of(SOFT, WINDOW, [], used=100, reserved=0, at_us=1_500, user_id="u")
    hard = balance_of(HARD, WINDOW, [], used=90, reserved=0, at_us=1_500, user_id="u")
    assert refusal([soft], 1_000) is None  # a soft quota takes anything
    assert refusal([soft, hard], 10) is None  # exactly the balance fits
    assert refusal([soft, hard], 11) is hard
    assert hard.detail() == "quota m 100/month hard: 90 used of 100 allowed"


def test_an_exhausted_quota_caps_its_features_exactly_when_its_balance_says_exhausted():
    for used in (0, 99, 100, 149, 150, 151):
        for granted in (0, 50):
            grants = [grant("g", granted)] if granted else []
            b = balance_of(SOFT, WINDOW, grants, used=used, reserved=0, at_us=1_500, user_id="u")
            cap = quota_cap(SOFT, QuotaUsage({("m", MONTH, ()): used}), b.granted)
            assert (cap.cap == Mode.OBSERVE) == b.exhausted
            assert cap.cap in (Mode.OBSERVE, HIGHEST)


def test_a_reservation_past_its_expiry_reads_as_expired_and_its_event_id_leads_back_to_it():
    r = Reservation("rsv_1", "t", "u", "m", 5, "k", OPEN, 0, 1_000)
    assert r.state_at(999) == OPEN
    assert r.state_at(1_000) == EXPIRED
    assert reservation_of_event(event_id_of("rsv_1")) == "rsv_1"
