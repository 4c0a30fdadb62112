"""Both migration histories upgrade and downgrade, each inside its own schema only."""

import ast
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, inspect, select, text

from tests import support
from tollgate.services.usage import tables
from tollgate.services.usage.repository.sqlite.source_hash import pg_hash_text
from tollgate.shared import migrate
from tollgate.shared.db import create_engine_for, normalize_url


def tables_by_schema(url: str) -> dict[str, set[str]]:
    engine = create_engine(normalize_url(url))
    inspector = inspect(engine)
    found = {
        schema: set(inspector.get_table_names(schema=schema))
        for schema in ("usage", "policy")
        if schema in inspector.get_schema_names()
    }
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


# Where each Usage table goes on a Citus cluster (docs/operations.md, "Outgrowing one PostgreSQL: Citus").
CITUS_DISTRIBUTED = {
    "events",
    "aggregates",
    "dirty_buckets",
    "purge_horizons",
    "rollup_runs",
    "dimension_combinations",
    "meter_days",
    "meter_work",
    "meter_versions",
}
CITUS_DISTRIBUTED_ONCE_KEYED_BY_TENANT = {"rollup_work"}
CITUS_REFERENCE = {"metrics"}
CITUS_ON_THE_COORDINATOR = {"credentials", "job_leases", "audit_records", "audit_head", "alembic_version"}
_UNIQUE_KEYS = text("""SELECT c.relname, i.indexrelid::regclass::text, array(
    SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid JOIN pg_namespace AS ns ON ns.oid = c.relnamespace
WHERE ns.nspname = 'usage' AND i.indisunique""")


def test_on_postgres_every_usage_table_has_its_place_on_citus_and_every_tenant_key_starts_with_tenant_id(
    fresh_postgres,
):
    """Citus enforces a unique key of a distributed table only when it holds the distribution column: each key
    of a table distributed by tenant_id starts with it, and no table has a foreign key."""
    migrate.upgrade("usage", fresh_postgres)
    engine = create_engine(normalize_url(fresh_postgres))
    with engine.connect() as connection:
        found = set(connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'usage'")).scalars())
        unique = [
            (table, index, columns)
            for table, index, columns in connection.execute(_UNIQUE_KEYS)
            if table in CITUS_DISTRIBUTED
        ]
        foreign = connection.execute(
            text(
                "SELECT conname FROM pg_constraint AS c JOIN pg_namespace AS ns "
                "ON ns.oid = c.connamespace WHERE ns.nspname = 'usage' AND contype = 'f'"
            )
        )
        foreign = foreign.scalars().all()
    engine.dispose()
    assert found == (
        CITUS_DISTRIBUTED | CITUS_DISTRIBUTED_ONCE_KEYED_BY_TENANT | CITUS_REFERENCE | CITUS_ON_THE_COORDINATOR
    )
    assert len(unique) >= 7  # events' three keys, and the primary key of each other distributed table
    assert [key for key in unique if key[2][0] != "tenant_id"] == []
    assert foreign == []


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


def test_no_revision_imports_the_live_code():
    """History is frozen: a revision that imported tollgate/ would change when they do."""
    allowed = set(sys.stdlib_module_names) | {"sqlalchemy", "alembic"}
    imported = {}
    for path in sorted(migrate.MIGRATIONS_DIR.glob("*/versions/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            imported.update({f"{path.parent.parent.name}/{path.name}: {n}": n for n in names})
    assert len(imported) > 20  # every revision was read
    assert [k for k, name in imported.items() if name.split(".")[0] not in allowed] == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_usage_0004_marks_dirty_the_hour_day_week_and_month_of_events_no_hour_aggregate_covers(tmp_path, backend):
    """Reads trust aggregates from usage_0004 on: events stored before rollups existed get rolled up first."""

    def micros(*moment) -> int:
        return int(datetime(*moment, tzinfo=UTC).timestamp()) * 1_000_000

    stored = dict(
        metric="api.requests",
        quantity=1,
        actor_id="a",
        source_service="s",
        classification="BILLABLE",
        content_hash="c" * 64,
        received_at_us=0,
    )
    leap_day, covered_hour = micros(2024, 2, 29, 13, 45), micros(2024, 3, 4, 9)
    with support.fresh_databases(backend, tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0003")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        with engine.begin() as connection:
            connection.execute(
                tables.events.insert(),
                [  # 0002's columns
                    dict(stored, tenant_id="t", event_id="1", occurred_at_us=leap_day),
                    dict(stored, tenant_id="t", event_id="2", occurred_at_us=leap_day + 60_000_000),
                    dict(stored, tenant_id="t", event_id="3", occurred_at_us=covered_hour + 1),
                ],
            )
            connection.execute(
                tables.aggregates.insert(),
                [
                    dict(  # 0003's columns: no hours yet
                        tenant_id="t",
                        metric="api.requests",
                        period=1,
                        period_start_us=covered_hour,
                        total_quantity=1,
                        event_count=1,
                        source_hash="h",
                        computed_at_us=0,
                    )
                ],
            )
        migrate.upgrade("usage", dbs.usage_url, "usage_0004")
        with engine.connect() as connection:
            marks = connection.execute(
                select(
                    tables.dirty_buckets.c.tenant_id,
                    tables.dirty_buckets.c.metric,
                    tables.dirty_buckets.c.period,
                    tables.dirty_buckets.c.period_start_us,
                    tables.dirty_buckets.c.marked_at_us,
                )
            ).all()
        engine.dispose()
    assert sorted(tuple(m) for m in marks) == [  # the covered hour's event (9:00 on 4 March) marks nothing
        ("t", "api.requests", 1, micros(2024, 2, 29, 13), 0),
        ("t", "api.requests", 2, micros(2024, 2, 29), 0),
        ("t", "api.requests", 3, micros(2024, 2, 26), 0),
        ("t", "api.requests", 4, micros(2024, 2, 1), 0),
    ]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_usage_0005_creates_the_audit_chain_as_declared_with_its_head_at_the_zero_hash(tmp_path, backend):
    with support.fresh_databases(backend, tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0004")
        migrate.upgrade("usage", dbs.usage_url, "usage_0005")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        with engine.connect() as connection:
            head = connection.execute(select(tables.audit_head)).all()
            schema = None if backend == "sqlite" else "usage"
            columns = [c["name"] for c in inspect(connection).get_columns("audit_records", schema=schema)]
            indexes = {
                i["name"]: i["column_names"] for i in inspect(connection).get_indexes("audit_records", schema=schema)
            }
        engine.dispose()
    assert [tuple(r) for r in head] == [(1, 0, "0" * 64)]
    assert columns == [c.name for c in tables.audit_records.columns]
    assert indexes == {"audit_records_tenant_idx": ["tenant_id", "sequence"]}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_usage_0006_marks_dirty_only_the_aggregates_holding_a_digest_of_the_old_format(tmp_path, backend):
    """Rollups fold from stored digests from usage_0006 on; an old SHA-256 digest must be recomputed first."""
    with support.fresh_databases(backend, tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0005")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        row = dict(tenant_id="t", metric="api.requests", period=1, total_quantity=1, event_count=1, computed_at_us=0)
        with engine.begin() as connection:
            connection.execute(
                tables.aggregates.insert(),
                [
                    dict(row, period_start_us=0, source_hash="a" * 64),
                    dict(row, period_start_us=3_600_000_000, source_hash="b" * 16),
                ],
            )
        migrate.upgrade("usage", dbs.usage_url)
        with engine.connect() as connection:
            marks = connection.execute(select(tables.dirty_buckets.c.period_start_us)).scalars().all()
        engine.dispose()
    assert marks == [0]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_usage_0009_packs_hour_rows_into_their_day_and_marks_the_days_whose_hours_were_not_final(tmp_path, backend):
    day, other_day, hour = 10 * 86_400_000_000, 11 * 86_400_000_000, 3_600_000_000
    with support.fresh_databases(backend, tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0008")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        row = dict(tenant_id="t", metric="api.requests", computed_at_us=7)
        hours = [
            dict(row, period=1, period_start_us=day + 5 * hour, total_quantity=3, event_count=2, source_hash="f" * 16),
            dict(
                row, period=1, period_start_us=day + hour, total_quantity=2, event_count=1, source_hash="0" * 15 + "9"
            ),
            dict(row, period=1, period_start_us=other_day, total_quantity=4, event_count=1, source_hash="1" * 16),
        ]
        with engine.begin() as connection:
            connection.execute(
                tables.aggregates.insert(),
                hours
                + [dict(row, period=2, period_start_us=day, total_quantity=5, event_count=3, source_hash="8" * 16)],
            )
            connection.execute(
                tables.dirty_buckets.insert(),
                [  # a dirty hour of a day that is itself clean
                    dict(tenant_id="t", metric="api.requests", period=1, period_start_us=day + 5 * hour, marked_at_us=1)
                ],
            )
        migrate.upgrade("usage", dbs.usage_url)
        with engine.connect() as connection:
            stored = connection.execute(select(tables.aggregates)).all()
            marks = connection.execute(
                select(
                    tables.dirty_buckets.c.period,
                    tables.dirty_buckets.c.period_start_us,
                    tables.dirty_buckets.c.dirty_hours,
                )
            ).all()
        migrate.downgrade("usage", dbs.usage_url, "usage_0008")
        with engine.connect() as connection:
            restored = connection.execute(
                select(*[tables.aggregates.c[k] for k in hours[0]]).where(tables.aggregates.c.period == 1)
            ).all()
        engine.dispose()
    [packed] = stored  # the hour rows are gone; the hours of the day without a row wait for a rollup
    cells = sorted(zip(packed.hour_offsets, packed.hour_quantities, packed.hour_counts, packed.hour_digests))
    assert [(o, q, n, int(d) % 2**64) for o, q, n, d in cells] == [(1, 2, 1, 9), (5, 3, 2, 2**64 - 1)]
    assert sorted(marks) == [(2, day, 2**24 - 1), (2, other_day, 2**24 - 1)]
    assert sorted(tuple(r) for r in restored) == sorted(tuple(h.values()) for h in hours[:2])


def test_usage_0010_gives_postgresql_events_their_digest_term_and_covers_it_in_events_by_metric_time(tmp_path):
    """Rollups sum hours from events_by_metric_time alone; the digest it holds is the one source_hash sums."""

    def covered(connection) -> str:
        return connection.execute(
            text("SELECT indexdef FROM pg_indexes WHERE schemaname = 'usage' AND indexname = 'events_by_metric_time'")
        ).scalar_one()

    with support.fresh_databases("postgres", tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0009")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        stored = dict(
            tenant_id="t",
            metric="api.requests",
            quantity=1,
            occurred_at_us=0,
            actor_id="a",
            source_service="s",
            classification="BILLABLE",
            content_hash="c" * 64,
            received_at_us=0,
        )
        with engine.begin() as connection:
            connection.execute(tables.events.insert(), [dict(stored, event_id="before")])
        migrate.upgrade("usage", dbs.usage_url)
        with engine.begin() as connection:
            connection.execute(tables.events.insert(), [dict(stored, event_id="after-ünï")])
            # The previous release's ingest: every column of a copy of the table, inserted with SELECT *.
            connection.execute(text('CREATE TEMP TABLE stage (LIKE "usage".events) ON COMMIT DROP'))
            connection.execute(text("INSERT INTO stage SELECT * FROM \"usage\".events WHERE event_id = 'before'"))
            connection.execute(text("UPDATE stage SET event_id = 'previous-release', digest = NULL"))
            connection.execute(text('INSERT INTO "usage".events SELECT * FROM stage'))
            digests = dict(connection.execute(text('SELECT event_id, digest FROM "usage".events')).all())
            index_after = covered(connection)
        migrate.downgrade("usage", dbs.usage_url, "usage_0009")
        with engine.connect() as connection:
            index_before = covered(connection)
            columns = {c["name"] for c in inspect(connection).get_columns("events", schema="usage")}
        engine.dispose()
    assert {k: d % 2**64 for k, d in digests.items()} == {
        k: pg_hash_text(f"{k}:{'c' * 64}".encode()) for k in ("before", "after-ünï", "previous-release")
    }
    assert index_after.endswith("INCLUDE (quantity, digest)")
    assert index_before.endswith("INCLUDE (quantity)") and "digest" not in columns


def test_usage_0012_gives_postgresql_day_rows_running_sums_of_their_hours(tmp_path):
    """GetUsage reads a span of a day's hours as running[to + 1] - running[from + 1]: day rows stored before
    the migration get their sums from it, and rows written later (an upsert, as a rollup writes) from the
    generated columns; weeks and months have none."""
    day_row = dict(
        tenant_id="t",
        metric="api.requests",
        period=2,
        period_start_us=0,
        total_quantity=12,
        event_count=4,
        source_hash="h",
        computed_at_us=0,
        hour_offsets=[23, 0, 5],
        hour_quantities=[7, 2, 3],
        hour_counts=[1, 1, 2],
        hour_digests=[1, 2, 3],
    )
    week_row = dict(day_row, period=3, hour_offsets=None, hour_quantities=None, hour_counts=None, hour_digests=None)
    running = text(
        'SELECT period_start_us, hour_running_quantities, hour_running_counts FROM "usage".aggregates '
        "ORDER BY period, period_start_us"
    )
    with support.fresh_databases("postgres", tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0011")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        with engine.begin() as connection:
            connection.execute(tables.aggregates.insert(), [day_row, week_row])
        migrate.upgrade("usage", dbs.usage_url)
        with engine.begin() as connection:
            connection.execute(tables.aggregates.insert(), [dict(day_row, period_start_us=86_400_000_000)])
            connection.execute(
                text(
                    "UPDATE \"usage\".aggregates SET hour_offsets = '{4}', hour_quantities = '{9}', "
                    "hour_counts = '{3}' WHERE period = 2 AND period_start_us > 0"
                )
            )
            found = [tuple(row) for row in connection.execute(running)]
        migrate.downgrade("usage", dbs.usage_url, "usage_0011")
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("aggregates", schema="usage")}
        engine.dispose()
    # [h + 1] sums the hours before hour h: hour 0 (2) from h = 1, hour 5 (3) from h = 6, hour 23 (7) at h = 24.
    assert found == [
        (0, [0] + [2] * 5 + [5] * 18 + [12], [0] + [1] * 5 + [3] * 18 + [4]),
        (86_400_000_000, [0] * 5 + [9] * 20, [0] * 5 + [3] * 20),
        (0, None, None),
    ]
    assert not {"hour_running_quantities", "hour_running_counts"} & columns


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_usage_0019_deletes_the_meter_rows_of_the_days_marked_and_keeps_the_others(tmp_path, backend):
    """A mark narrowed before usage_0019 may leave hours unnamed whose events the day's rows lack: those days are
    read raw until their next rollup, as every day without rows is."""
    day = 86_400_000_000
    hours = ["hour_offsets", "hour_quantities", "hour_counts", "hour_mins", "hour_maxes", "hour_latest_at"]
    row = dict(
        {name: [5] for name in [*hours, "hour_latest_quantities"]},
        tenant_id="t",
        metric="ai.tokens",
        cuboid="",
        dimensions="{}",
        computed_at_us=0,
        hour_latest_ids=["e"],
        running_quantities=[0] * 6 + [5] * 19,
        running_counts=[0] * 6 + [1] * 19,
    )
    mark = dict(tenant_id="t", metric="ai.tokens", marked_at_us=0, dirty_hours=1 << 5)
    with support.fresh_databases(backend, tmp_path) as dbs:
        migrate.downgrade("usage", dbs.usage_url, "usage_0018")
        engine = create_engine_for(dbs.usage_url, schema="usage")
        with engine.begin() as connection:
            connection.execute(
                tables.meter_days.insert(),
                [dict(row, day_us=day), dict(row, day_us=2 * day), dict(row, day_us=day, metric="other")],
            )
            connection.execute(
                tables.dirty_buckets.insert(),
                [dict(mark, period=2, period_start_us=day), dict(mark, period=3, period_start_us=2 * day)],
            )
        migrate.upgrade("usage", dbs.usage_url)
        with engine.connect() as connection:
            kept = connection.execute(
                select(tables.meter_days.c.metric, tables.meter_days.c.day_us).order_by(
                    tables.meter_days.c.metric, tables.meter_days.c.day_us
                )
            ).all()
        engine.dispose()
    # The day marked goes; a day whose week alone is marked, and another metric's day, stay.
    assert [tuple(r) for r in kept] == [("ai.tokens", 2 * day), ("other", day)]
