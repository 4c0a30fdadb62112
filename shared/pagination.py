"""AIP-158 page tokens: opaque, bound to the tenant and filter they were issued for."""

from __future__ import annotations

import base64
import hashlib
import json

from shared.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int, field: str = "page_size") -> int:
    """The page size to use: default when 0, at most MAX_PAGE_SIZE, never negative."""
    if requested < 0:
        raise InvalidArgument(FieldViolation(field, "must not be negative"))
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _binding(scope: dict) -> str:
    return hashlib.sha256(json.dumps(scope, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def start(requested: int, page_token: str, scope: dict, *, width: int, kind: type = str) -> tuple[int, tuple | None]:
    """(limit, position after which to resume or None) of a listing keyed by `width` values of `kind`.

    Positions are checked here, before they reach SQL.
    """
    limit = page_size(requested)
    position = decode(page_token, scope)
    if position is None:
        return limit, None
    if len(position) != width or not all(type(item) is kind for item in position):
        raise InvalidArgument(FieldViolation("page_token", "is not a page token of this listing"))
    return limit, tuple(position)


def finish(items: list, limit: int, scope: dict, key) -> tuple[list, str]:
    """The page (items fetched with limit + 1) and the next page token ('' on the last page)."""
    if len(items) <= limit:
        return items, ""
    return items[:limit], encode(list(key(items[limit - 1])), scope)
