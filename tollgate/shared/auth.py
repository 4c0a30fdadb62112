"""Authentication of calls and the checks use cases make against the caller's principal."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable

from tollgate.shared import credentials, tenant_ids
from tollgate.shared.credentials import Credential, Principal
from tollgate.shared.errors import PermissionDenied, Unauthenticated, require

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


class TokenRefused(Unauthenticated):
    """A bearer token this service does not accept; `why` and `token_id` are for the log, never the secret."""

    def __init__(self, message: str, *, why: str, token_id: str = ""):
        super().__init__(message)
        self.why, self.token_id = why, token_id


class AccessRefused(PermissionDenied):
    """A valid credential asking for what it may not do; `why` and `token_id` are for the log."""

    def __init__(self, message: str, *, why: str, token_id: str):
        super().__init__(message)
        self.why, self.token_id = why, token_id


REFUSALS = (TokenRefused, AccessRefused)


class Authenticator:
    """Checks bearer tokens against the service's credentials table, caching rows briefly.

    A revocation takes effect within `cache_seconds`; that bound keeps the database off the hot path.
    """

    def __init__(self, load: Callable[[str], Credential | None], *, cache_seconds: float = 5.0):
        self._load = load
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Credential | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `authorization: Bearer <token>` header value."""
        if not authorization:
            raise TokenRefused("missing authorization: Bearer <token> metadata", why="missing token")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRefused("authorization metadata must read 'Bearer <token>'", why="malformed token")
        try:
            token_id, secret = credentials.parse(token.strip())
        except Unauthenticated as error:
            raise TokenRefused(error.message, why="malformed token") from None
        credential = self._credential(token_id)
        # The caller hears "unknown" either way: a wrong secret must not confirm that the id exists.
        if credential is None:
            raise TokenRefused("unknown bearer token", why="unknown token", token_id=token_id)
        if not credentials.check_secret(secret, credential.secret_hash):
            raise TokenRefused("unknown bearer token", why="wrong secret", token_id=token_id)
        if credential.revoked_at is not None:
            raise TokenRefused("revoked bearer token", why="revoked token", token_id=token_id)
        return Principal(credential.token_id, credential.tenant_id, credential.scopes)

    def _credential(self, token_id: str) -> Credential | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(token_id)
        if cached and now - cached[0] < self._cache_seconds:
            return cached[1]
        credential = self._load(token_id)
        if credential is not None:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[token_id] = (now, credential)
        return credential


def set_principal(principal: Principal | None) -> contextvars.Token:
    return _current.set(principal)


def reset_principal(token: contextvars.Token) -> None:
    _current.reset(token)


def principal() -> Principal:
    """The caller of the RPC being served."""
    current = _current.get()
    if current is None:
        raise Unauthenticated("no authenticated caller")
    return current


def require_scope(caller: Principal, scope: str) -> None:
    if scope not in caller.scopes:
        raise AccessRefused(f"credential lacks scope {scope!r}", why="missing scope", token_id=caller.token_id)


def require_tenant(caller: Principal, tenant_id: str) -> None:
    """A tenant credential may only name its own tenant; the platform may name any."""
    if not caller.is_platform and caller.tenant_id != tenant_id:
        raise AccessRefused(
            f"credential may not act for tenant {tenant_id!r}", why="other tenant", token_id=caller.token_id
        )


def require_platform(caller: Principal, what: str) -> None:
    """Only a platform credential may do `what`."""
    if not caller.is_platform:
        raise AccessRefused(f"{what} needs a platform credential", why="platform only", token_id=caller.token_id)


def tenant_scope(caller: Principal, tenant_id: str, what: str) -> str | None:
    """The tenant an admin call acts on: the one its request names (well formed, and the caller's own unless the
    caller is the platform), or None, every tenant, when the request leaves tenant_id empty: the platform only,
    `what` saying what was asked for."""
    if not tenant_id:
        require_platform(caller, what)
        return None
    problem = tenant_ids.problem(tenant_id)
    require(problem is None, "tenant_id", problem or "")
    require_tenant(caller, tenant_id)
    return tenant_id


def table_authenticator(engine, table, *, cache_seconds: float) -> Authenticator:
    """An authenticator reading the service's own credentials table."""
    return Authenticator(lambda token_id: credentials.load(engine, table, token_id), cache_seconds=cache_seconds)
