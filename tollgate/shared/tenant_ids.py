"""The format of a tenant id: one rule for Usage, Policy and tollgate-token. Pure.

A tenant id names the tenant in tokens, rows, logs, metrics labels and URLs, so it is limited to
characters that need no quoting anywhere: ASCII letters, digits, '_', '.' and '-', starting with a
letter or a digit (so a UUID or a numeric account id will do), at most 128 of them.
"""

from __future__ import annotations

import re

MAX_LENGTH = 128
PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
RULE = (
    f"must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$: 1 to {MAX_LENGTH} ASCII letters, digits, '_', '.' "
    f"or '-', the first a letter or digit"
)


def problem(tenant_id: str) -> str | None:
    """What is wrong with a tenant id, as a field violation's description; None when it is well formed."""
    if not tenant_id:
        return "is required"
    return None if PATTERN.fullmatch(tenant_id) else RULE
