"""tollgate-token as an operator runs it, on both backends: what create, list and revoke print, and a token
stored only in the services its scopes name (checked in each credentials table and through the real servers)."""

import grpc
import pytest
from sqlalchemy import MetaData

from tests import support
from tests.conftest import status_of
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.shared import credentials, credentials_cli
from tollgate.shared.db import create_engine_for
from tollgate.usage.v1 import usage_pb2 as u


@pytest.fixture
def cli(dbs, monkeypatch, capsys):
    """Run `tollgate-token ARGS` against this backend: (exit code, stdout, stderr)."""
    monkeypatch.setenv("USAGE_DATABASE_URL", dbs.usage_url)
    monkeypatch.setenv("POLICY_DATABASE_URL", dbs.policy_url)

    def run(*args: str) -> tuple[int, str, str]:
        code = credentials_cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def stored_in(dbs, token_id: str) -> list[str]:
    """The services whose credentials table holds this token id."""
    found = []
    for name, url in (("usage", dbs.usage_url), ("policy", dbs.policy_url)):
        engine = create_engine_for(url, schema=name, pool_size=1)
        try:
            if credentials.load(engine, credentials.credentials_table(MetaData(schema=name)), token_id):
                found.append(name)
        finally:
            engine.dispose()
    return found


def test_create_prints_the_token_alone_on_stdout_and_its_id_and_a_shown_once_warning_on_stderr(cli, tenant):
    code, out, err = cli("create", "--tenant", tenant, "--scopes", "usage:write,usage:read", "--label", "crm")
    token = out.strip()
    token_id, _secret = credentials.parse(token)
    assert code == 0 and out == token + "\n"
    assert f"created token id {token_id} for tenant {tenant}, scopes usage:read,usage:write, stored in usage." in err
    assert "shown only this once" in err and f"tollgate-token revoke {token_id}" in err
    assert _secret not in err


@pytest.mark.parametrize(
    "scopes,services",
    [
        ("usage:read", ["usage"]),
        ("usage:write,usage:admin", ["usage"]),
        ("policy:read", ["policy"]),
        ("policy:admin,policy:read", ["policy"]),
        ("usage:read,policy:read", ["usage", "policy"]),
    ],
)
def test_a_token_is_stored_only_in_the_services_its_scopes_name(cli, dbs, tenant, scopes, services):
    code, out, _err = cli("create", "--tenant", tenant, "--scopes", scopes)
    assert code == 0
    assert stored_in(dbs, credentials.parse(out.strip())[0]) == services


def test_a_usage_only_token_works_on_usage_and_is_unknown_to_policy(cli, tenant, usage_stub, policy_stub):
    _code, out, _err = cli("create", "--tenant", tenant, "--scopes", "usage:read")
    metadata = support.bearer(out.strip())
    assert (
        status_of(lambda: usage_stub.ListMetrics(u.ListMetricsRequest(), metadata=metadata, timeout=10))
        == grpc.StatusCode.OK
    )
    assert (
        status_of(
            lambda: policy_stub.ResolveMode(pb.ResolveModeRequest(tenant_id=tenant), metadata=metadata, timeout=10)
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )


@pytest.mark.parametrize(
    "scopes,service",
    [("usage:read", "both"), ("usage:read", "policy"), ("usage:read,policy:read", "usage"), ("policy:read", "usage")],
)
def test_a_service_that_does_not_match_the_scopes_stores_nothing_and_says_why(cli, dbs, tenant, scopes, service):
    label = f"mismatch-{tenant}"
    code, out, err = cli("create", "--tenant", tenant, "--scopes", scopes, "--service", service, "--label", label)
    assert (code, out) == (2, "")
    assert f"--service {service} does not match scopes" in err
    _code, listed, _err = cli("list")
    assert label not in listed


def test_a_service_that_matches_the_scopes_is_accepted(cli, dbs, tenant):
    code, out, _err = cli("create", "--tenant", tenant, "--scopes", "usage:read", "--service", "usage")
    assert code == 0 and stored_in(dbs, credentials.parse(out.strip())[0]) == ["usage"]


def test_list_has_a_header_and_one_row_per_service_holding_the_token(cli, tenant):
    _code, out, _err = cli("create", "--tenant", tenant, "--scopes", "usage:read,policy:read", "--label", "both")
    token_id = credentials.parse(out.strip())[0]
    code, listed, _err = cli("list")
    header, *rows = listed.splitlines()
    assert code == 0 and header.split("\t") == ["SERVICE", "TOKEN_ID", "TENANT", "SCOPES", "STATE", "CREATED", "LABEL"]
    ours = [row.split("\t") for row in rows if f"\t{token_id}\t" in row]
    assert [(r[0], r[2], r[3], r[4], r[6]) for r in ours] == [
        ("usage", tenant, "policy:read,usage:read", "active", "both"),
        ("policy", tenant, "policy:read,usage:read", "active", "both"),
    ]
    assert all(len(r[5]) == 20 and r[5].endswith("Z") for r in ours)


def test_revoke_confirms_where_it_revoked_and_a_second_revoke_says_there_is_none(cli, tenant):
    _code, out, _err = cli("create", "--tenant", tenant, "--scopes", "policy:read")
    token_id = credentials.parse(out.strip())[0]
    code, said, _err = cli("revoke", token_id)
    assert code == 0 and said.startswith(f"revoked token id {token_id} in policy;")
    code, said, err = cli("revoke", token_id)
    assert (code, said) == (1, "") and f"no active token {token_id!r}" in err
    _code, listed, _err = cli("list", "--service", "policy")
    assert [row.split("\t")[4] for row in listed.splitlines() if f"\t{token_id}\t" in row] == ["revoked"]
