"""The seam between Usage's use cases and its database: what each backend does its own way.

Usage runs on PostgreSQL and on an embedded SQLite file (`make run`, small installs), fully featured on
both. The statements the two share live in the modules beside this one; what differs (the SQL dialect's
INSERT ... ON CONFLICT, the purge lock, bulk ingest, GetUsage's statement and how it is sent, the rollup
engine, the audit chain's snapshot) is a method of a Storage, implemented once in postgres/ and once in
sqlite/. The wiring (server.build) picks one from the database URL; no use case asks which database it
runs on, and no statement module does either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.sql import Executable

    from tollgate.services.usage.domain.queries import UsageQuery
    from tollgate.services.usage.domain.read_plan import ReadPlan
    from tollgate.services.usage.repository import Session, Sessions
    from tollgate.services.usage.repository.meters import MeterPieces
    from tollgate.services.usage.repository.rollups import RollupOutcome
    from tollgate.shared.audit_chain import AuditChain


class Storage(ABC):
    """One backend of the Usage service; stateless, one instance per backend."""

    name: str
    chain: AuditChain  # Usage's audit chain, reading one snapshot the backend's way
    meters: MeterPieces  # what QueryUsage's statements write the backend's way (repository/meters.py)

    @staticmethod
    @abstractmethod
    def insert(table):
        """INSERT into `table`, with the dialect's ON CONFLICT clauses."""

    @staticmethod
    @abstractmethod
    def greatest(*values):
        """The SQL expression of the largest of `values`."""

    @abstractmethod
    def one_of(self, column, values: list[str]):
        """The condition `column` is one of `values`."""

    @abstractmethod
    def ingest_lock(self, tenant_id: str) -> list[tuple[Executable, dict]]:
        """The statements taking the ingest side of the tenant's purge lock until commit (many ingests at once, no
        purge), sent with the batch's first reads (ingest.begin_batch)."""

    @abstractmethod
    def lock_for_purge(self, session: Session, tenant_id: str) -> None:
        """Take the purge side of the tenant's purge lock until commit: no ingest meanwhile."""

    @abstractmethod
    def lock_combinations(self, session: Session, tenant_id: str, metric: str) -> None:
        """Take the lock of the tenant's dimension combinations of `metric` until commit: one transaction at a time
        counts and adds them, so no number of replicas exceeds the limit."""

    @abstractmethod
    def insert_events(self, session: Session, rows: list[tuple], *, bulk: bool) -> set[str]:
        """Insert event rows (ingest.COLUMNS) no unique key refuses; the event ids inserted.

        `bulk` marks the transaction's first insert, where a backend may stage the batch its fastest way.
        """

    @abstractmethod
    def usage_totals(self, connection: Connection, query: UsageQuery, plan: ReadPlan) -> tuple[list[tuple], int | None]:
        """GetUsage in one statement: (metric, actor_id, quantity, event_count, classification) rows sorted by
        metric and actor, and the tenant's purge horizon (None when never purged)."""

    @abstractmethod
    def roll_up(self, sessions: Sessions, tenant_id: str | None, max_buckets: int) -> RollupOutcome:
        """Recompute dirty buckets of the tenant (None: of every tenant) until none is left, or `max_buckets`
        (0: no bound) are done, in as many transactions as the backend needs."""
