"""AIP-158 pagination: opaque page tokens bound to the tenant and filter they were issued for, and the one
page type every listing of both services returns.

A listing reads the request with `start`, fetches `cursor.limit + 1` rows after `cursor.after`, and returns
`cursor.page(rows, key)`:

    cursor = pagination.start(page_size, page_token, scope, shape=(int, str))
    rows = repository.list_x(session, after=cursor.after, limit=cursor.limit + 1)
    return cursor.page(rows, lambda x: (x.time_us, x.x_id))
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tollgate.shared.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Keys are ids and names, all far shorter; a longer string cannot be a position any listing issued.
MAX_KEY_LENGTH = 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing and the token that continues it (empty on the last page)."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a listing resumes: at most `limit` items after `after` (None: from the start), within `scope`."""

    limit: int
    after: tuple | None
    scope: dict

    def page(self, fetched: list[T], key: Callable[[T], tuple]) -> Page[T]:
        """The page of `fetched` (read with limit + 1) and the token of the next one, keyed by `key`."""
        if len(fetched) <= self.limit:
            return Page(fetched, "")
        items = fetched[: self.limit]
        return Page(items, encode(list(key(items[-1])), self.scope))


def start(requested: int, token: str, scope: dict, *, shape: tuple[type, ...], field: str = "page_token") -> Cursor:
    """The cursor of a request to a listing keyed by values of the types in `shape` (int or str).

    Tokens are opaque but not signed: a forged position is checked here, before it reaches SQL, to be one
    a listing could have issued (an int64 or a string without NUL for each key).
    """
    limit = page_size(requested)
    position = decode(token, scope, field)
    if position is None:
        return Cursor(limit, None, scope)
    if len(position) != len(shape) or not all(_fits(item, kind) for item, kind in zip(position, shape)):
        raise InvalidArgument(FieldViolation(field, "is not a page token of this listing"))
    return Cursor(limit, tuple(position), scope)


def page_size(requested: int, field: str = "page_size") -> int:
    """The page size to use: default when 0, at most MAX_PAGE_SIZE, never negative."""
    if requested < 0:
        raise InvalidArgument(FieldViolation(field, "must not be negative"))
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode(position: list, scope: dict) -> str:
    """A token that resumes after `position` (a JSON-able list), valid only for `scope`."""
    payload = json.dumps({"p": position, "b": _binding(scope)}, separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode(token: str, scope: dict, field: str = "page_token") -> list | None:
    """The position in `token`, or None for an empty token; INVALID_ARGUMENT when it is not ours
    or was issued for another tenant or filter."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        position, binding = payload["p"], payload["b"]
    except (ValueError, KeyError, TypeError, UnicodeError):
        raise InvalidArgument(FieldViolation(field, "is not a page token of this listing")) from None
    if binding != _binding(scope) or not isinstance(position, list):
        raise InvalidArgument(FieldViolation(field, "was issued for another tenant or filter"))
    return position


def _binding(scope: dict) -> str:
    return hashlib.sha256(json.dumps(scope, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fits(item: object, kind: type) -> bool:
    if type(item) is not kind:  # bool is an int to isinstance, never a key
        return False
    if isinstance(item, int):
        return INT64_MIN <= item <= INT64_MAX
    return isinstance(item, str) and len(item) <= MAX_KEY_LENGTH and "\x00" not in item
