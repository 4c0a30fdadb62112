"""Modes, caps and the effective-mode rule (docs/policy.md, "Effective mode"). Pure Python."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class Mode(IntEnum):
    """How much a feature may act on its own, lowest first; values match the proto enum."""

    OFF = 1
    OBSERVE = 2
    SUGGEST = 3
    PROACTIVE = 4
    AMBITIOUS = 5
    AUTONOMOUS = 6


class CapSource(IntEnum):
    """Where a cap comes from; the basis lists entries in this order (values match the proto enum)."""

    REQUESTED = 1
    ROLE = 2
    FEATURE = 3
    PLAN = 4
    TENANT = 5
    QUOTA = 6


HIGHEST = Mode.AUTONOMOUS


@dataclass(frozen=True)
class Cap:
    """One source's cap on a feature, with what set it (role id, plan id, override id...)."""

    source: CapSource
    cap: Mode
    detail: str


@dataclass(frozen=True)
class BasisEntry:
    """A cap as shown in an answer: `binding` when it set the result below the request."""

    source: CapSource
    cap: Mode
    detail: str
    binding: bool


@dataclass(frozen=True)
class Resolution:
    """The effective mode of one feature for one user, and why."""

    feature_id: str
    requested: Mode
    effective: Mode
    basis: tuple[BasisEntry, ...]


def requested_mode(value: int) -> Mode:
    """The mode asked for; unspecified (0) means the highest the caller may have."""
    return Mode(value) if value else HIGHEST


def effective_mode(
    requested: Mode, caps: Iterable[Cap], extra: Iterable[Cap] = ()
) -> tuple[Mode, tuple[BasisEntry, ...]]:
    """min(requested, every cap) and the basis in CapSource order; `extra` takes later sources (quotas)."""
    considered = sorted([*caps, *extra], key=lambda cap: cap.source)  # stable: same-source caps keep their order
    result = min([requested, *(cap.cap for cap in considered)])
    below = result < requested
    basis = [BasisEntry(CapSource.REQUESTED, requested, "requested", False)]
    basis += [BasisEntry(c.source, c.cap, c.detail, below and c.cap == result) for c in considered]
    return result, tuple(basis)


def resolve(feature_id: str, requested: Mode, caps: Iterable[Cap], extra: Iterable[Cap] = ()) -> Resolution:
    """A Resolution of `feature_id` from its caps."""
    effective, basis = effective_mode(requested, caps, extra)
    return Resolution(feature_id, requested, effective, basis)
