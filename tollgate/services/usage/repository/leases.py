"""SQL of job leases: which instance runs a scheduled job now."""

from __future__ import annotations

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from tollgate.services.usage.repository import rowcount
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.tables import job_leases


def take(session: Session, name: str, holder: str, now_us: int, ttl_us: int, *, storage: Storage) -> bool:
    """Hold the lease of job `name` until now + ttl when it is free, expired or already the holder's.

    Two instances taking it at once both update the one row: the second waits for the first and
    then finds it held (PostgreSQL re-checks the condition on the row the first wrote).
    """
    session.execute(storage.insert(job_leases).on_conflict_do_nothing(), dict(name=name, holder="", expires_at_us=0))
    taken = rowcount(
        session.execute(
            update(job_leases)
            .where(job_leases.c.name == name, or_(job_leases.c.expires_at_us < now_us, job_leases.c.holder == holder))
            .values(holder=holder, expires_at_us=now_us + ttl_us)
        )
    )
    return taken == 1


def give_back(session: Session, name: str, holder: str) -> None:
    """Free the lease now, if `holder` still holds it."""
    session.execute(
        update(job_leases).where(job_leases.c.name == name, job_leases.c.holder == holder).values(expires_at_us=0)
    )
