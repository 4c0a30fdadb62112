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
from collections.abc import Iterable, Mapping

from tollgate.shared.errors import FieldViolation

# ((dimension, (allowed values, sorted)), ...) sorted by dimension: hashable, and one spelling per filter.
Filters = tuple[tuple[str, tuple[str, ...]], ...]

DIMENSION_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")  # Usage's catalog rule
MAX_DIMENSIONS = 8
MAX_VALUE = 128  # characters, Usage's bound on an event's dimension value
MAX_FILTER_VALUES = 100


def filters_of(given: Mapping[str, Iterable[str]]) -> Filters:
    """The canonical form of a {dimension: values} mapping (values deduplicated and sorted)."""
    return tuple(sorted((name, tuple(sorted(set(values)))) for name, values in given.items()))


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
    violations = []
    if len(filters) > MAX_DIMENSIONS:
        violations.append(FieldViolation(path, f"names {len(filters)} dimensions; at most {MAX_DIMENSIONS}"))
    for name, values in sorted(filters.items()):
        field = f"{path}[{name[:64]}]"
        if not DIMENSION_PATTERN.fullmatch(name):
            violations.append(FieldViolation(field, "must be a dimension name: [a-z][a-z0-9_]{0,31}"))
        elif not 1 <= len(values) <= MAX_FILTER_VALUES:
            violations.append(FieldViolation(field, f"must hold 1 to {MAX_FILTER_VALUES} values"))
        elif any(len(v) > MAX_VALUE or "\x00" in v for v in values):
            violations.append(FieldViolation(field, f"values must be at most {MAX_VALUE} characters, without NUL"))
    return violations


def value_violations(dimensions: Mapping[str, str], path: str) -> list[FieldViolation]:
    """What is wrong with dimension values as given (Reserve, CheckEntitlement), before any catalog is consulted."""
    violations = []
    if len(dimensions) > MAX_DIMENSIONS:
        violations.append(FieldViolation(path, f"holds {len(dimensions)} dimensions; at most {MAX_DIMENSIONS}"))
    for name, value in sorted(dimensions.items()):
        field = f"{path}[{name[:64]}]"
        if not DIMENSION_PATTERN.fullmatch(name):
            violations.append(FieldViolation(field, "must be a dimension name: [a-z][a-z0-9_]{0,31}"))
        elif not value:
            violations.append(FieldViolation(field, "is empty: leave the dimension out instead"))
        elif len(value) > MAX_VALUE or "\x00" in value:
            violations.append(FieldViolation(field, f"must be at most {MAX_VALUE} characters, without NUL"))
    return violations
