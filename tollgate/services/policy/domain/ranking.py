"""The ranking of active features (docs/policy.md, "Ranking"): a score from the effective mode and usage. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tollgate.services.policy.domain.model import Snapshot
from tollgate.services.policy.domain.modes import Mode, Resolution
from tollgate.services.policy.domain.usage import RankingTotals

# A user's own usage counts twice as much as the tenant's: it is the better signal of what they use.
USER_WEIGHT = 2.0
TENANT_WEIGHT = 1.0


@dataclass(frozen=True)
class Scored:
    """A feature's score and the parts it is built from."""

    feature_id: str
    mode_rank: int  # OFF=0 ... AUTONOMOUS=5
    user_quantity: int
    tenant_quantity: int
    mode_score: float
    usage_score: float

    @property
    def score(self) -> float:
        return self.mode_score + self.usage_score


def score(feature_id: str, mode_rank: int, user_quantity: int, tenant_quantity: int, *, usage: bool) -> Scored:
    """score = mode rank + 2·log10(1 + user usage) + log10(1 + tenant usage); usage terms 0 without usage."""
    usage_score = (
        USER_WEIGHT * math.log10(1 + user_quantity) + TENANT_WEIGHT * math.log10(1 + tenant_quantity) if usage else 0.0
    )
    return Scored(feature_id, mode_rank, user_quantity, tenant_quantity, float(mode_rank), round(usage_score, 6))


def rank(items: list[Scored]) -> list[Scored]:
    """Highest score first; ties by feature id."""
    return sorted(items, key=lambda item: (-item.score, item.feature_id))


@dataclass(frozen=True)
class ActiveFeature:
    """A ranked feature: its score with the parts, its resolution, and its display name."""

    scored: Scored
    resolution: Resolution
    display_name: str


def active(resolutions: Iterable[Resolution]) -> list[Resolution]:
    """The resolutions whose effective mode is above OFF."""
    return [resolution for resolution in resolutions if resolution.effective > Mode.OFF]


def rank_active(
    snapshot: Snapshot, resolutions: Iterable[Resolution], totals: RankingTotals | None
) -> list[ActiveFeature]:
    """The active features best first, each scored from its mode and its metrics' totals (None: no usage)."""
    items = {}
    for resolution in active(resolutions):
        feature = snapshot.features[resolution.feature_id]
        user, tenant = totals.of(feature.metrics) if totals is not None else (0, 0)
        scored = score(feature.feature_id, int(resolution.effective) - 1, user, tenant, usage=totals is not None)
        items[feature.feature_id] = ActiveFeature(scored, resolution, feature.display_name)
    return [items[scored.feature_id] for scored in rank([item.scored for item in items.values()])]
