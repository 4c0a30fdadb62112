"""SQL over the audit chain and the policy versions it drives."""

from __future__ import annotations

from sqlalchemy import BigInteger, Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tollgate.services.policy import tables
from tollgate.services.policy.domain.model import CATALOG, VersionChange
from tollgate.services.policy.repository import Sessions, rowcount
from tollgate.shared import driver
from tollgate.shared.audit_chain import AuditChain

AUDIT = AuditChain(tables.audit_records, tables.audit_head)  # the SQL over Policy's audit chain


def bump_version(session: Session, tenant_id: str, version: int) -> None:
    """Set a tenant's (or the catalog's) policy version to the sequence of its latest change."""
    updated = rowcount(
        session.execute(
            update(tables.policy_versions)
            .where(tables.policy_versions.c.tenant_id == tenant_id)
            .values(version=version)
        )
    )
    if not updated:
        session.execute(insert(tables.policy_versions).values(tenant_id=tenant_id, version=version))


def version_of(session: Session, tenant_id: str) -> int:
    """The tenant's policy version: the latest change to its data or to the catalog ('' = catalog only)."""
    keys = {CATALOG, tenant_id}
    found = session.execute(
        select(func.max(tables.policy_versions.c.version)).where(tables.policy_versions.c.tenant_id.in_(keys))
    ).scalar()
    return found or 0


def changed_since(connection: Connection, version: int) -> list[VersionChange]:
    """Every tenant (and CATALOG for the catalog) changed after `version`, at its version now: each replica's
    poller asks every interval, so on PostgreSQL the statement goes straight to psycopg (driver.together)."""
    [rows] = driver.together(connection, [(_CHANGED_SINCE, {"version": version})])
    return [VersionChange(tenant_id, changed) for tenant_id, changed in rows]


_CHANGED_SINCE = select(tables.policy_versions.c.tenant_id, tables.policy_versions.c.version).where(
    tables.policy_versions.c.version > bindparam("version", type_=BigInteger)
)


def latest_version(session: Session) -> int:
    return session.execute(select(func.max(tables.policy_versions.c.version))).scalar() or 0


def start_version(sessions: Sessions) -> int:
    """The latest version in a transaction of its own; 0 before the schema is migrated (health says NOT_SERVING
    meanwhile, and the poller then starts from the beginning)."""
    try:
        with sessions.begin() as session:
            return latest_version(session)
    except SQLAlchemyError:
        return 0
