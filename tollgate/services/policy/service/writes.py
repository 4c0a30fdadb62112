"""The one way admin writes happen: under the chain-head lock, audited, versioned, then the cache told."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tollgate.services.policy import metrics
from tollgate.services.policy.cache import SnapshotCache
from tollgate.services.policy.repository import Session, Sessions, chain
from tollgate.shared.clock import now_micros
from tollgate.shared.credentials import Principal

R = TypeVar("R")


@dataclass(frozen=True)
class Change:
    """What a write changed: the audit target and the change itself (JSON-able)."""

    target: str
    change: dict


def audited_write(
    *,
    sessions: Sessions,
    cache: SnapshotCache,
    caller: Principal,
    action: str,
    tenant_id: str,
    apply: Callable[[Session, int], tuple[Change | None, R]],
) -> tuple[R, int]:
    """Run `apply(session, now_us)`; when it reports a change, append the audit record and bump the version.

    `tenant_id` '' is the catalog. Returns apply's result and the policy version after the write; a
    write that changes nothing appends nothing and leaves the version as it was.
    """
    with sessions.begin() as session:
        head = chain.AUDIT.lock_head(session)
        now_us = now_micros()
        change, result = apply(session, now_us)
        if change is None:
            version = chain.version_of(session, tenant_id)
        else:
            version = chain.AUDIT.append_after(
                session,
                head,
                time_us=now_us,
                actor=caller.token_id,
                action=action,
                target=change.target,
                tenant_id=tenant_id,
                change=change.change,
            ).sequence
            chain.bump_version(session, tenant_id, version)
    if change is not None:
        cache.advance(tenant_id, version)  # before answering: this process never serves the older snapshot
    metrics.ADMIN_WRITES.labels(action, "changed" if change else "unchanged").inc()
    return result, version
