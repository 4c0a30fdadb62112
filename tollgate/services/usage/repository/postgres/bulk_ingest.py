"""Bulk ingest on PostgreSQL: a batch staged with COPY into a temp table, then inserted from it in one statement."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tollgate.services.usage.repository.ingest import COLUMNS

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
