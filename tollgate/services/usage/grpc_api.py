"""Usage servicers: proto in, one service call, proto out."""

from __future__ import annotations

import grpc
import sqlalchemy.exc

from tollgate.services.usage import grpc_convert as convert
from tollgate.services.usage import metrics
from tollgate.services.usage.config import Settings
from tollgate.services.usage.domain.model import IngestRules
from tollgate.services.usage.domain.queries import EventFilter, UsageQuery
from tollgate.services.usage.repository import Connections, Sessions
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service import audit, catalog, ingest, meters, purge, reads, rollups
from tollgate.shared import grpc_audit, grpc_errors
from tollgate.shared.auth import principal
from tollgate.shared.encoded import EncodedResponses
from tollgate.shared.errors import TollgateError
from tollgate.usage.v1 import usage_pb2, usage_pb2_grpc

USAGE = "tollgate.usage.v1.UsageService"
ADMIN = "tollgate.usage.v1.UsageAdminService"

# The scope each RPC needs; an RPC missing here is refused to every credential.
METHOD_SCOPES = {
    f"/{USAGE}/RecordEvents": "usage:write",
    f"/{USAGE}/StreamEvents": "usage:write",
    f"/{USAGE}/GetUsage": "usage:read",
    f"/{USAGE}/ListAggregates": "usage:read",
    f"/{USAGE}/ListEvents": "usage:read",
    f"/{USAGE}/ListMetrics": "usage:read",
    f"/{USAGE}/QueryUsage": "usage:read",
    f"/{USAGE}/ListDimensionValues": "usage:read",
    f"/{ADMIN}/RunRollup": "usage:admin",
    f"/{ADMIN}/GetRollupStatus": "usage:admin",
    f"/{ADMIN}/UpsertMetric": "usage:admin",
    f"/{ADMIN}/PurgeEvents": "usage:admin",
    f"/{ADMIN}/ListAuditRecords": "usage:admin",  # a tenant's own records; every tenant's: platform only
    f"/{ADMIN}/VerifyAudit": "usage:admin",  # platform only
}

# google.rpc.Status codes are gRPC's status codes: their names, as the metrics label them.
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def ingest_rules(settings) -> IngestRules:
    """The validation settings of ingestion, in microseconds."""
    return IngestRules(
        future_skew_us=settings.future_skew_seconds * 1_000_000,
        backfill_us=settings.backfill_days * 86_400_000_000,
        external_prefixes=tuple(settings.external_prefixes),
        max_dimension_combinations=settings.max_dimension_combinations,
    )


class UsageApi(usage_pb2_grpc.UsageServiceServicer):
    """tollgate.usage.v1.UsageService."""

    def __init__(self, *, sessions: Sessions, connections: Connections, storage: Storage, settings: Settings):
        self._sessions, self._storage = sessions, storage
        self._reads = connections  # GetUsage, ListAggregates and ListEvents are one statement each
        self._settings = settings
        self._rules = ingest_rules(settings)
        self._combinations = ingest.KnownCombinations()
        self._metrics = meters.KnownMetrics()
        self._days = meters.DayMemory(settings.meter_memory_mb * 2**20) if settings.meter_memory_mb else None
        if self._days is not None:
            metrics.watch_meter_memory(self._days)
        # The responses of answers the days' memory keeps, encoded: an eighth more than it, at most.
        self._pages = EncodedResponses(settings.meter_memory_mb * 2**20 // 8)

    def RecordEvents(self, request, context):
        batch = convert.batch(request.tenant_id, request.events)
        results = ingest.record_events(
            batch,
            sessions=self._sessions,
            storage=self._storage,
            rules=self._rules,
            caller=principal(),
            known=self._combinations,
        )
        return usage_pb2.RecordEventsResponse(results=convert.results(results))

    def StreamEvents(self, request_iterator, context):
        # One batch at a time: the next message is read only once this one is stored and answered,
        # so a slow database slows the sender through gRPC flow control and memory stays bounded.
        for request in request_iterator:
            yield self._answer_batch(request)

    def _answer_batch(self, request) -> usage_pb2.StreamEventsResponse:
        """A batch's results, or the status that refused it whole: a bad batch is the batch's answer, and the
        stream goes on. Authentication happened when the stream opened (the interceptor), so it ends the stream."""
        try:
            batch = convert.batch(request.tenant_id, request.events)
            results = ingest.record_events(
                batch,
                sessions=self._sessions,
                storage=self._storage,
                rules=self._rules,
                caller=principal(),
                known=self._combinations,
            )
        except (TollgateError, sqlalchemy.exc.SQLAlchemyError) as error:
            status = grpc_errors.status_for(error)
            if status is None:
                raise  # a bug: the interceptor logs it and ends the stream INTERNAL
            metrics.STREAM_BATCHES_REFUSED.labels(_CODE_NAMES.get(status.code, str(status.code))).inc()
            return usage_pb2.StreamEventsResponse(batch_id=request.batch_id, error=convert.batch_error(status))
        return usage_pb2.StreamEventsResponse(batch_id=request.batch_id, results=convert.results(results))

    def GetUsage(self, request, context):
        query = UsageQuery(
            tenant_id=request.tenant_id,
            metrics=tuple(request.metrics),
            actor_id=request.actor_id,
            start_us=convert.micros(request, "start_time"),
            end_us=convert.micros(request, "end_time"),
            group_by_actor=request.group_by_actor,
            include_tenant_totals=request.include_tenant_totals,
        )
        totals = reads.get_usage(query, connections=self._reads, storage=self._storage, caller=principal())
        return usage_pb2.GetUsageResponse(totals=[convert.total(t) for t in totals])

    def ListAggregates(self, request, context):
        page = rollups.list_aggregates(
            request.tenant_id,
            request.metric,
            request.period,
            convert.micros(request, "start_time"),
            convert.micros(request, "end_time"),
            page_size=request.page_size,
            page_token=request.page_token,
            connections=self._reads,
            caller=principal(),
        )
        return usage_pb2.ListAggregatesResponse(
            aggregates=[convert.aggregate(a) for a in page.items], next_page_token=page.next_page_token
        )

    def ListEvents(self, request, context):
        where = EventFilter(
            tenant_id=request.tenant_id,
            metric=request.metric,
            actor_id=request.actor_id,
            source_service=request.source_service,
            correlation_id=request.correlation_id,
            start_us=convert.micros(request, "start_time"),
            end_us=convert.micros(request, "end_time"),
        )
        page = reads.list_events(
            where,
            page_size=request.page_size,
            page_token=request.page_token,
            connections=self._reads,
            caller=principal(),
        )
        return usage_pb2.ListEventsResponse(
            events=[convert.stored_event(s) for s in page.items], next_page_token=page.next_page_token
        )

    def ListMetrics(self, request, context):
        page = catalog.list_metrics(page_size=request.page_size, page_token=request.page_token, sessions=self._sessions)
        return usage_pb2.ListMetricsResponse(
            metrics=[convert.metric_to_proto(m) for m in page.items], next_page_token=page.next_page_token
        )

    def QueryUsage(self, request, context):
        page = meters.query_usage(
            convert.meter_query(request),
            page_size=request.page_size,
            page_token=request.page_token,
            connections=self._reads,
            storage=self._storage,
            caller=principal(),
            known=self._metrics,
            memory=self._days,
        )
        return self._pages.response(page.answer, lambda: convert.meter_page(page))

    def ListDimensionValues(self, request, context):
        query = meters.DimensionQuery(
            request.tenant_id,
            request.metric,
            request.dimension,
            convert.micros(request, "start_time"),
            convert.micros(request, "end_time"),
        )
        page = meters.list_dimension_values(
            query,
            page_size=request.page_size,
            page_token=request.page_token,
            connections=self._reads,
            storage=self._storage,
            caller=principal(),
        )
        return usage_pb2.ListDimensionValuesResponse(values=page.items, next_page_token=page.next_page_token)


class UsageAdminApi(usage_pb2_grpc.UsageAdminServiceServicer):
    """tollgate.usage.v1.UsageAdminService."""

    def __init__(self, *, sessions: Sessions, storage: Storage):
        self._sessions, self._storage = sessions, storage

    def _dependencies(self) -> dict:
        """The dependencies of an admin call: the database, its backend, and the caller."""
        return {"sessions": self._sessions, "storage": self._storage, "caller": principal()}

    def UpsertMetric(self, request, context):
        metric, created = catalog.upsert_metric(convert.metric_from_proto(request.metric), **self._dependencies())
        return usage_pb2.UpsertMetricResponse(metric=convert.metric_to_proto(metric), created=created)

    def RunRollup(self, request, context):
        report = rollups.run_rollup(request.tenant_id, request.max_buckets, **self._dependencies())
        return usage_pb2.RunRollupResponse(
            buckets_recomputed=report.buckets_recomputed,
            buckets_remaining=report.buckets_remaining,
            duration=convert.duration(report.duration_seconds),
        )

    def PurgeEvents(self, request, context):
        return convert.purge_report(
            purge.purge_events(
                request.tenant_id, convert.micros(request, "before_time"), request.dry_run, **self._dependencies()
            )
        )

    def GetRollupStatus(self, request, context):
        return convert.rollup_status(
            rollups.rollup_status(request.tenant_id, sessions=self._sessions, caller=principal())
        )

    def ListAuditRecords(self, request, context):
        page = audit.list_records(
            request.tenant_id, page_size=request.page_size, page_token=request.page_token, **self._dependencies()
        )
        return usage_pb2.ListAuditRecordsResponse(
            records=[grpc_audit.record_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    def VerifyAudit(self, request, context):
        return convert.verification(audit.verify(**self._dependencies()))
