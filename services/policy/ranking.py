"""The ranking of active features: a documented score from the effective mode and usage. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    usage_score = (USER_WEIGHT * math.log10(1 + user_quantity) + TENANT_WEIGHT * math.log10(1 + tenant_quantity)
                   if usage else 0.0)
    return Scored(feature_id, mode_rank, user_quantity, tenant_quantity, float(mode_rank), round(usage_score, 6))


def rank(items: list[Scored]) -> list[Scored]:
    """Highest score first; ties by feature id."""
    return sorted(items, key=lambda item: (-item.score, item.feature_id))
