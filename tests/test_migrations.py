"""Both migration histories upgrade and downgrade, each inside its own schema only."""

import pytest
from sqlalchemy import create_engine, inspect, select

from services.usage import tables
from shared import migrate
from shared.db import create_engine_for, normalize_url
from tests import support


def tables_by_schema(url: str) -> dict[str, set[str]]:
    engine = create_engine(normalize_url(url))
    inspector = inspect(engine)
    found = {schema: set(inspector.get_table_names(schema=schema))
             for schema in ("usage", "policy") if schema in inspector.get_schema_names()}
    engine.dispose()
    return found


@pytest.fixture
def fresh_postgres():
    admin = support.postgres_admin_url()
    if not admin:
        pytest.skip("no PostgreSQL")
    url = support.create_postgres_database(admin)
    yield url
    support.drop_postgres_database(admin, url)


def test_on_postgres_each_history_touches_only_its_own_schema(fresh_postgres):
    migrate.upgrade("usage", fresh_postgres)
    assert set(tables_by_schema(fresh_postgres)) == {"usage"}
    migrate.upgrade("policy", fresh_postgres)
    policy_tables = tables_by_schema(fresh_postgres)["policy"]
    assert "alembic_version" in policy_tables and "credentials" in policy_tables
    migrate.downgrade("usage", fresh_postgres)
    after = tables_by_schema(fresh_postgres)
    assert after["usage"] == {"alembic_version"}
    assert after["policy"] == policy_tables


@pytest.mark.parametrize("service", ["usage", "policy"])
def test_on_postgres_a_history_goes_up_down_and_up_again(fresh_postgres, service):
    migrate.upgrade(service, fresh_postgres)
    engine = create_engine_for(fresh_postgres, schema=service)
    assert migrate.current_revision(engine, service) == migrate.head_revision(service)
    migrate.downgrade(service, fresh_postgres)
    assert migrate.current_revision(engine, service) is None
    migrate.upgrade(service, fresh_postgres)
    assert migrate.current_revision(engine, service) == migrate.head_revision(service)
    engine.dispose()


@pytest.mark.parametrize("service", ["usage", "policy"])
def test_on_sqlite_a_history_goes_up_down_and_up_again(tmp_path, service):
    url = f"sqlite:///{tmp_path}/{service}.db"
    migrate.upgrade(service, url)
    engine = create_engine_for(url, schema=service)
    assert migrate.current_revision(engine, service) == migrate.head_revision(service)
    migrate.downgrade(service, url)
    assert migrate.current_revision(engine, service) is None
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    migrate.upgrade(service, url)
    assert migrate.current_revision(engine, service) == migrate.head_revision(service)
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_usage_0006_marks_dirty_only_the_aggregates_holding_a_digest_of_the_old_format(tmp_path, backend):
    """Rollups fold from stored digests from usage_0006 on; an old SHA-256 digest must be recomputed first."""
    with support.fresh_databases(backend, tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0005")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        row = dict(tenant_id="t", metric="api.requests", period=1, total_quantity=1, event_count=1, computed_at_us=0)
        with engine.begin() as connection:
            connection.execute(tables.aggregates.insert(), [
                dict(row, period_start_us=0, source_hash="a" * 64), dict(row, period_start_us=3_600_000_000,
                                                                        source_hash="b" * 16)])
        migrate.upgrade("usage", dbs.usage_url)
        with engine.connect() as connection:
            marks = connection.execute(select(tables.dirty_buckets.c.period_start_us)).scalars().all()
        engine.dispose()
    assert marks == [0]
