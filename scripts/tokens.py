"""Tokens `make run` keeps under var/: created once, reused while they still verify."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import MetaData

from tollgate.shared import credentials, credentials_cli
from tollgate.shared.db import create_engine_for


def _valid(token: str, service: str, url: str, scopes: list[str]) -> bool:
    try:
        token_id, secret = credentials.parse(token)
    except credentials.Unauthenticated:
        return False
    engine = create_engine_for(url, schema=service, pool_size=1)
    try:
        stored = credentials.load(engine, credentials.credentials_table(MetaData(schema=service)), token_id)
    finally:
        engine.dispose()
    # A token kept from an older checkout may lack a scope this one needs (Policy's usage:write for commits).
    return (
        stored is not None
        and stored.revoked_at is None
        and stored.scopes >= set(scopes)
        and credentials.check_secret(secret, stored.secret_hash)
    )


def ensure(path: Path, *, tenant: str | None, scopes: list[str], service: str, label: str) -> str:
    """The token in `path` if every target service accepts it, else a new one written there (0600)."""
    services = ["usage", "policy"] if service == "both" else [service]
    if path.exists():
        token = path.read_text().strip()
        if all(_valid(token, name, os.environ[f"{name.upper()}_DATABASE_URL"], scopes) for name in services):
            return token
    token = credentials_cli.create(tenant=tenant, scopes=scopes, service=service, label=label)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token
