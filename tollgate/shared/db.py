"""Engine factory: SQLite (WAL, busy timeout, foreign keys) or PostgreSQL (psycopg 3, pooled)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Statements psycopg has prepared (after 5 runs) reuse one plan instead of being planned again for
# each call's values: for a large statement with cheap, index-bound execution, such as GetUsage's,
# planning otherwise costs more than running.
# JIT off: it compiles again at every execution of a plan whose cost passes jit_above_cost, as any plan
# does that a disabled node (enable_seqscan = off, below) was forced into, and compiling costs far more
# than running such a plan.
GENERIC_PLANS = {"plan_cache_mode": "force_generic_plan", "jit": "off"}
# For a pool whose every statement an index serves (Usage's reads, each bound by an index on tenant_id;
# Policy's pools, whose reservations and outbox grow from empty). A generic plan
# lives as long as its connection; made while a table is small (dirty_buckets between rollups), it
# would keep scanning that table whole long after it has grown.
INDEXED_PLANS = {**GENERIC_PLANS, "enable_seqscan": "off"}


def normalize_url(url: str) -> str:
    """Route postgres URLs to the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(url_or_engine) -> bool:
    """True for a SQLite URL or engine."""
    name = (
        url_or_engine.dialect.name
        if hasattr(url_or_engine, "dialect")
        else make_url(normalize_url(url_or_engine)).get_backend_name()
    )
    return name == "sqlite"


def create_engine_for(
    url: str,
    *,
    schema: str,
    pool_size: int = 8,
    application_name: str = "tollgate",
    settings: Mapping[str, str] | None = None,
    pre_ping: bool = True,
    autocommit: bool = False,
    driver_prepares: bool = True,
) -> Engine:
    """An engine whose tables live in `schema` (on SQLite, the file stands for the schema).

    `settings` (PostgreSQL): set on every connection the pool opens, e.g. GENERIC_PLANS.

    `pre_ping` tests every pooled connection with a round trip when it is checked out. Without it
    (Usage's hot paths: the ping was a second round trip on every GetUsage), a connection that died
    with its server fails the one call using it, which answers UNAVAILABLE, and SQLAlchemy then
    discards every connection of the pool opened before the failure.

    `autocommit`: on PostgreSQL, every connection of the pool stays in autocommit, for questions
    answered by ONE statement, which is its own snapshot: no BEGIN and COMMIT around it, and no
    switching of the connection's mode at each checkout and checkin (an option on a shared pool
    switches it both ways on every call). Nor a rollback at each checkin, which has no transaction to
    end (SQLAlchemy's reset_on_return=None, meant for pure autocommit). Use it with `connect()`, not
    sessions that write. On SQLite its transactions begin DEFERRED, as readers of the WAL: they see
    the last commit and never wait for the write lock, which a rollup or an ingest may hold.

    `driver_prepares=False` (PostgreSQL): psycopg prepares no statement on the pool's connections, so
    it never sends the DEALLOCATE ALL with which it forgets its own after a rollback: for a pool whose
    hot statements driver.in_one_query prepares itself (Policy's transactions).
    """
    url = normalize_url(url)
    if is_sqlite(url):
        return _sqlite_engine(url, schema, begin="BEGIN" if autocommit else "BEGIN IMMEDIATE")
    engine = create_engine(
        url,
        # The overflow is kept open like the rest: a QueuePool closes an overflow connection when it comes back to a
        # full pool, so under load near the pool's size calls kept opening connections (a PostgreSQL process each)
        # and closing them. The most connections open at once is what it was.
        pool_size=pool_size + max(2, pool_size // 2),
        max_overflow=0,
        pool_timeout=5,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 5,
            "application_name": application_name,
            **({} if driver_prepares else {"prepare_threshold": None}),
        },
        **({"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}),
    )
    if settings:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):
            with dbapi_connection.cursor() as cursor:
                for name, value in settings.items():
                    cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
            dbapi_connection.commit()

    return engine


def _sqlite_engine(url: str, schema: str, *, begin: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8, max_overflow=8)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # SQLAlchemy issues BEGIN itself (below); pysqlite's own transaction handling would defer it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
        # instead of failing when a read transaction tries to upgrade.
        connection.exec_driver_sql(begin)

    # SQLite has no schemas: tables declared in `schema` live in the file's main database.
    return engine.execution_options(schema_translate_map={schema: None})


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for use cases: `with sessions.begin() as session: ...`.

    Each session carries its backend's way of reading one snapshot (consistent_read), chosen here, where the
    engine is made, so no statement below the wiring asks which database it runs on.
    """
    snapshot = as_begun if is_sqlite(engine) else repeatable_read
    return sessionmaker(engine, expire_on_commit=False, info={SNAPSHOT: snapshot})


SNAPSHOT = "tollgate.snapshot"


def repeatable_read(session: Session) -> None:
    """Make every statement of this transaction see one snapshot (PostgreSQL's REPEATABLE READ)."""
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def as_begun(session: Session) -> None:
    """Leave the transaction as it began: on SQLite its BEGIN already holds one snapshot."""


def consistent_read(session: Session) -> None:
    """Make the rest of this transaction read one snapshot, the way session_factory chose for its backend."""
    session.info[SNAPSHOT](session)


def rowcount(result: Result) -> int:
    """The rows an INSERT, UPDATE or DELETE matched."""
    # Session.execute is typed as returning a Result; a DML statement's is a CursorResult, which has the rowcount.
    return cast(CursorResult, result).rowcount
