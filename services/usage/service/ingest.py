"""RecordEvents and StreamEvents: judge every event of a batch, store each new one exactly once."""

from __future__ import annotations

from functools import partial

from shared import auth, clock
from shared.credentials import Principal
from shared.errors import Unavailable

from services.usage import metrics
from services.usage.domain import admission, buckets, dedup
from services.usage.domain.model import Candidate, EventBatch, EventResult, IngestRules, RejectReason, Verdict
from services.usage.repository import catalog as catalog_sql
from services.usage.repository import in_transaction
from services.usage.repository import ingest as ingest_sql
from services.usage.repository import purge as purge_sql
from services.usage.repository import rollups as rollups_sql
from services.usage.repository.storage import Storage
from services.usage.service.checks import check_tenant


def record_events(batch: EventBatch, *, sessions, storage: Storage, rules: IngestRules,
                  caller: Principal) -> list[EventResult]:
    """Store each new event once; report duplicates, conflicts and rejections per event, in order."""
    check_tenant(batch.tenant_id)  # before authorization: an empty or malformed tenant is no one's to deny
    auth.require_tenant(caller, batch.tenant_id)
    admission.check_batch(batch)
    results, classification_of = in_transaction(sessions, partial(_judge_batch, batch=batch, rules=rules,
                                                                  storage=storage))
    metrics.count(results, classification_of)
    return results


def _judge_batch(session, *, batch: EventBatch, rules: IngestRules,
                 storage: Storage) -> tuple[list[EventResult], dict[int, str]]:
    now_us = clock.now_micros()
    catalog, without_business_key = catalog_sql.ingest_catalog(session)
    horizon = purge_sql.horizon_for_ingest(session, batch.tenant_id, storage=storage)
    results: list[EventResult | None] = [None] * len(batch.events)
    candidates = []
    for index, event in enumerate(batch.events):
        admitted = admission.admit(index, event, catalog=catalog, rules=rules, now_us=now_us)
        if horizon is not None and isinstance(admitted, Candidate) and buckets.reaches_before(event.occurred_at_us,
                                                                                              horizon):
            admitted = admission.rejected(index, event, RejectReason.TOO_OLD,
                                       f"occurred_at falls in a week or month whose raw events were purged "
                                       f"(this tenant's history is final before {clock.iso(horizon)})")
        if isinstance(admitted, Candidate):
            if without_business_key and event.metric in without_business_key:
                admitted = admitted._replace(business_key=False)
            candidates.append(admitted)
        else:
            results[index] = admitted
    hours: dict[tuple[str, int], int] = {}  # (metric, day) -> bits of its hours with accepted events
    for result in _store(session, batch.tenant_id, candidates, now_us, storage):
        results[result.index] = result
        if result.verdict is Verdict.ACCEPTED:
            event = batch.events[result.index]
            day = buckets.start_of(buckets.Period.DAY, event.occurred_at_us)
            bit = 1 << (event.occurred_at_us - day) // buckets.HOUR_US
            hours[(event.metric, day)] = hours.get((event.metric, day), 0) | bit
    # A day lies in one ISO week and one month: the buckets of its start are those of every instant in it,
    # and a batch has far fewer distinct days than events.
    dirty: dict[tuple[str, int, int], int] = {}
    for (metric, day), bits in hours.items():
        for period, start in buckets.marked_buckets_of(day):
            dirty[(metric, period, start)] = bits if period is buckets.Period.DAY else buckets.ALL_HOURS
    rollups_sql.mark_dirty(session, batch.tenant_id, dirty, now_us, storage=storage)
    classification_of = {i: catalog[e.metric].name for i, e in enumerate(batch.events) if e.metric in catalog}
    return results, classification_of


def _store(session, tenant_id: str, pending: list[Candidate], now_us: int, storage: Storage) -> list[EventResult]:
    """Insert in rounds of events sharing no key; a refused event is judged against what is stored.

    Usually one round; each event sharing a key with an earlier one of its batch adds at most one.
    An event refused by a key whose row is gone by the time we look (a concurrent purge) goes round again.
    """
    results = []
    for round_number in range(len(pending) + 3):
        if not pending:
            return results
        now, later = dedup.plan_round(pending)
        inserted = ingest_sql.insert_new(session, tenant_id, now, now_us, bulk=round_number == 0, storage=storage)
        refused = [c for c in now if c.event.event_id not in inserted]
        stored = dedup.StoredIndex(ingest_sql.find_existing(session, tenant_id, refused, storage=storage)
                                   if refused else ())
        unresolved = []
        for candidate in now:
            result = dedup.accepted(candidate) if candidate.event.event_id in inserted else stored.judge(candidate)
            if result is None:
                unresolved.append(candidate)
            else:
                results.append(result)
        pending = sorted(unresolved + later, key=lambda c: c.index)
    raise Unavailable("the batch kept colliding with concurrent changes; retry it")

