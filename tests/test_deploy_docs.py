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
    rules = [rule for group in yaml.safe_load((ROOT / "docs/monitoring/alerts.yml").read_text())["groups"]
             for rule in group["rules"]]
    exprs = " ".join(rule["expr"] for rule in rules)
    for needle in ("grpc_code", "grpc_server_handling_seconds_bucket", "up{", "tollgate_rollup_dirty_buckets",
                   "tollgate_rollup_oldest_dirty_seconds", "tollgate_policy_usage_fallbacks_total"):
        assert needle in exprs, needle
    assert all(rule["alert"] and rule["annotations"]["summary"] for rule in rules)


def psql(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-d", url, *args],
                          capture_output=True, text=True)


@pytest.mark.postgres
def test_the_role_script_lets_each_service_migrate_and_restore_its_own_schema_and_not_read_the_other(
        postgres_url, tmp_path):
    from scripts.pgcluster import create_postgres_database, drop_postgres_database
    from tests import support

    admin = support.postgres_admin_url()
    url = create_postgres_database(admin).replace("+psycopg", "")
    suffix = url.rpartition("_")[2]
    roles = {"usage": f"tg_usage_{suffix}", "policy": f"tg_policy_{suffix}"}
    try:
        made = psql(url, "-v", f"usage_role={roles['usage']}", "-v", "usage_password=pw-u", "-v",
                    f"policy_role={roles['policy']}", "-v", "policy_password=pw-p", "-f", str(ROOT / "docker/postgres/roles.sql"))
        assert made.returncode == 0, made.stderr
        passwords = {"usage": "pw-u", "policy": "pw-p"}
        as_role = {name: make_url(url).set(username=role, password=passwords[name]).render_as_string(hide_password=False)
                   for name, role in roles.items()}
        for name in SERVICES:
            command = compose()["services"][f"{name}-migrate"]["command"]
            result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True,
                                    env={**clean_env(), f"{name.upper()}_DATABASE_URL": as_role[name]})
            assert result.returncode == 0, result.stderr
        denied = psql(as_role["usage"], "-c", "SELECT * FROM policy.alembic_version")
        assert "permission denied for schema policy" in denied.stderr
        dump = tmp_path / "usage.dump"
        assert subprocess.run(["pg_dump", "--format=custom", "--schema=usage", f"--file={dump}", url]).returncode == 0
        assert psql(url, "-c", "DROP SCHEMA usage CASCADE").returncode == 0
        restored = subprocess.run(["pg_restore", f"--dbname={url}", "--exit-on-error", str(dump)],
                                  capture_output=True, text=True)
        assert restored.returncode == 0, restored.stderr
        owner = psql(url, "-At", "-c", "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'usage'")
        version = psql(as_role["usage"], "-At", "-c", "SELECT count(*) FROM usage.alembic_version")
        assert (owner.stdout.strip(), version.stdout.strip()) == (roles["usage"], "1")
    finally:
        drop_postgres_database(admin, url)
        for role in roles.values():
            psql(admin.replace("+psycopg", ""), "-c", f'DROP ROLE IF EXISTS "{role}"')
