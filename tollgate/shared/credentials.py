"""Bearer tokens: minting, hashing, and the credentials table each service keeps in its own schema.

A token reads `tg_<token_id>_<secret>`. Only SHA-256 of the secret is stored: the secret is 256
random bits, so a fast hash is as strong as a slow one here and keeps verification cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, select, update

from tollgate.shared.errors import Unauthenticated

SCOPES = frozenset({"usage:write", "usage:read", "usage:admin", "policy:read", "policy:write", "policy:admin"})
SERVICES = ("usage", "policy")  # a scope reads `<service>:<right>`
# "The platform" (a credential that may act for every tenant) and "every tenant" (what an admin call acts on)
# are one idea, and in code one value: None (`Principal.tenant_id`, a use case's or a repository's tenant).
# Two spellings stay at the edges, each read in one place: an empty tenant_id in a request (proto3 strings
# have no null; `auth.tenant_scope`), and PLATFORM where text must show it: a credentials row (tenant_id is
# NOT NULL), a log line's tenant, `tollgate-token list` (`tenant_label`). No tenant id can be '*'.
PLATFORM = "*"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a credential bound to one tenant (or the platform) and its scopes."""

    token_id: str
    tenant_id: str | None  # None: the platform
    scopes: frozenset[str]

    @property
    def is_platform(self) -> bool:
        """Whether the credential may act for every tenant."""
        return self.tenant_id is None


@dataclass(frozen=True)
class Credential:
    """A stored credential, without its secret."""

    token_id: str
    tenant_id: str | None
    scopes: frozenset[str]
    label: str
    created_at: datetime
    revoked_at: datetime | None
    secret_hash: str = ""


def credentials_table(metadata: MetaData) -> Table:
    """The credentials table, declared in the calling service's schema."""
    return Table(
        "credentials",
        metadata,
        Column("token_id", String(32), primary_key=True),
        Column("tenant_id", String(128), nullable=False),
        Column("scopes", String(256), nullable=False),
        Column("secret_hash", String(64), nullable=False),
        Column("label", String(256), nullable=False, default=""),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked_at", DateTime(timezone=True), nullable=True),
    )


def mint(token_id: str | None = None) -> tuple[str, str, str]:
    """A new (token, token_id, secret_hash)."""
    token_id = token_id or secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return f"tg_{token_id}_{secret}", token_id, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(token: str) -> tuple[str, str]:
    """(token_id, secret) of a well-formed token; Unauthenticated otherwise."""
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != "tg" or not token_id or not secret or len(token) > 200:
        raise Unauthenticated("malformed bearer token")
    return token_id, secret


def check_secret(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def validate_scopes(scopes: list[str]) -> frozenset[str]:
    unknown = sorted(set(scopes) - SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {sorted(SCOPES)}, got {scopes}")
    return frozenset(scopes)


def services_for(scopes: frozenset[str]) -> list[str]:
    """The services a token with these scopes must be stored in: those its scopes let it call, no other."""
    named = {scope.partition(":")[0] for scope in scopes}
    return [service for service in SERVICES if service in named]


def store(
    engine: Engine,
    table: Table,
    *,
    token_id: str,
    secret_hash: str,
    tenant_id: str | None,
    scopes: frozenset[str],
    label: str = "",
) -> None:
    """Insert a credential row."""
    with engine.begin() as connection:
        connection.execute(
            table.insert().values(
                token_id=token_id,
                tenant_id=tenant_label(tenant_id),
                scopes=" ".join(sorted(scopes)),
                secret_hash=secret_hash,
                label=label,
                created_at=datetime.now(UTC),
                revoked_at=None,
            )
        )


def tenant_label(tenant_id: str | None) -> str:
    """How text shows a credential's tenant: the tenant id, or PLATFORM."""
    return PLATFORM if tenant_id is None else tenant_id


def load(engine: Engine, table: Table, token_id: str) -> Credential | None:
    """The credential with this id, revoked or not."""
    with engine.connect() as connection:
        row = connection.execute(select(table).where(table.c.token_id == token_id)).one_or_none()
    return _credential(row) if row else None


def list_all(engine: Engine, table: Table) -> list[Credential]:
    with engine.connect() as connection:
        rows = connection.execute(select(table).order_by(table.c.created_at, table.c.token_id)).all()
    return [_credential(row) for row in rows]


def revoke(engine: Engine, table: Table, token_id: str) -> bool:
    """Mark a credential revoked; False when no live credential has that id."""
    with engine.begin() as connection:
        result = connection.execute(
            update(table)
            .where(table.c.token_id == token_id, table.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    return result.rowcount == 1


def _credential(row) -> Credential:
    return Credential(
        token_id=row.token_id,
        tenant_id=None if row.tenant_id == PLATFORM else row.tenant_id,
        scopes=frozenset(row.scopes.split()),
        label=row.label,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        secret_hash=row.secret_hash,
    )
