"""SQL over the audit chain and the policy versions it drives."""

from __future__ import annotations

from sqlalchemy import func, insert, select, update

from services.policy import tables
from services.policy.audit import AuditRecord

CATALOG = ""  # the policy_versions key of the platform-wide catalog
R = tables.audit_records


def lock_head(session) -> tuple[int, str]:
    """(sequence, hash) of the chain's last link, locked until commit so appends queue, never fork."""
    row = session.execute(select(tables.audit_head.c.sequence, tables.audit_head.c.hash)
                          .where(tables.audit_head.c.id == 1).with_for_update()).one()
    return row.sequence, row.hash


def head(session) -> tuple[int, str]:
    row = session.execute(select(tables.audit_head.c.sequence, tables.audit_head.c.hash)
                          .where(tables.audit_head.c.id == 1)).one()
    return row.sequence, row.hash


def append(session, record: AuditRecord) -> None:
    """Insert the record and move the head to it (the caller holds the head lock)."""
    session.execute(insert(R).values(**record.__dict__))
    session.execute(update(tables.audit_head).where(tables.audit_head.c.id == 1)
                    .values(sequence=record.sequence, hash=record.hash))


def records(session, *, tenant_id: str | None, after: int, limit: int) -> list[AuditRecord]:
    """Records after a sequence, oldest first; only one tenant's when tenant_id is given."""
    query = select(R).where(R.c.sequence > after).order_by(R.c.sequence).limit(limit)
    if tenant_id is not None:
        query = query.where(R.c.tenant_id == tenant_id)
    return [AuditRecord(**row._mapping) for row in session.execute(query)]


def bump_version(session, tenant_id: str, version: int) -> None:
    """Set a tenant's (or the catalog's) policy version to the sequence of its latest change."""
    updated = session.execute(update(tables.policy_versions).where(tables.policy_versions.c.tenant_id == tenant_id)
                              .values(version=version)).rowcount
    if not updated:
        session.execute(insert(tables.policy_versions).values(tenant_id=tenant_id, version=version))


def version_of(session, tenant_id: str) -> int:
    """The tenant's policy version: the latest change to its data or to the catalog ('' = catalog only)."""
    keys = {CATALOG, tenant_id}
    found = session.execute(select(func.max(tables.policy_versions.c.version))
                            .where(tables.policy_versions.c.tenant_id.in_(keys))).scalar()
    return found or 0


def changed_since(session, version: int) -> list[tuple[str, int]]:
    """(tenant_id, version) of every tenant (and '' for the catalog) changed after `version`."""
    query = select(tables.policy_versions.c.tenant_id, tables.policy_versions.c.version) \
        .where(tables.policy_versions.c.version > version)
    return [(row.tenant_id, row.version) for row in session.execute(query)]


def latest_version(session) -> int:
    return session.execute(select(func.max(tables.policy_versions.c.version))).scalar() or 0
