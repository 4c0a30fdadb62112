"""tollgate-token: create, list and revoke bearer tokens.

A token is stored (as a hash) in the credentials table of each service that must accept it;
each service reads only its own schema. Database URLs come from USAGE_DATABASE_URL and
POLICY_DATABASE_URL (defaults: the SQLite files under var/).
"""

from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy import MetaData

from shared import credentials, tenant_ids
from shared.db import create_engine_for

DEFAULT_URLS = {"usage": "sqlite:///var/usage.db", "policy": "sqlite:///var/policy.db"}


def _targets(service: str):
    names = ["usage", "policy"] if service == "both" else [service]
    for name in names:
        url = os.environ.get(f"{name.upper()}_DATABASE_URL") or DEFAULT_URLS[name]
        engine = create_engine_for(url, schema=name, pool_size=1)
        yield name, engine, credentials.credentials_table(MetaData(schema=name))


def create(*, tenant: str | None, scopes: list[str], label: str = "", service: str = "both",
           token_id: str | None = None) -> str:
    """Mint a token, store its hash in each target service, and return the token."""
    if tenant is not None and (problem := tenant_ids.problem(tenant)):
        raise ValueError(f"invalid --tenant {tenant!r}: {problem}")
    scope_set = credentials.validate_scopes(scopes)
    token, token_id, secret_hash = credentials.mint(token_id)
    for _name, engine, table in _targets(service):
        credentials.store(engine, table, token_id=token_id, secret_hash=secret_hash, tenant_id=tenant,
                          scopes=scope_set, label=label)
        engine.dispose()
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollgate-token", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create", help="mint a token and print it once")
    made.add_argument("--tenant", help="tenant the token acts for; omit for a platform token")
    made.add_argument("--scopes", required=True, help="comma-separated, e.g. usage:write,usage:read")
    made.add_argument("--label", default="")
    made.add_argument("--service", choices=["usage", "policy", "both"], default="both")
    listed = commands.add_parser("list", help="list tokens (never their secrets)")
    listed.add_argument("--service", choices=["usage", "policy", "both"], default="both")
    revoked = commands.add_parser("revoke", help="revoke a token by its id")
    revoked.add_argument("token_id")
    revoked.add_argument("--service", choices=["usage", "policy", "both"], default="both")
    args = parser.parse_args(argv)

    if args.command == "create":
        try:
            print(create(tenant=args.tenant, scopes=args.scopes.split(","), label=args.label, service=args.service))
        except ValueError as error:
            print(f"tollgate-token: {error}", file=sys.stderr)
            return 2
        return 0
    found = False
    for name, engine, table in _targets(args.service):
        if args.command == "list":
            for row in credentials.list_all(engine, table):
                state = "revoked" if row.revoked_at else "active"
                print(f"{name}\t{row.token_id}\t{row.tenant_id or '*'}\t{','.join(sorted(row.scopes))}\t{state}\t{row.label}")
        else:
            found = credentials.revoke(engine, table, args.token_id) or found
        engine.dispose()
    if args.command == "revoke" and not found:
        print(f"tollgate-token: no active token {args.token_id!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
