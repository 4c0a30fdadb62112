"""RecordEvents and StreamEvents: judge every event of a batch, store each new one exactly once."""

from __future__ import annotations

from functools import partial

from tollgate.services.usage import metrics
from tollgate.services.usage.domain import admission, dedup, marks
from tollgate.services.usage.domain.model import Candidate, EventBatch, EventResult, IngestRules, Verdict
from tollgate.services.usage.repository import Session, Sessions, in_transaction
from tollgate.services.usage.repository import catalog as catalog_sql
from tollgate.services.usage.repository import ingest as ingest_sql
from tollgate.services.usage.repository import purge as purge_sql
from tollgate.services.usage.repository import rollups as rollups_sql
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service.checks import check_tenant
from tollgate.shared import auth, clock
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import Unavailable


def record_events(
    batch: EventBatch, *, sessions: Sessions, storage: Storage, rules: IngestRules, caller: Principal
) -> list[EventResult]:
    """Store each new event once; report duplicates, conflicts and rejections per event, in order."""
    check_tenant(batch.tenant_id)  # before authorization: an empty or malformed tenant is no one's to deny
    auth.require_tenant(caller, batch.tenant_id)
    admission.check_batch(batch)
    results, classification_of = in_transaction(
        sessions, partial(_judge_batch, batch=batch, rules=rules, storage=storage)
    )
    metrics.count(results, classification_of)
    return results


def _judge_batch(
    session: Session, *, batch: EventBatch, rules: IngestRules, storage: Storage
) -> tuple[list[EventResult], dict[int, str]]:
    """Admit the batch against the catalog and the tenant's purge horizon, store the new events, mark their buckets
    dirty; the results in order, and the classification of each event by index (for the metrics)."""
    now_us = clock.now_micros()
    catalog = catalog_sql.ingest_catalog(session)
    horizon_us = purge_sql.horizon_for_ingest(session, batch.tenant_id, storage=storage)
    admitted = admission.admit_batch(batch, catalog=catalog, rules=rules, now_us=now_us, horizon_us=horizon_us)
    stored = _store(session, batch.tenant_id, admitted.candidates, now_us, storage)
    accepted = [batch.events[result.index] for result in stored if result.verdict is Verdict.ACCEPTED]
    rollups_sql.mark_dirty(session, batch.tenant_id, marks.dirty_marks(accepted), now_us, storage=storage)
    return admission.in_order(admitted.rejected + stored), admission.classification_names(
        batch, catalog.classification_of
    )


def _store(
    session: Session, tenant_id: str, pending: list[Candidate], now_us: int, storage: Storage
) -> list[EventResult]:
    """Insert in rounds of events sharing no key; a refused event is judged against what is stored.

    Usually one round; each event sharing a key with an earlier one of its batch adds at most one.
    An event refused by a key whose row is gone by the time we look (a concurrent purge) goes round again.
    """
    results: list[EventResult] = []
    for round_number in range(len(pending) + 3):
        if not pending:
            return results
        now, later = dedup.plan_round(pending)
        inserted = ingest_sql.insert_new(session, tenant_id, now, now_us, bulk=round_number == 0, storage=storage)
        refused = dedup.refused(now, inserted)
        stored = (
            ingest_sql.find_existing(session, tenant_id, dedup.lookup_keys(refused), storage=storage) if refused else ()
        )
        judged, unresolved = dedup.judge_round(now, inserted, stored)
        results += judged
        pending = sorted(unresolved + later, key=lambda c: c.index)
    raise Unavailable("the batch kept colliding with concurrent changes; retry it")
