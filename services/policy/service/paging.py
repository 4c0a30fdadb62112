"""Page tokens of the policy listings: positions are checked before they reach SQL."""

from __future__ import annotations

from shared import pagination
from shared.errors import FieldViolation, InvalidArgument


def start(page_size: int, page_token: str, scope: dict, *, width: int, kind: type = str) -> tuple[int, tuple | None]:
    """(limit, position after which to resume or None) of a listing request."""
    limit = pagination.page_size(page_size)
    position = pagination.decode(page_token, scope)
    if position is None:
        return limit, None
    if len(position) != width or not all(type(item) is kind for item in position):
        raise InvalidArgument(FieldViolation("page_token", "is not a page token of this listing"))
    return limit, tuple(position)


def finish(items: list, limit: int, scope: dict, key) -> tuple[list, str]:
    """The page (items fetched with limit + 1) and the next page token ('' on the last page)."""
    if len(items) <= limit:
        return items, ""
    return items[:limit], pagination.encode(list(key(items[limit - 1])), scope)
