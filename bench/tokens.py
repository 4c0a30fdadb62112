"""Tokens for the benches: minted once, stored (hashed) in each schema that must accept them."""

from __future__ import annotations

from sqlalchemy import MetaData

from tollgate.shared import credentials
from tollgate.shared.db import create_engine_for


def token(
    url: str,
    scopes: set[str],
    *,
    schemas: tuple[str, ...] = ("usage",),
    tenant: str | None = None,
    label: str = "bench",
) -> str:
    """A token of `tenant` (None: the platform) with `scopes`, accepted by each service in `schemas`."""
    secret, token_id, secret_hash = credentials.mint()
    for schema in schemas:
        engine = create_engine_for(url, schema=schema, pool_size=1)
        try:
            credentials.store(
                engine,
                credentials.credentials_table(MetaData(schema=schema)),
                token_id=token_id,
                secret_hash=secret_hash,
                tenant_id=tenant,
                scopes=frozenset(scopes),
                label=label,
            )
        finally:
            engine.dispose()
    return secret
