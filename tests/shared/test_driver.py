"""tollgate/shared/driver.py on a real PostgreSQL: statements compiled once to numbered placeholders run as
SQLAlchemy would run them, whatever their length, with parameters repeated, literal percent signs and constants."""

from __future__ import annotations

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, bindparam, insert, literal_column, select
from sqlalchemy.exc import IntegrityError

from tollgate.shared import driver
from tollgate.shared.db import create_engine_for

_TABLE = Table(
    "driver_rows",
    MetaData(),
    Column("tenant", String, primary_key=True),
    Column("name", String, primary_key=True),
    Column("n", BigInteger, nullable=False),
)
TENANT = bindparam("tenant", type_=String())


@pytest.fixture
def engine(postgres_url):
    engine = create_engine_for(postgres_url, schema="public")
    _TABLE.drop(engine, checkfirst=True)
    _TABLE.create(engine)
    yield engine
    _TABLE.drop(engine)
    engine.dispose()


def _question(padding: int):
    """Rows of `tenant` named like '%a%' or with n = 7 (a constant the statement fixes), the tenant named twice;
    `padding` more characters of text that change nothing."""
    t = _TABLE.c
    noise = literal_column("'y" + "x" * padding + "'") != literal_column("''")
    return (
        select(t.name, t.n, literal_column("'100%'").label("text"))
        .where(t.tenant == TENANT, noise)
        .where((t.name.like(literal_column("'%a%'"))) | (t.n == 7))
        .where(select(literal_column("1")).where(t.tenant == TENANT).exists())
        .order_by(t.name)
    )


def test_a_compiled_statement_names_each_parameter_once_by_number_and_keeps_literal_percent_signs(engine):
    done = driver.compiled(_question(0), engine.dialect)
    assert "%(" not in done.sql and "'%a%'" in done.sql and "'100%'" in done.sql
    assert done.sql.count("$1") == 2 and done.names.count("tenant") == 1
    assert set(done.constants.values()) == {7}


@pytest.mark.parametrize("padding", [0, 5000], ids=["short", "past psycopg's 4 KiB cache of conversions"])
def test_rows_answers_as_sqlalchemy_does(engine, padding):
    rows = [("t1", "alpha", 1), ("t1", "bee", 7), ("t1", "cee", 3), ("t2", "alpha", 2)]
    with engine.begin() as connection:
        connection.execute(insert(_TABLE), [dict(zip(("tenant", "name", "n"), row)) for row in rows])
    statement = driver.compiled(_question(padding), engine.dialect)
    with engine.connect() as connection:
        for tenant in ("t1", "t2", "t3", "t1"):  # a second run of the same text on the kept cursor
            expected = [tuple(row) for row in connection.execute(_question(padding), {"tenant": tenant})]
            assert driver.rows(connection, statement, {"tenant": tenant}) == expected
        assert [r[0] for r in driver.rows(connection, statement, {"tenant": "t1"})] == ["alpha", "bee"]


def test_many_and_together_write_and_read_with_numbered_placeholders_and_an_error_is_sqlalchemys(engine):
    t = _TABLE.c
    count = select(t.n).where(t.tenant == TENANT).order_by(t.n)
    bump = _TABLE.update().where(t.tenant == TENANT, t.n == bindparam("at")).values(n=t.n + 10)
    with engine.begin() as connection:
        driver.many(connection, insert(_TABLE), [{"tenant": "t1", "name": f"n{k}", "n": k} for k in range(3)])
        written, read = driver.together(
            connection, [(bump, {"tenant": "t1", "at": 1}), (count, {"tenant": "t1"})], commit=True
        )
    assert (written, read) == ([], [(0,), (2,), (11,)])
    with pytest.raises(IntegrityError), engine.begin() as connection:
        driver.many(
            connection, insert(_TABLE), [{"tenant": "t1", "name": "n3", "n": 3}, {"tenant": "t1", "name": "n0", "n": 5}]
        )
    with engine.connect() as connection:
        assert driver.rows(connection, driver.compiled(count, engine.dialect), {"tenant": "t1"}) == [(0,), (2,), (11,)]
