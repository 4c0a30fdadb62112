"""Usage on PostgreSQL: the Storage of production.

Ingest stages a batch with COPY; ingest and purge serialise per tenant on an advisory lock; GetUsage is
sent on the pooled psycopg cursor; a rollup runs in passes over one snapshot (rollup_pass.py), applied in
short transactions, with any number of workers at once.
"""

from __future__ import annotations

import secrets
from functools import partial

from sqlalchemy import Connection, String, any_, bindparam, func, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from tollgate.services.usage.domain.queries import UsageQuery
from tollgate.services.usage.domain.read_plan import ReadPlan
from tollgate.services.usage.repository import Sessions, in_transaction, ingest
from tollgate.services.usage.repository.postgres import rollup_pass, totals
from tollgate.services.usage.repository.postgres.bulk_ingest import FEW, copy_insert, insert_few
from tollgate.services.usage.repository.postgres.meters import PIECES as METER_PIECES
from tollgate.services.usage.repository.rollups import RefusedBucket, RollupOutcome
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import audit_head, audit_records
from tollgate.shared import audit_chain, clock, db

# Ingest holds this lock shared and a purge exclusive, per tenant. Each is a statement of its own, over no
# table (a lock taken inside a query over a distributed table would run on whichever node holds the shard).
_LOCK_SHARED = text("SELECT pg_advisory_xact_lock_shared(:space, hashtext(:tenant))")
_LOCK_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(:space, hashtext(:tenant))")
_LOCK_SPACE = 0x54475048  # "TGPH": keeps these keys apart from any other advisory lock of the database
# A transaction adding a tenant's new dimension combinations of a metric holds this one, keyed by both; only a batch
# bringing a combination this process does not know takes it. Two keys hashing alike merely wait for each other.
_LOCK_COMBINATIONS = text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))")
_COMBINATIONS_SPACE = 0x54474443  # "TGDC"
# A rollup: buckets written per apply transaction (which bounds how long its row locks are held), dirty marks
# read per pass (which bounds its temp tables), and when a pass reads its days with one sequential scan rather
# than one index range each: from SCAN_FROM day marks on, if under VISIBLE_ENOUGH of the events table is
# all-visible (see rollup_days.py).
CLAIM_SIZE = 1000
PASS_SIZE = 100_000
SCAN_FROM = 5_000
VISIBLE_ENOUGH = 0.9


class PostgresStorage(Storage):
    name = "postgresql"
    chain = audit_chain.AuditChain(audit_records, audit_head, snapshot=db.repeatable_read)
    meters = METER_PIECES
    insert = staticmethod(postgresql.insert)
    greatest = staticmethod(func.greatest)

    def one_of(self, column, values: list[str]):
        # One array parameter instead of one per value: far less to convert and plan for a batch of 1,000.
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(String)))

    def ingest_lock(self, tenant_id: str) -> list[tuple[Executable, dict]]:
        return [(_LOCK_SHARED, {"space": _LOCK_SPACE, "tenant": tenant_id})]

    def lock_for_purge(self, session: Session, tenant_id: str) -> None:
        session.execute(_LOCK_EXCLUSIVE, {"space": _LOCK_SPACE, "tenant": tenant_id})

    def lock_combinations(self, session: Session, tenant_id: str, metric: str) -> None:
        # Unit separator between the two: neither a tenant id nor a metric name can hold it.
        session.execute(_LOCK_COMBINATIONS, {"space": _COMBINATIONS_SPACE, "key": f"{tenant_id}\x1f{metric}"})

    def insert_events(self, session: Session, rows: list[tuple], *, bulk: bool) -> set[str]:
        # COPY once per transaction: a batch's later rounds (events sharing keys) are few rows each.
        if len(rows) <= FEW:
            return insert_few(session, rows)
        return copy_insert(session, rows) if bulk else ingest.insert_rows(session, rows, storage=self)

    def usage_totals(self, connection: Connection, query: UsageQuery, plan: ReadPlan) -> tuple[list[tuple], int | None]:
        return totals.usage_totals(connection, query, plan)

    def roll_up(self, sessions: Sessions, tenant_id: str | None, max_buckets: int) -> RollupOutcome:
        """Passes, each computing up to PASS_SIZE buckets in one snapshot and applying them CLAIM_SIZE at a time.

        A pass holds no row locks, however many events it reads; each apply transaction writes at most
        CLAIM_SIZE buckets, clearing only the marks still at the version the pass read (FOR UPDATE SKIP
        LOCKED), so workers may run at once. Every transaction may run on its own connection (PgBouncer
        transaction pooling).
        """
        done = 0
        refused: dict[tuple, RefusedBucket] = {}  # by its key (tenant, metric, period, start): once per run
        while not max_buckets or done < max_buckets:
            limit = PASS_SIZE if not max_buckets else min(PASS_SIZE, max_buckets - done)
            pass_id = secrets.randbits(63)
            try:
                computed = in_transaction(
                    sessions, partial(_compute_pass, pass_id=pass_id, tenant_id=tenant_id, limit=limit)
                )
                claims = range(computed.first - 1, computed.last, CLAIM_SIZE) if computed.last else ()
                applied = sum(
                    in_transaction(sessions, partial(_apply_claim, pass_id=pass_id, after=after)) for after in claims
                )
            finally:
                in_transaction(sessions, partial(rollup_pass.drop_pass, pass_id=pass_id))
            done += applied
            refused.update((bucket[:4], bucket) for bucket in computed.refused)
            # A full pass may have left marks behind it; a pass whose marks all changed meanwhile stops the run.
            if computed.found < limit or not applied:
                break
        return RollupOutcome(done, list(refused.values()))


def _compute_pass(session: Session, *, pass_id: int, tenant_id: str | None, limit: int) -> rollup_pass.Pass:
    return rollup_pass.compute_pass(
        session, pass_id, tenant_id, limit, clock.now_micros(), scan_from=SCAN_FROM, visible_enough=VISIBLE_ENOUGH
    )


def _apply_claim(session: Session, *, pass_id: int, after: int) -> int:
    return rollup_pass.apply_pass(session, pass_id, after, CLAIM_SIZE, clock.now_micros())


POSTGRES = PostgresStorage()
