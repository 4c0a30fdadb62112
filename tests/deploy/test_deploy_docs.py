"""The operator docs against the code (every variable, the example alerts) and the database
role script they prescribe, run against PostgreSQL."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.deploy_support import BIN, ROOT, SERVICES, clean_env, compose, env_variables


def test_the_operations_guide_documents_every_variable_the_services_read():
    guide = (ROOT / "docs/operations.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", guide, flags=re.MULTILINE))
    assert env_variables("usage") | env_variables("policy") | {"TOLLGATE_MIGRATIONS_DIR"} <= documented


def test_the_example_alerts_watch_errors_latency_targets_rollup_lag_and_usage_fallbacks():
    config = yaml.safe_load((ROOT / "docs/monitoring/prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    rules = [
        rule
        for group in yaml.safe_load((ROOT / "docs/monitoring/alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    exprs = " ".join(rule["expr"] for rule in rules)
    for needle in (
        "grpc_code",
        "grpc_server_handling_seconds_bucket",
        "up{",
        "tollgate_rollup_dirty_buckets",
        "tollgate_rollup_oldest_dirty_seconds",
        "tollgate_policy_usage_fallbacks_total",
    ):
        assert needle in exprs, needle
    assert all(rule["alert"] and rule["annotations"]["summary"] for rule in rules)


def psql(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-d", url, *args], capture_output=True, text=True
    )


@pytest.fixture
def role_database(postgres_url):
    """A fresh database set up by docker/postgres/roles.sql, each schema migrated by its own role:
    (superuser URL, {service: URL of its role})."""
    from scripts.pgcluster import create_postgres_database, drop_postgres_database
    from tests import support

    admin = support.postgres_admin_url()
    url = create_postgres_database(admin).replace("+psycopg", "")
    suffix = url.rpartition("_")[2]
    roles = {"usage": f"tg_usage_{suffix}", "policy": f"tg_policy_{suffix}"}
    try:
        made = psql(
            url,
            "-v",
            f"usage_role={roles['usage']}",
            "-v",
            "usage_password=pw-u",
            "-v",
            f"policy_role={roles['policy']}",
            "-v",
            "policy_password=pw-p",
            "-f",
            str(ROOT / "docker/postgres/roles.sql"),
        )
        assert made.returncode == 0, made.stderr
        passwords = {"usage": "pw-u", "policy": "pw-p"}
        as_role = {
            name: make_url(url).set(username=role, password=passwords[name]).render_as_string(hide_password=False)
            for name, role in roles.items()
        }
        for name in SERVICES:
            command = compose()["services"][f"{name}-migrate"]["command"]
            result = subprocess.run(
                [str(BIN / command[0]), *command[1:]],
                cwd=ROOT,
                capture_output=True,
                text=True,
                env={**clean_env(), f"{name.upper()}_DATABASE_URL": as_role[name]},
            )
            assert result.returncode == 0, result.stderr
        yield url, as_role, roles
    finally:
        drop_postgres_database(admin, url)
        for role in roles.values():
            psql(admin.replace("+psycopg", ""), "-c", f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.postgres
def test_the_role_script_lets_each_service_migrate_and_restore_its_own_schema_and_not_read_the_other(
    role_database, tmp_path
):
    url, as_role, roles = role_database
    denied = psql(as_role["usage"], "-c", "SELECT * FROM policy.alembic_version")
    assert "permission denied for schema policy" in denied.stderr
    dump = tmp_path / "usage.dump"
    assert subprocess.run(["pg_dump", "--format=custom", "--schema=usage", f"--file={dump}", url]).returncode == 0
    assert psql(url, "-c", "DROP SCHEMA usage CASCADE").returncode == 0
    restored = subprocess.run(
        ["pg_restore", f"--dbname={url}", "--exit-on-error", str(dump)], capture_output=True, text=True
    )
    assert restored.returncode == 0, restored.stderr
    owner = psql(url, "-At", "-c", "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'usage'")
    version = psql(as_role["usage"], "-At", "-c", "SELECT count(*) FROM usage.alembic_version")
    assert (owner.stdout.strip(), version.stdout.strip()) == (roles["usage"], "1")


@pytest.mark.postgres
def test_the_usage_role_ingests_rolls_up_and_reads_with_only_the_rights_the_role_script_gives(role_database):
    """COPY staging and rollup passes use temp tables (TEMPORARY on the database), and a pass hands its
    work to usage.rollup_work: all of it must work as the service's own role, not only as a superuser."""
    from dataclasses import replace

    from tests import support
    from tests.usage_support import event, now_us, record, totals
    from tollgate.services.usage import server as usage_server
    from tollgate.services.usage.config import Settings
    from tollgate.usage.v1 import usage_pb2 as u
    from tollgate.usage.v1 import usage_pb2_grpc

    _, as_role, _ = role_database
    token = support.make_token(
        support.Databases("postgres", as_role["usage"], as_role["policy"]),
        tenant="acme",
        scopes=["usage:write", "usage:read", "usage:admin"],
        service="usage",
    )
    running = usage_server.build(
        replace(
            Settings(),
            database_url=as_role["usage"],
            host="127.0.0.1",
            port=0,
            metrics_port=None,
            http_port=None,
            rollup_interval_seconds=0,
            log_level="WARNING",
        )
    )
    try:
        with support.channel(running.port) as channel:
            stub, admin = usage_pb2_grpc.UsageServiceStub(channel), usage_pb2_grpc.UsageAdminServiceStub(channel)
            results = record(stub, token, "acme", [event(f"e{n}", quantity=n + 1) for n in range(3)])
            assert [r.verdict for r in results] == [u.VERDICT_ACCEPTED] * 3
            report = admin.RunRollup(u.RunRollupRequest(tenant_id="acme"), metadata=support.bearer(token), timeout=30)
            assert report.buckets_recomputed == 3 and report.buckets_remaining == 0  # day (with its hours), week, month
            assert totals(stub, token, "acme", end_us=now_us() + 1) == {"api.requests": (6, 3)}
    finally:
        running.stop(grace=1)
