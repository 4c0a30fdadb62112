"""The ranking, pure: the score's parts, the order, and what a ranking without usage looks like."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.policy.domain import ranking
from tollgate.services.policy.domain.model import Feature, Plan, Role, Snapshot, TenantPolicy
from tollgate.services.policy.domain.modes import Mode, resolve
from tollgate.services.policy.domain.usage import RankingTotals


def snapshot(*features: Feature) -> Snapshot:
    return Snapshot(
        "t",
        1,
        TenantPolicy("t", Mode.AUTONOMOUS, "R"),
        None,
        Plan("P", "P", {}),
        {"R": Role("R", "R", {}, Mode.AUTONOMOUS)},
        {f.feature_id: f for f in features},
        {},
    )


def test_the_score_is_the_mode_rank_plus_twice_the_users_and_once_the_tenants_log_usage():
    scored = ranking.score("f", 2, 99, 999, usage=True)
    assert (scored.mode_score, scored.usage_score, scored.score) == (2.0, 7.0, 9.0)
    assert ranking.score("f", 2, 99, 999, usage=False).usage_score == 0.0


def test_features_at_off_are_dropped_and_the_rest_ranked_by_score_then_id():
    features = [
        Feature("a", "A", "", Mode.AUTONOMOUS, ("m.a",)),
        Feature("b", "B", "", Mode.AUTONOMOUS, ("m.b",)),
        Feature("c", "C", "", Mode.AUTONOMOUS, ("m.a", "m.b")),
        Feature("d", "D", "", Mode.AUTONOMOUS),
    ]
    resolutions = [
        resolve("a", Mode.SUGGEST, []),
        resolve("b", Mode.SUGGEST, []),
        resolve("c", Mode.OFF, []),
        resolve("d", Mode.SUGGEST, []),
    ]
    totals = RankingTotals({"m.a": 9, "m.b": 99}, {"m.b": 9})
    ranked = ranking.rank_active(snapshot(*features), resolutions, totals)
    assert [item.scored.feature_id for item in ranked] == ["b", "a", "d"]
    assert (ranked[0].scored.user_quantity, ranked[0].scored.tenant_quantity) == (9, 99)
    assert ranked[0].display_name == "B" and ranked[0].resolution.effective == Mode.SUGGEST
    without = ranking.rank_active(snapshot(*features), resolutions, None)
    assert [item.scored.feature_id for item in without] == ["a", "b", "d"]
    assert all(item.scored.usage_score == 0 for item in without)


def test_a_features_quantities_sum_its_metrics():
    assert RankingTotals({"x": 1, "y": 2, "z": 4}, {"y": 8}).of(("x", "y")) == (8, 3)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5), st.integers(0, 10**12), st.integers(0, 10**12), st.integers(1, 10**6))
def test_more_usage_of_the_users_own_never_lowers_a_score(rank, user, tenant, more):
    assert (
        ranking.score("f", rank, user + more, tenant + more, usage=True).score
        >= ranking.score("f", rank, user, tenant, usage=True).score
    )
