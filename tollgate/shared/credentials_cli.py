"""tollgate-token: create, list and revoke bearer tokens.

A token is stored (as a hash) in the credentials table of each service its scopes name, and
nowhere else: a usage-only token is unknown to Policy. Each service reads only its own schema.
Database URLs come from USAGE_DATABASE_URL and POLICY_DATABASE_URL (defaults: the SQLite files
under var/).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC

from sqlalchemy import MetaData

from tollgate.shared import credentials, tenant_ids
from tollgate.shared.db import create_engine_for

DEFAULT_URLS = {"usage": "sqlite:///var/usage.db", "policy": "sqlite:///var/policy.db"}


def _names(service: str) -> list[str]:
    return list(credentials.SERVICES) if service == "both" else [service]


def _targets(names: list[str]):
    for name in names:
        url = os.environ.get(f"{name.upper()}_DATABASE_URL") or DEFAULT_URLS[name]
        engine = create_engine_for(url, schema=name, pool_size=1)
        yield name, engine, credentials.credentials_table(MetaData(schema=name))


def create(
    *, tenant: str | None, scopes: list[str], label: str = "", service: str | None = None, token_id: str | None = None
) -> str:
    """Mint a token, store its hash in each service its scopes name, and return the token.

    `service` ("usage", "policy" or "both"), when given, must name exactly those services.
    """
    if tenant is not None and (problem := tenant_ids.problem(tenant)):
        raise ValueError(f"invalid --tenant {tenant!r}: {problem}")
    scope_set = credentials.validate_scopes(scopes)
    names = credentials.services_for(scope_set)
    if service is not None and _names(service) != names:
        raise ValueError(
            f"--service {service} does not match scopes {','.join(sorted(scope_set))}, which are "
            f"for {' and '.join(names)}: a token is stored only where its scopes let it call"
        )
    token, token_id, secret_hash = credentials.mint(token_id)
    for _name, engine, table in _targets(names):
        credentials.store(
            engine, table, token_id=token_id, secret_hash=secret_hash, tenant_id=tenant, scopes=scope_set, label=label
        )
        engine.dispose()
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollgate-token", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create", help="mint a token and print it once")
    made.add_argument("--tenant", help="tenant the token acts for; omit for a platform token")
    made.add_argument("--scopes", required=True, help="comma-separated, e.g. usage:write,usage:read")
    made.add_argument("--label", default="")
    made.add_argument(
        "--service",
        choices=["usage", "policy", "both"],
        help="optional check: the services the scopes name (the token is stored in those)",
    )
    listed = commands.add_parser("list", help="list tokens (never their secrets)")
    listed.add_argument("--service", choices=["usage", "policy", "both"], default="both")
    revoked = commands.add_parser("revoke", help="revoke a token by its id")
    revoked.add_argument("token_id")
    revoked.add_argument("--service", choices=["usage", "policy", "both"], default="both")
    args = parser.parse_args(argv)

    if args.command == "create":
        return _create(args)
    return (_list if args.command == "list" else _revoke)(args, _names(args.service))


def _create(args) -> int:
    """The token alone on stdout (for `$(...)`); what was made, and that it is shown once, on stderr."""
    scopes = args.scopes.split(",")
    try:
        token = create(tenant=args.tenant, scopes=scopes, label=args.label, service=args.service)
    except ValueError as error:
        print(f"tollgate-token: {error}", file=sys.stderr)
        return 2
    print(token)
    token_id, _secret = credentials.parse(token)
    stored = " and ".join(credentials.services_for(frozenset(scopes)))
    print(
        f"created token id {token_id} for {f'tenant {args.tenant}' if args.tenant else 'the platform'}, "
        f"scopes {','.join(sorted(set(scopes)))}, stored in {stored}.\n"
        f"The token (printed on stdout) holds its secret and is shown only this once: keep it now (a secret "
        f"store, a 0600 file); only its hash is stored. Revoke it with: tollgate-token revoke {token_id}",
        file=sys.stderr,
    )
    return 0


def _list(args, names: list[str]) -> int:
    print("SERVICE\tTOKEN_ID\tTENANT\tSCOPES\tSTATE\tCREATED\tLABEL")
    for name, engine, table in _targets(names):
        for row in credentials.list_all(engine, table):
            state = "revoked" if row.revoked_at else "active"
            created = _utc(row.created_at).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(
                f"{name}\t{row.token_id}\t{credentials.tenant_label(row.tenant_id)}\t{','.join(sorted(row.scopes))}\t{state}\t"
                f"{created}\t{row.label}"
            )
        engine.dispose()
    return 0


def _utc(moment):
    """SQLite hands back the stored UTC time without its zone; PostgreSQL in the session's zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _revoke(args, names: list[str]) -> int:
    revoked = []
    for name, engine, table in _targets(names):
        if credentials.revoke(engine, table, args.token_id):
            revoked.append(name)
        engine.dispose()
    if not revoked:
        print(f"tollgate-token: no active token {args.token_id!r}", file=sys.stderr)
        return 1
    print(
        f"revoked token id {args.token_id} in {' and '.join(revoked)}; services refuse it within their "
        f"*_AUTH_CACHE_SECONDS (5 s by default)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
