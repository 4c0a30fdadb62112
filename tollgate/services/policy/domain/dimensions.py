"""Dimension filters on quotas and the dimension values of reservations (docs/entitlements.md, "Dimension
filters"). Pure Python.

A quota with filters counts only its metric's usage whose value of each filtered dimension is one of the values
allowed, as Usage's QueryUsage filters do: a dimension the usage leaves out has the empty value, so allowing ""
matches it. A reservation carries the dimension values of the usage it holds for; it counts in a quota when they
match the quota's filters, and its commit's usage event carries them. The shape rules are Usage's own, so a value
Policy accepts is one Usage stores.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from tollgate.shared.errors import FieldViolation

V = TypeVar("V")

# ((dimension, (allowed values, sorted)), ...) sorted by dimension: hashable, and one spelling per filter.
Filters = tuple[tuple[str, tuple[str, ...]], ...]

DIMENSION_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")  # Usage's catalog rule
MAX_DIMENSIONS = 8
MAX_VALUE = 128  # characters, Usage's bound on an event's dimension value
MAX_FILTER_VALUES = 100


def filters_of(given: Mapping[str, Iterable[str]]) -> Filters:
    """The canonical form of a {dimension: values} mapping (values deduplicated and sorted)."""
    return tuple(sorted((name, tuple(sorted(set(values)))) for name, values in given.items()))


def as_mapping(filters: Filters) -> dict[str, list[str]]:
    """The filters as {dimension: [values]}, as they are given and stored."""
    return {name: list(values) for name, values in filters}


def canonical(dimensions: Mapping[str, str]) -> str:
    """The stored form of a reservation's dimension values, as Usage stores an event's: compact JSON with sorted
    keys; '' for none."""
    if not dimensions:
        return ""
    return json.dumps(dict(dimensions), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=4096)
def parsed(stored: str) -> dict[str, str]:
    """The values of a stored (canonical) form; the forms in use are few, so each is parsed once."""
    return json.loads(stored) if stored else {}


def matches(filters: Filters, stored: str) -> bool:
    """Whether usage with the stored dimension values counts in a quota with `filters`."""
    if not filters:
        return True
    values = parsed(stored)
    return all(values.get(name, "") in allowed for name, allowed in filters)


def describe(filters: Filters) -> str:
    """The filters as a label shows them: `{model=gpt-4o|gpt-4o-mini, region=eu}`; '' for none."""
    if not filters:
        return ""
    return "{" + ", ".join(f"{name}={'|'.join(values)}" for name, values in filters) + "}"


def filter_violations(filters: Mapping[str, list[str]], path: str) -> list[FieldViolation]:
    """What is wrong with a quota's filters as given, before any catalog is consulted."""
    return _violations(filters, path, _filter_problem)


def value_violations(dimensions: Mapping[str, str], path: str) -> list[FieldViolation]:
    """What is wrong with dimension values as given (Reserve, CheckEntitlement), before any catalog is consulted."""
    return _violations(dimensions, path, _value_problem)


def _violations(given: Mapping[str, V], path: str, problem: Callable[[V], str]) -> list[FieldViolation]:
    """Too many dimensions, and per dimension (in name order) a bad name or what `problem` finds in its entry."""
    violations = []
    if len(given) > MAX_DIMENSIONS:
        violations.append(FieldViolation(path, f"names {len(given)} dimensions; at most {MAX_DIMENSIONS}"))
    for name, entry in sorted(given.items()):
        why = problem(entry) if DIMENSION_PATTERN.fullmatch(name) else "must be a dimension name: [a-z][a-z0-9_]{0,31}"
        if why:
            violations.append(FieldViolation(f"{path}[{name[:64]}]", why))
    return violations


def _filter_problem(values: list[str]) -> str:
    if not 1 <= len(values) <= MAX_FILTER_VALUES:
        return f"must hold 1 to {MAX_FILTER_VALUES} values"
    if any(len(v) > MAX_VALUE or "\x00" in v for v in values):
        return f"values must be at most {MAX_VALUE} characters, without NUL"
    return ""


def _value_problem(value: str) -> str:
    if not value:
        return "is empty: leave the dimension out instead"
    if len(value) > MAX_VALUE or "\x00" in value:
        return f"must be at most {MAX_VALUE} characters, without NUL"
    return ""
