"""An audit chain in SQL (docs/policy.md, "Audit chain"), for whichever service's (audit_records, audit_head)
pair it is given, and the two use cases every chain answers: list it and verify it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeEngine

from tollgate.shared import audit, auth, pagination
from tollgate.shared.audit import AuditRecord, Verification
from tollgate.shared.credentials import Principal
from tollgate.shared.db import consistent_read

VERIFY_PAGE = 1000  # records held in memory at once while verifying


def audit_tables(metadata: MetaData) -> tuple[Table, Table]:
    """(audit_records, audit_head), declared in the calling service's schema.

    Migration usage_0005 creates the tables from this declaration (policy_0002 spells out the same):
    a new shape of the chain is a new declaration and a migration in each service, never an edit here.
    """
    # sequence is the primary key, so two records can never claim the same place: no fork.
    fields: list[tuple[str, type[TypeEngine[Any]] | TypeEngine[Any]]] = [
        ("time_us", BigInteger),
        ("actor", String(64)),
        ("action", String(64)),
        ("target", String(400)),
        ("tenant_id", String(128)),
        ("change", Text),
        ("change_digest", String(64)),
        ("previous_hash", String(64)),
        ("hash", String(64)),
    ]
    records = Table(
        "audit_records",
        metadata,
        Column("sequence", BigInteger, primary_key=True, autoincrement=False),
        *(Column(name, kind, nullable=False) for name, kind in fields),
    )
    Index("audit_records_tenant_idx", records.c.tenant_id, records.c.sequence)
    # The chain head: one row, locked FOR UPDATE by every append so concurrent writers queue.
    head = Table(
        "audit_head",
        metadata,
        Column("id", Integer, CheckConstraint("id = 1"), primary_key=True),
        Column("sequence", BigInteger, nullable=False),
        Column("hash", String(64), nullable=False),
    )
    return records, head


class AuditChain:
    """The statements over one service's chain tables.

    `snapshot` makes a transaction's statements see one snapshot (db.repeatable_read or db.as_begun): the
    backend's choice, made where the service is wired (by default the one its sessions carry).
    """

    def __init__(self, records: Table, head: Table, *, snapshot: Callable[[Session], None] = consistent_read):
        self._records, self._head, self.snapshot = records, head, snapshot

    def lock_head(self, session: Session) -> tuple[int, str]:
        """(sequence, hash) of the chain's last link, locked until commit so appends queue, never fork.

        On SQLite FOR UPDATE is ignored: BEGIN IMMEDIATE has already made this the only writer.
        """
        return self._read_head(session, lock=True)

    def head(self, session: Session) -> tuple[int, str]:
        return self._read_head(session, lock=False)

    def _read_head(self, session: Session, *, lock: bool) -> tuple[int, str]:
        query = select(self._head.c.sequence, self._head.c.hash).where(self._head.c.id == 1)
        row = session.execute(query.with_for_update() if lock else query).one()
        return row.sequence, row.hash

    def append_after(
        self,
        session: Session,
        head: tuple[int, str],
        *,
        time_us: int,
        actor: str,
        action: str,
        target: str,
        tenant_id: str,
        change: dict,
    ) -> AuditRecord:
        """Append the link after `head` (which the caller has locked) and move the head to it."""
        sequence, previous = head
        record = audit.new_record(
            sequence=sequence + 1,
            time_us=time_us,
            actor=actor,
            action=action,
            target=target,
            tenant_id=tenant_id,
            change=change,
            previous_hash=previous,
        )
        session.execute(insert(self._records).values(**record.__dict__))
        session.execute(
            update(self._head).where(self._head.c.id == 1).values(sequence=record.sequence, hash=record.hash)
        )
        return record

    def records(self, session: Session, *, tenant_id: str | None, after: int, limit: int) -> list[AuditRecord]:
        """Records after a sequence, oldest first; only one tenant's when tenant_id is given."""
        r = self._records
        query = select(r).where(r.c.sequence > after).order_by(r.c.sequence).limit(limit)
        if tenant_id is not None:
            query = query.where(r.c.tenant_id == tenant_id)
        return [AuditRecord(**row._mapping) for row in session.execute(query)]


def list_records(
    chain: AuditChain,
    tenant_id: str,
    *,
    page_size: int,
    page_token: str,
    sessions: sessionmaker[Session],
    caller: Principal,
) -> pagination.Page[AuditRecord]:
    """One page of records oldest first; '' lists every tenant's and the platform's (platform only)."""
    tenants = auth.tenant_scope(caller, tenant_id, "listing every tenant's audit records")
    scope = {"listing": "audit", "tenant": tenant_id}
    cursor = pagination.start(page_size, page_token, scope, shape=(int,))
    with sessions.begin() as session:
        items = chain.records(
            session, tenant_id=tenants, after=cursor.after[0] if cursor.after else 0, limit=cursor.limit + 1
        )
    return cursor.page(items, lambda r: (r.sequence,))


def verify(
    chain: AuditChain, *, sessions: sessionmaker[Session], caller: Principal, page: int = VERIFY_PAGE
) -> Verification:
    """Walk the whole chain from the first record to the head; name the first link that does not check."""
    auth.require_platform(caller, "verifying the audit chain")
    sequence, previous = 0, audit.ZERO_HASH
    while True:
        with sessions.begin() as session:
            chain.snapshot(session)  # the last page and the head must agree
            batch = chain.records(session, tenant_id=None, after=sequence, limit=page)
            head = chain.head(session)
        sequence, previous, broken = audit.check_links(batch, after_sequence=sequence, after_hash=previous)
        if broken is None and len(batch) < page:
            broken = audit.head_break(sequence, previous, *head)
            return Verification(broken is None, sequence, broken)
        if broken is not None:
            return Verification(False, sequence, broken)
