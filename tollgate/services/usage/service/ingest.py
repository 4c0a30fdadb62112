"""RecordEvents and StreamEvents: judge every event of a batch, store each new one exactly once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from functools import partial

from tollgate.services.usage import metrics
from tollgate.services.usage.domain import admission, dedup, marks
from tollgate.services.usage.domain.admission import Admitted, Combination
from tollgate.services.usage.domain.model import Candidate, EventBatch, EventResult, IngestRules, Verdict
from tollgate.services.usage.repository import Session, Sessions, in_transaction
from tollgate.services.usage.repository import ingest as ingest_sql
from tollgate.services.usage.repository import rollups as rollups_sql
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service.checks import check_tenant
from tollgate.shared import auth, clock
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import Unavailable


class KnownCombinations:
    """The dimension combinations this process has seen stored, per tenant and metric: a bounded cache, least recently
    used out first. A stored combination is never deleted, so one cached is known for good, and a batch carrying only
    known ones costs no statement for the limit; a miss costs one read. Shared by the RPC threads."""

    def __init__(self, capacity: int = 65_536):
        self._capacity = capacity
        self._known: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def unknown(self, tenant_id: str, combinations: list[Combination]) -> list[Combination]:
        """The `combinations` not known to be stored for the tenant, in their order."""
        missing = []
        with self._lock:
            for metric, dimensions in combinations:
                key = (tenant_id, metric, dimensions)
                if key in self._known:
                    self._known.move_to_end(key)
                else:
                    missing.append((metric, dimensions))
        return missing

    def add(self, tenant_id: str, combinations: Iterable[Combination]) -> None:
        """Remember combinations stored for the tenant by committed transactions (never before the commit: a rolled
        back one would be counted by nobody)."""
        with self._lock:
            for metric, dimensions in combinations:
                self._known[(tenant_id, metric, dimensions)] = None
            while len(self._known) > self._capacity:
                self._known.popitem(last=False)


def record_events(
    batch: EventBatch,
    *,
    sessions: Sessions,
    storage: Storage,
    rules: IngestRules,
    caller: Principal,
    known: KnownCombinations,
) -> list[EventResult]:
    """Store each new event once; report duplicates, conflicts and rejections per event, in order."""
    check_tenant(batch.tenant_id)  # before authorization: an empty or malformed tenant is no one's to deny
    auth.require_tenant(caller, batch.tenant_id)
    admission.check_batch(batch)
    results, classification_of, stored_combinations = in_transaction(
        sessions, partial(_judge_batch, batch=batch, rules=rules, storage=storage, known=known)
    )
    known.add(batch.tenant_id, stored_combinations)
    metrics.count(results, classification_of)
    return results


def _judge_batch(
    session: Session, *, batch: EventBatch, rules: IngestRules, storage: Storage, known: KnownCombinations
) -> tuple[list[EventResult], dict[int, str], list[Combination]]:
    """Admit the batch against the catalog, the tenant's purge horizon and its dimension combinations, store the new
    events, mark their buckets dirty; the results in order, the classification of each event by index (for the
    metrics), and the combinations found or registered stored (for `known`, once committed)."""
    now_us = clock.now_micros()
    catalog, horizon_us = ingest_sql.begin_batch(session, batch.tenant_id, storage=storage)
    admitted = admission.admit_batch(batch, catalog=catalog, rules=rules, now_us=now_us, horizon_us=horizon_us)
    admitted, fresh, stored_combinations = _bound_combinations(
        session, batch.tenant_id, admitted, rules=rules, storage=storage, known=known
    )
    stored = _store(session, batch.tenant_id, admitted.candidates, now_us, storage)
    accepted = [batch.events[result.index] for result in stored if result.verdict is Verdict.ACCEPTED]
    rollups_sql.mark_dirty(session, batch.tenant_id, marks.dirty_marks(accepted), now_us, storage=storage)
    if fresh:
        # A new combination counts once an event carrying it is stored; one whose events were all DUPLICATE or
        # CONFLICT costs nothing.
        accepted_indexes = {result.index for result in stored if result.verdict is Verdict.ACCEPTED}
        carried = set(admission.combinations([c for c in admitted.candidates if c.index in accepted_indexes]))
        registered = [combination for combination in fresh if combination in carried]
        ingest_sql.add_combinations(session, batch.tenant_id, registered, now_us, storage=storage)
        stored_combinations += registered
    return (
        admission.in_order(admitted.rejected + stored),
        admission.classification_names(batch, catalog.classification_of),
        stored_combinations,
    )


def _bound_combinations(
    session: Session,
    tenant_id: str,
    admitted: Admitted,
    *,
    rules: IngestRules,
    storage: Storage,
    known: KnownCombinations,
) -> tuple[Admitted, list[Combination], list[Combination]]:
    """Hold the tenant's distinct dimension combinations per metric to the limit: the batch without the events that
    would pass it (REJECTED instead), the new combinations let in, and the stored ones `known` lacked.

    Only combinations this process does not know cost a read, and only new ones the lock of their metric, under
    which they are counted again: what a concurrent batch (another replica's too) added first is seen then.
    """
    unknown = known.unknown(tenant_id, admission.combinations(admitted.candidates))
    if not unknown:
        return admitted, [], []
    stored = ingest_sql.stored_combinations(session, tenant_id, unknown)
    new = [combination for combination in unknown if combination not in stored]
    if not new:
        return admitted, [], list(stored)
    metrics_of_new = sorted({metric for metric, _ in new})
    for metric in metrics_of_new:  # in one order: two batches never hold one lock each and wait for the other's
        storage.lock_combinations(session, tenant_id, metric)
    stored |= ingest_sql.stored_combinations(session, tenant_id, new)
    new = [combination for combination in new if combination not in stored]
    counts = ingest_sql.combination_counts(session, tenant_id, metrics_of_new)
    limit = rules.max_dimension_combinations
    refused = admission.beyond_limit(new, counts, limit)
    fresh = [combination for combination in new if combination not in refused]
    return admission.refuse_combinations(admitted, refused, limit), fresh, list(stored)


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
