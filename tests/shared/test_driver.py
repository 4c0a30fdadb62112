"""tollgate/shared/driver.py on a real PostgreSQL: statements compiled once to numbered placeholders run as
SQLAlchemy would run them, whatever their length, with parameters repeated, literal percent signs and constants."""

from __future__ import annotations

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    MetaData,
    String,
    Table,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

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


def _with_table(engine):
    _TABLE.drop(engine, checkfirst=True)
    _TABLE.create(engine)
    yield engine
    _TABLE.drop(engine)
    engine.dispose()


@pytest.fixture
def engine(postgres_url):
    yield from _with_table(create_engine_for(postgres_url, schema="public"))


@pytest.fixture
def unprepared(postgres_url):
    """An engine whose connections psycopg prepares nothing on, as in_one_query needs."""
    yield from _with_table(create_engine_for(postgres_url, schema="public", driver_prepares=False))


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


def _prepared_here(connection) -> list[str]:
    """The statements in_one_query prepared on this connection, as the server lists them."""
    with connection.begin():
        found = connection.exec_driver_sql(
            "SELECT name FROM pg_prepared_statements WHERE starts_with(name, 'tollgate')"
        )
        return sorted(name for (name,) in found)


def test_in_one_query_writes_reads_and_commits_with_values_written_as_literals(unprepared):
    t = _TABLE.c
    named = select(t.name, t.n).where(t.tenant == TENANT).order_by(t.name)
    odd = [("t'1", "100% it's", -(2**62)), ("t'1", "back\\slash", None), ("t'1", "é ü", 7)]
    with unprepared.connect() as connection:
        for tenant, name, n in odd:
            with connection.begin():
                written, read = driver.in_one_query(
                    connection,
                    [
                        (insert(_TABLE), {"tenant": tenant, "name": name, "n": n if n is not None else 0}),
                        (named, {"tenant": tenant}),
                    ],
                    commit=True,
                )
            assert written == [] and (name, n if n is not None else 0) in read
        assert len(_prepared_here(connection)) == 2  # each statement prepared once on the connection, then reused
    with unprepared.connect() as connection:
        expected = [tuple(row) for row in connection.execute(named, {"tenant": "t'1"})]
    assert sorted(expected) == sorted((name, n if n is not None else 0) for _, name, n in odd)


def test_in_one_query_reads_back_each_kind_of_value_as_written_and_refuses_text_postgresql_cannot_hold(unprepared):
    kinds = {"i": BigInteger(), "s": String(), "b": Boolean(), "f": Float(), "none": String()}
    echo = select(*[cast(bindparam(name), kind).label(name) for name, kind in kinds.items()])
    sent = {"i": -(2**63), "s": "it's a \\ back\nslash é", "b": False, "f": 2.5, "none": None}
    with unprepared.connect() as connection:
        [read] = driver.in_one_query(connection, [(echo, sent)])
        assert read == [tuple(sent.values())]
        with pytest.raises(DBAPIError, match="NUL"):
            driver.in_one_query(connection, [(echo, {**sent, "s": "a\x00b"})])


def test_in_one_query_stops_at_an_error_which_is_sqlalchemys_and_its_transaction_writes_nothing(unprepared):
    t = _TABLE.c
    total = select(func.count()).select_from(_TABLE).where(t.tenant == TENANT)
    bump = _TABLE.update().where(t.tenant == TENANT).values(n=t.n + 1)
    with unprepared.begin() as connection:
        connection.execute(insert(_TABLE), {"tenant": "t1", "name": "a", "n": 1})
    with unprepared.connect() as connection:
        with pytest.raises(IntegrityError), connection.begin():
            # a statement new to the connection, then the error: the rest of the message is not run
            driver.in_one_query(
                connection,
                [
                    (bump, {"tenant": "t1"}),
                    (insert(_TABLE), {"tenant": "t1", "name": "a", "n": 5}),
                    (total, {"tenant": "t1"}),
                ],
                commit=True,
            )
        with connection.begin():  # the same connection: what the failed message prepared is used, not prepared again
            [_, [(count,)]] = driver.in_one_query(connection, [(bump, {"tenant": "t1"}), (total, {"tenant": "t1"})])
        assert count == 1
        assert connection.execute(select(t.n)).scalar_one() == 2  # the failed bump rolled back, the second committed


def test_in_one_query_leaves_the_transaction_to_its_caller_without_commit(unprepared):
    with unprepared.connect() as connection:
        with connection.begin() as transaction:
            driver.in_one_query(connection, [(insert(_TABLE), {"tenant": "t1", "name": "gone", "n": 1})])
            transaction.rollback()
        with connection.begin():
            driver.in_one_query(connection, [(insert(_TABLE), {"tenant": "t1", "name": "kept", "n": 1})])
        assert [name for (name,) in connection.execute(select(_TABLE.c.name))] == ["kept"]


def test_in_one_query_keeps_at_most_its_limit_of_statements_prepared_on_a_connection(unprepared, monkeypatch):
    monkeypatch.setattr(driver, "PREPARED_PER_CONNECTION", 2)
    t = _TABLE.c
    questions = [select(t.n + k).where(t.tenant == TENANT) for k in range(4)]
    with unprepared.begin() as connection:
        connection.execute(insert(_TABLE), {"tenant": "t1", "name": "a", "n": 10})
    with unprepared.connect() as connection:
        for k in [0, 1, 2, 3, 0, 2]:  # the least recently used go; one asked again is prepared again
            with connection.begin():
                assert driver.in_one_query(connection, [(questions[k], {"tenant": "t1"})]) == [[(10 + k,)]]
            assert len(_prepared_here(connection)) <= 2


def test_in_one_query_prepares_nothing_itself_where_psycopg_prepares(engine):
    # psycopg would deallocate in_one_query's statements with its own after a rollback; behind PgBouncer only its
    # protocol-level prepared statements follow the client from one server connection to the next
    t = _TABLE.c
    with engine.connect() as connection:
        for n in range(7):  # past psycopg's threshold of 5, after which it prepares
            with connection.begin():
                driver.in_one_query(connection, [(insert(_TABLE), {"tenant": "t1", "name": f"n{n}", "n": n})])
                [[(count,)]] = driver.in_one_query(
                    connection, [(select(func.count()).where(t.tenant == TENANT), {"tenant": "t1"})]
                )
            assert count == n + 1
        assert _prepared_here(connection) == []
