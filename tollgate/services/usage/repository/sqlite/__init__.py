"""Usage on SQLite: the embedded Storage (`make run`, small installs), as fully featured as PostgreSQL's.

Every write transaction holds the database's one write lock from its BEGIN, so ingest and purge need no
lock of their own and an audit read is one snapshot as begun; a rollup works in short steps
(rollup_serial.py) so that readers and writers wait at most one step.
"""

from __future__ import annotations

from functools import partial

from sqlalchemy import Connection, func
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from tollgate.services.usage.domain.queries import UsageQuery
from tollgate.services.usage.domain.read_plan import ReadPlan
from tollgate.services.usage.repository import Sessions, in_transaction, ingest
from tollgate.services.usage.repository.rollups import RefusedBucket, RollupOutcome
from tollgate.services.usage.repository.sqlite import rollup_serial, totals
from tollgate.services.usage.repository.sqlite.meters import PIECES as METER_PIECES
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import audit_head, audit_records
from tollgate.shared import audit_chain, clock

# Rows (events, stored rows) a rollup step reads in its one transaction, which holds the write lock; an event
# costs most, its digest being computed in Python.
SERIAL_ROWS = 2000


class SqliteStorage(Storage):
    name = "sqlite"
    chain = audit_chain.AuditChain(audit_records, audit_head)
    meters = METER_PIECES
    insert = staticmethod(sqlite.insert)

    @staticmethod
    def greatest(*values):
        return func.max(*values)  # SQLite's max() of several arguments is scalar, like GREATEST

    def one_of(self, column, values: list[str]):
        return column.in_(values)

    def ingest_lock(self, tenant_id: str) -> list[tuple[Executable, dict]]:
        """Nothing to take: the transaction (BEGIN IMMEDIATE) already excludes every other writer."""
        return []

    def lock_for_purge(self, session: Session, tenant_id: str) -> None:
        """Nothing to take: the transaction (BEGIN IMMEDIATE) already excludes every other writer."""

    def lock_combinations(self, session: Session, tenant_id: str, metric: str) -> None:
        """Nothing to take: the transaction (BEGIN IMMEDIATE) already excludes every other writer."""

    def insert_events(self, session: Session, rows: list[tuple], *, bulk: bool) -> set[str]:
        return ingest.insert_rows(session, rows, storage=self)

    def usage_totals(self, connection: Connection, query: UsageQuery, plan: ReadPlan) -> tuple[list[tuple], int | None]:
        return totals.usage_totals(connection, query, plan)

    def roll_up(self, sessions: Sessions, tenant_id: str | None, max_buckets: int) -> RollupOutcome:
        """Steps of one short transaction each, every mark visited once per run, in key order; a step stops once
        it has read SERIAL_ROWS rows (events and stored rows), at the end of the hour it is in."""
        done, after = 0, None
        refused: dict[tuple, RefusedBucket] = {}  # by its key (tenant, metric, period, start): once per run
        while not max_buckets or done < max_buckets:
            step = in_transaction(
                sessions,
                partial(_step, tenant_id=tenant_id, after=after, max_buckets=max_buckets - done if max_buckets else 0),
            )
            done, after = done + step.done, step.after
            refused.update((bucket[:4], bucket) for bucket in step.refused)
            if step.finished:
                break
        return RollupOutcome(done, list(refused.values()))


def _step(session: Session, *, tenant_id: str | None, after: tuple | None, max_buckets: int) -> rollup_serial.Step:
    return rollup_serial.roll_up_step(
        session, tenant_id, after, budget=SERIAL_ROWS, max_buckets=max_buckets, now_us=clock.now_micros()
    )


SQLITE = SqliteStorage()
