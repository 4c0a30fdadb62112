"""QueryUsage and ListDimensionValues: a metric's value by window and group, and the values of a dimension, read
from the raw events in one statement per page, so exact at any rollup lag (docs/usage.md, "Meters")."""

from __future__ import annotations

from typing import NamedTuple, NoReturn

from tollgate.services.usage.domain import meters, windows
from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.domain.buckets import MAX_TOTAL
from tollgate.services.usage.domain.meters import MeterQuery, MeterRow
from tollgate.services.usage.domain.windows import Span
from tollgate.services.usage.repository import catalog as catalog_sql
from tollgate.services.usage.repository import meters as meters_sql
from tollgate.services.usage.repository.meter_memory import DayMemory
from tollgate.services.usage.repository.storage import Storage
from tollgate.services.usage.service.checks import check_instant, check_tenant, check_text
from tollgate.shared import auth, clock, pagination
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    OutOfRange,
    Unavailable,
    require,
)


class MeterPage(NamedTuple):
    """One page of QueryUsage: its rows (each naming its window by index in `windows`, its groups' values in
    `group_by` order), the token of the next page, and the metric's aggregation. `answer`: a key that only a page
    of these very contents has (None: none), under which an encoding of it may be kept."""

    rows: list[MeterRow]
    windows: list[Span]
    group_by: tuple[str, ...]
    next_page_token: str
    aggregation: Aggregation
    answer: tuple | None = None


def query_usage(
    query: MeterQuery,
    *,
    page_size: int,
    page_token: str,
    connections,
    storage: Storage,
    caller: Principal,
    known: KnownMetrics,
    memory: DayMemory | None = None,
) -> MeterPage:
    """One page of the metric's value per window and group over [start, end), exact: rollups where they hold, raw
    events elsewhere, in one statement (with the check of a metric kept from an earlier question, `known`, and the
    rolled-up days kept in `memory`)."""
    check_tenant(query.tenant_id)
    auth.require_tenant(caller, query.tenant_id)
    _check_query(query)
    assert query.start_us is not None and query.end_us is not None  # _check_query requires both
    spans = windows.windows(query.window, query.start_us, query.end_us, windows.zone(query.time_zone))
    cursor = pagination.start(page_size, page_token, query.scope(), shape=(int,) + (str,) * len(query.group_by))
    first_window = cursor.after[0] if cursor.after else 0
    with connections.connect() as connection:
        read, fresh = known.get(query.metric), False
        for _ in range(_ATTEMPTS):
            if read is None:
                read, fresh = known.put(_read(connection, query.metric)), True
            try:
                meters.check_against(query, read.metric)
            except InvalidArgument:
                if fresh:
                    raise
                read = None  # kept from before a dimension it names was declared, perhaps: read it again
                continue
            plan = meters.plan(query, read.metric, spans, first_window)
            found, purged_before, current, answer = meters_sql.usage_rows(
                connection,
                storage.meters,
                plan,
                cells=read.cells,
                after=cursor.after,
                limit=cursor.limit + 1,
                memory=memory,
            )
            if current:
                break
            read = None
        else:
            raise Unavailable(f"metric {query.metric!r} changed while it was read; retry")
    assert read is not None  # the loop breaks with a current read
    metric = read.metric
    if purged_before is not None and query.start_us < purged_before:
        horizon = clock.iso(purged_before)
        raise FailedPrecondition(
            f"QueryUsage reads raw events, and this tenant's raw events before {horizon} were purged; use a "
            f"start_time at or after {horizon}",
            reason="RAW_EVENTS_PURGED",
        )
    page = cursor.page(found, lambda row: (row[0], *row[1]))
    if page.items and max(row[2] for row in page.items) > MAX_TOTAL:
        n, _, value, _ = next(row for row in page.items if row[2] > MAX_TOTAL)
        _out_of_range(query, *spans[n], value)
    return MeterPage(page.items, spans, query.group_by, page.next_page_token, metric.aggregation, answer)


def _check_query(query: MeterQuery) -> None:
    check_text("metric", query.metric, required=True)
    start, end = _required("start_time", query.start_us), _required("end_time", query.end_us)
    require(start < end, "end_time", "must be after start_time")
    for position, name in enumerate(query.group_by):
        check_text(f"group_by[{position}]", name, required=True)
    for name, values in query.filters:
        check_text(f"filters[{name[:64]}]", name, required=True)
        for value in values:
            check_text(f"filters[{name[:64]}]", value)
    for position, actor in enumerate(query.actor_ids):
        check_text(f"actor_ids[{position}]", actor)
    meters.check_shape(query)


def _required(field: str, micros: int | None) -> int:
    require(micros is not None, field, "is required")
    assert micros is not None
    check_instant(field, micros)
    return micros


def _out_of_range(query: MeterQuery, start: int, end: int, value: int) -> NoReturn:
    raise OutOfRange(
        f"the value of metric {query.metric!r} from {clock.iso(start)} to {clock.iso(end)} is {value}, beyond "
        f"the largest int64 ({MAX_TOTAL}); ask for a shorter window or range",
        reason="TOTAL_OUT_OF_RANGE",
    )


def _read(connection, name: str) -> catalog_sql.MetricRead:
    """The metric named by a question's `metric` field, as read now; INVALID_ARGUMENT when the catalog lacks it."""
    read = catalog_sql.read_metric(connection, name)
    if read is None:
        raise InvalidArgument(FieldViolation("metric", f"{name[:128]!r} is not in the catalog"))
    return read


class KnownMetrics:
    """The metrics QueryUsage read last, by name, so that a question costs one statement: that statement checks, in
    its own snapshot, that its metric still has what the plan was made from, and a question whose metric changed
    is answered again from a fresh read. Bounded; shared by the RPC threads (a dict's get and set are atomic)."""

    def __init__(self, capacity: int = 1024):
        self._capacity = capacity
        self._read: dict[str, catalog_sql.MetricRead] = {}

    def get(self, name: str) -> catalog_sql.MetricRead | None:
        return self._read.get(name)

    def put(self, read: catalog_sql.MetricRead) -> catalog_sql.MetricRead:
        if len(self._read) >= self._capacity:
            self._read.clear()
        self._read[read.metric.name] = read
        return read


# A question read again after its metric changed under it, at most this many times in all.
_ATTEMPTS = 3


class DimensionQuery(NamedTuple):
    """ListDimensionValues: the values of `dimension` (or actor_id) of a metric's events, optionally in a range."""

    tenant_id: str
    metric: str
    dimension: str
    start_us: int | None = None
    end_us: int | None = None

    def scope(self) -> dict:
        return {"list": "dimension values", **self._asdict()}


def list_dimension_values(
    query: DimensionQuery, *, page_size: int, page_token: str, connections, storage: Storage, caller: Principal
) -> pagination.Page[str]:
    """One page of the distinct non-empty values, in code point order."""
    check_tenant(query.tenant_id)
    auth.require_tenant(caller, query.tenant_id)
    check_text("metric", query.metric, required=True)
    check_text("dimension", query.dimension, required=True)
    check_instant("start_time", query.start_us)
    check_instant("end_time", query.end_us)
    if query.start_us is not None and query.end_us is not None:
        require(query.start_us < query.end_us, "end_time", "must be after start_time")
    cursor = pagination.start(page_size, page_token, query.scope(), shape=(str,))
    with connections.connect() as connection:
        metric = _read(connection, query.metric).metric
        meters.check_dimension(query.dimension, metric)
        found = meters_sql.dimension_values(
            connection,
            storage.meters,
            tenant_id=query.tenant_id,
            metric=query.metric,
            name=query.dimension,
            start_us=query.start_us,
            end_us=query.end_us,
            after=cursor.after[0] if cursor.after else None,
            limit=cursor.limit + 1,
        )
    return cursor.page(found, lambda value: (value,))
