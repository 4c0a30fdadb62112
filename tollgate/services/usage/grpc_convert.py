"""Translations between tollgate.usage.v1 messages and the Usage domain (used by grpc_api only)."""

from __future__ import annotations

import math
from typing import cast

from google.protobuf import duration_pb2, struct_pb2

from tollgate.services.usage.domain import model
from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.domain.catalog import Metric
from tollgate.services.usage.domain.meters import MeterQuery
from tollgate.services.usage.domain.queries import StoredEvent, UsageTotal
from tollgate.services.usage.domain.windows import Window
from tollgate.shared import proto_time
from tollgate.shared.audit import Verification
from tollgate.shared.errors import require
from tollgate.usage.v1 import usage_pb2 as pb

VERDICTS: dict[model.Verdict, pb.Verdict] = {v: pb.Verdict.Value(f"VERDICT_{v.name}") for v in model.Verdict}
REASONS: dict[model.RejectReason, pb.RejectReason] = {
    r: pb.RejectReason.Value(f"REJECT_REASON_{r.name}") for r in model.RejectReason
}
KEYS: dict[model.DedupKey, pb.DedupKey] = {k: pb.DedupKey.Value(f"DEDUP_KEY_{k.name}") for k in model.DedupKey}
CLASSIFICATIONS: dict[model.Classification, pb.Classification] = {
    c: pb.Classification.Value(f"CLASSIFICATION_{c.name}") for c in model.Classification
}
CLASSIFICATION_OF = {number: c for c, number in CLASSIFICATIONS.items()}
AGGREGATIONS = {a: pb.Aggregation.Value(f"AGGREGATION_{a.name}") for a in Aggregation}
AGGREGATION_OF = {number: a for a, number in AGGREGATIONS.items()} | {pb.AGGREGATION_UNSPECIFIED: Aggregation.SUM}
WINDOW_OF = {pb.Window.Value(f"WINDOW_{w.name}"): w for w in Window if w is not Window.NONE} | {
    pb.WINDOW_UNSPECIFIED: Window.NONE
}


def batch(tenant_id: str, events) -> model.EventBatch:
    """A domain batch from a request's tenant and repeated UsageEvent."""
    return model.EventBatch(tenant_id, tuple(_event(e, index) for index, e in enumerate(events)))


def _event(e: pb.UsageEvent, index: int) -> model.Event:
    occurred = micros(e, "occurred_at", path=f"events[{index}].occurred_at")
    dimensions = e.dimensions
    # A map read key by key: dict() of the map container goes through its items one call at a time, slower.
    plain_dimensions = {name: dimensions[name] for name in dimensions} if dimensions else None
    metadata = _plain(e.metadata, f"events[{index}].metadata") if e.HasField("metadata") and e.metadata.fields else None
    return model.Event(
        e.event_id,
        e.metric,
        e.quantity,
        occurred,
        e.actor_id,
        e.source_service,
        e.correlation_id,
        e.idempotency_key,
        metadata,
        plain_dimensions,
    )


def _plain(struct: struct_pb2.Struct, path: str) -> dict:
    """A Struct as plain dicts and lists (numbers stay floats, as JSON has them).

    A Value with no kind set, NaN or an infinity has no JSON form: the message is malformed, and storing it as
    something else (null, a string) would be accepting a value as another.
    """
    return {key: _plain_value(item, f"{path}.{key}") for key, item in struct.fields.items()}


def _plain_value(value: struct_pb2.Value, path: str):
    kind = value.WhichOneof("kind")
    require(kind is not None, path, "is a Value with no kind set; metadata values must be JSON values")
    if kind == "struct_value":
        return _plain(value.struct_value, path)
    if kind == "list_value":
        return [_plain_value(item, f"{path}[{i}]") for i, item in enumerate(value.list_value.values)]
    if kind == "number_value":
        require(math.isfinite(value.number_value), path, f"is {value.number_value}; JSON numbers are finite")
        return value.number_value
    if kind == "null_value":
        return None
    return getattr(value, kind)


def results(items: list[model.EventResult]) -> list[pb.EventResult]:
    out = []
    for r in items:
        if r.verdict is model.Verdict.ACCEPTED:
            out.append(pb.EventResult(index=r.index, event_id=r.event_id, verdict=pb.VERDICT_ACCEPTED))
            continue
        out.append(
            pb.EventResult(
                index=r.index,
                event_id=r.event_id,
                verdict=VERDICTS[r.verdict],
                message=r.message,
                reason=REASONS[r.reason] if r.reason else pb.REJECT_REASON_UNSPECIFIED,
                dedup_key=KEYS[r.dedup_key] if r.dedup_key else pb.DEDUP_KEY_UNSPECIFIED,
                existing_event_id=r.existing_event_id,
            )
        )
    return out


def micros(message, field: str, *, path: str = "") -> int | None:
    """Epoch microseconds of a message's Timestamp field, None when it is not present.

    Presence, not zero, says whether it was given: the epoch is an instant like any other. Nanos
    outside 0..999,999,999 make no instant (INVALID_ARGUMENT naming the field); digits below the
    microsecond are dropped (docs/api.md). The use case judges the instant itself.
    """
    if not message.HasField(field):
        return None
    ts = getattr(message, field)
    require(proto_time.nanos_in_range(ts), path or field, f"has nanos {ts.nanos}; nanos must be from 0 to 999,999,999")
    return proto_time.to_micros(ts)


def total(t: UsageTotal) -> pb.UsageTotal:
    return pb.UsageTotal(
        metric=t.metric,
        actor_id=t.actor_id,
        quantity=t.quantity,
        event_count=t.event_count,
        classification=_classification(t.classification),
    )


def _classification(c: model.Classification | None) -> pb.Classification:
    return pb.CLASSIFICATION_UNSPECIFIED if c is None else CLASSIFICATIONS[c]


def stored_event(s: StoredEvent) -> pb.StoredEvent:
    e = s.event
    assert e.occurred_at_us is not None  # ingest stores no event without one
    event = pb.UsageEvent(
        event_id=e.event_id,
        metric=e.metric,
        quantity=e.quantity,
        occurred_at=proto_time.from_micros(e.occurred_at_us),
        actor_id=e.actor_id,
        source_service=e.source_service,
        correlation_id=e.correlation_id,
        idempotency_key=e.idempotency_key,
    )
    if e.metadata:
        event.metadata.update(e.metadata)
    if e.dimensions:
        event.dimensions.update(e.dimensions)
    return pb.StoredEvent(
        tenant_id=s.tenant_id,
        event=event,
        classification=CLASSIFICATIONS[s.classification],
        received_at=proto_time.from_micros(s.received_at_us),
    )


def batch_error(status) -> pb.BatchError:
    """A google.rpc.Status as the BatchError of a stream's answer (the same fields)."""
    return pb.BatchError(code=status.code, message=status.message, details=status.details)


def metric_to_proto(m: Metric) -> pb.Metric:
    return pb.Metric(
        name=m.name,
        classification=_classification(m.classification),
        unit=m.unit,
        description=m.description,
        business_key=m.business_key,
        aggregation=AGGREGATIONS[m.aggregation],
        unique_of=m.unique_of,
        dimensions=m.dimensions,
    )


def metric_from_proto(m: pb.Metric) -> Metric:
    return Metric(
        m.name,
        CLASSIFICATION_OF.get(m.classification),
        m.unit,
        m.description,
        business_key=m.business_key if m.HasField("business_key") else True,
        aggregation=aggregation_of(m.aggregation, "metric.aggregation"),
        unique_of=m.unique_of,
        dimensions=tuple(m.dimensions),
    )


def meter_query(request: pb.QueryUsageRequest) -> MeterQuery:
    """The question of a QueryUsage request (its paging aside)."""
    require(request.window in WINDOW_OF, "window", f"has no window numbered {request.window}")
    return MeterQuery(
        tenant_id=request.tenant_id,
        metric=request.metric,
        start_us=micros(request, "start_time"),
        end_us=micros(request, "end_time"),
        window=WINDOW_OF[request.window],
        time_zone=request.time_zone,
        group_by=tuple(request.group_by),
        filters=tuple(sorted((name, tuple(allowed.values)) for name, allowed in request.filters.items())),
        actor_ids=tuple(request.actor_ids),
    )


def meter_page(page) -> pb.QueryUsageResponse:
    response = pb.QueryUsageResponse(next_page_token=page.next_page_token, aggregation=AGGREGATIONS[page.aggregation])
    add, spans, names, window, instants = response.rows.add, page.windows, page.group_by, None, b""
    groups: dict[tuple[str, ...], bytes] = {}
    for n, values, value, event_count in page.rows:
        if n != window:
            # A window's groups are consecutive rows: its two instants are encoded once, and each group once, and
            # merged into each row, since a page holds up to 1,000 rows and setting a Timestamp's fields or a map's
            # entries costs more than the row's own.
            window = n
            instants = _window_row(*spans[n]).SerializeToString()
        group = groups.get(values)
        if group is None:
            group = groups[values] = pb.UsageRow(group=dict(zip(names, values))).SerializeToString()
        add(value=value, event_count=event_count).MergeFromString(instants + group)
    return response


def _window_row(start_us: int, end_us: int) -> pb.UsageRow:
    row = pb.UsageRow()
    row.window_start.seconds, nanos = divmod(start_us, 1_000_000)
    row.window_start.nanos = nanos * 1000
    row.window_end.seconds, nanos = divmod(end_us, 1_000_000)
    row.window_end.nanos = nanos * 1000
    return row


def aggregation_of(number: int, field: str) -> Aggregation:
    """The Aggregation of a proto enum number (unset: SUM); INVALID_ARGUMENT naming `field` for a number the
    contract does not define."""
    require(number in AGGREGATION_OF, field, f"has no aggregation numbered {number}")
    return AGGREGATION_OF[number]


def aggregate(a) -> pb.Aggregate:
    return pb.Aggregate(
        tenant_id=a.tenant_id,
        metric=a.metric,
        period=cast(pb.Period, int(a.period)),  # the same numbers (domain/buckets.py Period)
        period_start=proto_time.from_micros(a.period_start_us),
        total_quantity=a.total_quantity,
        event_count=a.event_count,
        source_hash=a.source_hash,
        computed_at=proto_time.from_micros(a.computed_at_us),
        dirty=a.dirty,
    )


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1_000_000_000))
    return value


def rollup_status(status) -> pb.GetRollupStatusResponse:
    response = pb.GetRollupStatusResponse(dirty_buckets=status.dirty_buckets, last_run_buckets=status.last_run_buckets)
    if status.oldest_dirty_us is not None:
        response.oldest_dirty_time.CopyFrom(proto_time.from_micros(status.oldest_dirty_us))
    if status.last_run_us is not None:
        response.last_run_time.CopyFrom(proto_time.from_micros(status.last_run_us))
    return response


def purge_report(report) -> pb.PurgeEventsResponse:
    response = pb.PurgeEventsResponse(
        events_deleted=report.events_deleted, events_kept=report.events_kept, dry_run=report.dry_run
    )
    if report.purged_before_us is not None:
        response.purged_before.CopyFrom(proto_time.from_micros(report.purged_before_us))
    return response


def verification(v: Verification) -> pb.VerifyAuditResponse:
    broken = v.first_break
    return pb.VerifyAuditResponse(
        ok=v.ok,
        records_checked=v.records_checked,
        first_broken_sequence=broken.sequence if broken else 0,
        problem=broken.problem if broken else "",
    )
