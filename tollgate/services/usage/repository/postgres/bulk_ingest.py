"""Ingest on PostgreSQL: a batch staged with COPY into a temp table, then inserted from it in one statement; a
batch of a few events inserted straight, one prepared statement per event, all in one round trip."""

from __future__ import annotations

from operator import itemgetter

from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from tollgate.services.usage.repository.ingest import COLUMNS
from tollgate.services.usage.tables import events
from tollgate.shared import driver

# Up to this many rows, staging costs more than it saves: creating the temp table, the COPY's own round trips and
# emptying the table at COMMIT (ON COMMIT DELETE ROWS) against one INSERT per row, pipelined.
FEW = 4

_STAGE = "pg_temp.usage_events_stage"
# Rows of a temp table are transactional: a rolled-back batch leaves nothing behind.
_STAGE_DDL = 'CREATE TEMP TABLE IF NOT EXISTS usage_events_stage (LIKE "usage".events) ON COMMIT DELETE ROWS'
_COPY = f"COPY {_STAGE} ({', '.join(COLUMNS)}) FROM STDIN"
# Sorted so that two batches sharing keys lock them in the same order (no deadlock on the PK).
# Columns named: the table's generated digest (migration usage_0010) is PostgreSQL's to fill.
_INSERT = (
    f'INSERT INTO "usage".events ({", ".join(COLUMNS)}) SELECT {", ".join(COLUMNS)} FROM {_STAGE} '
    f"ORDER BY event_id ON CONFLICT DO NOTHING "
    f"RETURNING event_id"
)


def copy_insert(session: Session, rows: list[tuple]) -> set[str]:
    """Insert the rows (ingest.COLUMNS) no unique key refuses, staged with COPY; the event ids inserted."""
    driver = session.connection().connection.driver_connection
    assert driver is not None  # None only once the pool has detached it, never inside a transaction
    with driver.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        with cursor.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(_INSERT)
        return {row[0] for row in cursor.fetchall()}


_INSERT_ONE = (
    postgresql.insert(events)
    .values({name: bindparam(name, type_=events.c[name].type) for name in COLUMNS})
    .on_conflict_do_nothing()
    .returning(events.c.event_id)
)
_EVENT_ID = itemgetter(COLUMNS.index("event_id"))


def insert_few(session: Session, rows: list[tuple]) -> set[str]:
    """copy_insert for a few rows (FEW): each inserted by a statement of its own, in event id order as there, all
    sent in one round trip."""
    statements = [(_INSERT_ONE, dict(zip(COLUMNS, row))) for row in sorted(rows, key=_EVENT_ID)]
    return {inserted[0] for rows_back in driver.together(session.connection(), statements) for inserted in rows_back}
