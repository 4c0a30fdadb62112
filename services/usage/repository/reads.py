"""SQL of the reads: exact totals from aggregates and raw events (see read_plan.py), and event listings."""

from __future__ import annotations

import functools
import json

from sqlalchemy import BigInteger, String, and_, any_, bindparam, case, exists, func, literal, literal_column, null, \
    or_, select, true, union_all
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Join

from services.usage.buckets import DAY_US, HOUR_US, Period
from services.usage.domain import Classification, Event
from services.usage.queries import EventFilter, StoredEvent, UsageQuery
from services.usage.read_plan import ReadPlan
from services.usage.tables import aggregates, dirty_buckets, events, metrics, purge_horizons

# Short aliases keep GetUsage's statement under psycopg's 4 KiB cache limit for converted queries
# (MAX_CACHED_STATEMENT_LENGTH): over it, psycopg parses the whole text again on every call.
_events, _aggregates, _metrics, _horizons = events.alias("e"), aggregates.alias("a"), metrics.alias("c"), \
    purge_horizons.alias("p")


def usage_totals(connection, query: UsageQuery, plan: ReadPlan) -> tuple[list[tuple], int | None]:
    """(metric, actor_id, quantity, event_count, classification) rows, and the tenant's purge horizon.

    One statement, so one snapshot on both dialects (a dirty mark and the events that made it
    commit together, as do a recomputed aggregate and the deletion of its mark), and one round trip.
    """
    by_actor, postgres = query.by_actor, connection.dialect.name == "postgresql"
    shape = (by_actor, bool(query.actor_id), bool(query.metrics), len(plan.raw), len(plan.hours), bool(plan.days),
             postgres)
    if postgres:
        found = _execute_on_driver(connection, shape, _parameters(query, plan))
    else:
        found = connection.execute(_totals_statement(*shape), _parameters(query, plan))
    rows, purged_before = [], None
    for row in found:
        if row[0] is None:
            purged_before = int(row[-3])
        else:
            quantity = int(row[-3]) if postgres else int(row[-4]) * _SPLIT + int(row[-3])
            rows.append((row[0], row[1] if by_actor else "", quantity, int(row[-2]), row[-1]))
    return sorted(rows, key=lambda r: (r[0], r[1])), purged_before


def _execute_on_driver(connection, shape: tuple, values: dict) -> list[tuple]:
    """Rows of the statement of `shape`, run on the pooled connection's psycopg connection.

    SQLAlchemy's execution (context, result metadata from the cursor description) cost 60-80 us of
    a 500 us GetUsage body; psycopg alone still prepares the statement once per connection. A
    driver error is raised as SQLAlchemy would raise it, and a connection that died is dropped from
    the pool (invalidated), so an outage answers UNAVAILABLE as on every other path.
    """
    sql, constants = _driver_statement(shape, connection.dialect)
    parameters = {**constants, **values}
    driver, dialect = connection.connection.driver_connection, connection.dialect
    try:
        return _cursor(connection, driver).execute(sql, parameters).fetchall()
    except dialect.loaded_dbapi.Error as error:
        dead = dialect.is_disconnect(error, driver, None)
        if dead:
            connection.invalidate(error)
        raise DBAPIError.instance(sql, parameters, error, dialect.loaded_dbapi.Error, dialect=dialect,
                                  connection_invalidated=dead) from error


def _cursor(connection, driver):
    """The cursor kept with the pooled psycopg connection (in its pool entry's info, which SQLAlchemy clears
    when it replaces the connection): a new cursor per call cost 20 us of client CPU."""
    cursor = connection.info.get(_CURSOR)
    if cursor is None or cursor.closed or cursor.connection is not driver:
        cursor = connection.info[_CURSOR] = driver.cursor()
    return cursor


_CURSOR = "tollgate.usage.reads.cursor"


@functools.cache
def _driver_statement(shape: tuple, dialect) -> tuple[str, dict]:
    """The statement of `shape` compiled once: its text, and the values of the parameters the statement
    itself fixes (literals), beside those each call binds."""
    compiled = _totals_statement(*shape).compile(dialect=dialect)
    return str(compiled), {name: bind.value for bind, name in compiled.bind_names.items() if not bind.required}


# Constants written into the statement rather than bound: shorter text, nothing for the planner to guess.
_DAY, _ZERO, _ONE = literal_column(str(int(Period.DAY))), literal_column("0"), literal_column("1")
_HOUR_US, _DAY_US = literal_column(str(HOUR_US)), literal_column(str(DAY_US))
_SPLIT = 2**32
_SPLIT_SQL = literal_column(str(_SPLIT))


def _parameters(query: UsageQuery, plan: ReadPlan) -> dict:
    """The plan as bind parameters of the fixed-shape statement; an absent range is empty, (0, 0)."""
    raw = list(plan.raw) + [(0, 0)] * (2 - len(plan.raw))
    days = plan.days or (0, 0)
    span = plan.whole_hours() or (0, 0)
    values = {"tenant": query.tenant_id, "actor": query.actor_id, "metrics": list(query.metrics),
              "raw0_lo": raw[0][0], "raw0_hi": raw[0][1], "raw1_lo": raw[1][0], "raw1_hi": raw[1][1],
              "day_lo": days[0], "day_hi": days[1], "span_lo": span[0], "span_hi": span[1]}
    for n, (low, high) in enumerate(plan.hours):
        day = low - low % DAY_US
        values.update({f"hour{n}_day": day, f"hour{n}_from": (low - day) // HOUR_US,
                       f"hour{n}_to": (high - day) // HOUR_US})
    return values


def _within(column, name: str):
    return and_(column >= bindparam(f"{name}_lo"), column < bindparam(f"{name}_hi"))


@functools.cache
def _totals_statement(by_actor: bool, actor_filter: bool, metric_filter: bool, raw_ranges: int, hour_ranges: int,
                      days: bool, postgres: bool):
    """The statement of one shape of question, built once: a call only binds its parameters.

    Shapes differ only where a plan leaves a part out entirely (no raw edge, or one; no whole
    hour): an always-empty range still costs the planner, and an OR of ranges hides a single
    range's index scan. A list of metrics is one array parameter on PostgreSQL (`= ANY`), so the
    text stays the same whatever the list's length: psycopg converts it once and the server plans
    it once, where an IN list (SQLite's) made a new statement per length, 16 metrics cost ~1 ms more.
    """
    tenant = bindparam("tenant")
    metrics = any_(bindparam("metrics", type_=postgresql.ARRAY(String))) if postgres \
        else bindparam("metrics", expanding=True)

    def only(statement, metric_column):
        if not metric_filter:
            return statement
        return statement.where(metric_column == metrics if postgres else metric_column.in_(metrics))

    keys = [_events.c.metric] + ([_events.c.actor_id] if by_actor else [])
    parts = []
    if raw_ranges:
        ranges = [_within(_events.c.occurred_at_us, f"raw{n}") for n in range(raw_ranges)]
        raw = select(*keys, _events.c.quantity.label("quantity"), _ONE.label("event_count")) \
            .where(_events.c.tenant_id == tenant, or_(*ranges))
        if actor_filter:
            raw = raw.where(_events.c.actor_id == bindparam("actor"))
        parts.append(only(raw, _events.c.metric))
    if hour_ranges or days:
        parts += [only(part, metric) for part, metric in _bucket_parts(tenant, hour_ranges, days, postgres)]
    # The parts yield rows, summed once here, and the few totals are then joined to their metric: a
    # GROUP BY per part, and the join before grouping, cost 70 us of a 450 us statement.
    union = union_all(*parts).subquery("parts")
    keys = [union.c.metric] + ([union.c.actor_id] if by_actor else [])
    if postgres:  # sum(bigint) is numeric: exact beyond a bigint
        quantity = [func.sum(union.c.quantity).label("quantity")]
    else:
        # SQLite's sum() fails on an integer overflow: the quantities' high and low 32 bits are summed apart
        # (neither can overflow) and put together in Python, so a total beyond int64 is still known exactly.
        quantity = [func.sum(union.c.quantity.op("/")(_SPLIT_SQL)).label("high"),
                    func.sum(union.c.quantity.op("%")(_SPLIT_SQL)).label("quantity")]
    sums = select(*keys, *quantity, func.sum(union.c.event_count).label("events")) \
        .group_by(*keys).having(func.sum(union.c.event_count) > 0).subquery("t")
    totals = select(*[sums.c[key.name] for key in keys], *([] if postgres else [sums.c.high]), sums.c.quantity,
                    sums.c.events, _metrics.c.classification) \
        .select_from(sums.outerjoin(_metrics, _metrics.c.name == sums.c.metric))
    horizon = select(null(), *([null()] if by_actor else []), *([] if postgres else [literal(0)]),
                     _horizons.c.purged_before_us, literal(0), null()) \
        .where(_horizons.c.tenant_id == tenant)
    return union_all(totals, horizon)


def _bucket_parts(tenant, hour_ranges: int, days: bool, postgres: bool) -> list[tuple]:
    """(statement, its metric column) for the whole hours and days of the plan, [H1, H2).

    Whole days: every day row of the range, less the rows of its marked days (few, found from their
    marks), so the clean rows are summed from aggregates_by_period alone, with no probe of the marks
    per row. Hours at the ends: the range of hours of each unmarked day row, both ends in one part. A
    marked day's share of [H1, H2) is read hour by hour: its dirty hours (bits of the mark) from raw
    events, the others from its row, which still holds for them (see tables.dirty_buckets).
    """
    day, mark = _aggregates.c, dirty_buckets.alias("dm")
    parts = []
    if days:
        every = select(day.metric, day.total_quantity.label("quantity"), day.event_count.label("event_count")) \
            .where(day.tenant_id == tenant, day.period == _DAY, _within(day.period_start_us, "day"))
        marked_rows = select(day.metric, (-day.total_quantity).label("quantity"),
                             (-day.event_count).label("event_count")) \
            .join_from(mark, _aggregates, _row_of(mark, tenant)) \
            .where(mark.c.tenant_id == tenant, mark.c.period == _DAY, _within(mark.c.period_start_us, "day"))
        parts += [(every, day.metric), (marked_rows, day.metric)]
    if hour_ranges:
        parts.append(_end_hours(tenant, hour_ranges, postgres))

    def in_span(offset):
        start = mark.c.period_start_us + offset * _HOUR_US
        return and_(start >= bindparam("span_lo"), start < bindparam("span_hi"))

    marked = and_(mark.c.tenant_id == tenant, mark.c.period == _DAY,
                  mark.c.period_start_us > bindparam("span_lo") - _DAY_US,
                  mark.c.period_start_us < bindparam("span_hi"))
    offset, quantity, count, cells = _hour_cells(postgres)
    clean_hours = select(mark.c.metric, quantity.label("quantity"), count.label("event_count")) \
        .join_from(mark, _aggregates, _row_of(mark, tenant)) \
        .join(cells, true()) \
        .where(marked, mark.c.dirty_hours.op(">>")(offset).op("&")(_ONE) == _ZERO, in_span(offset))
    hour = _day_hours(postgres)
    start = mark.c.period_start_us + hour * _HOUR_US
    dirty_hours = select(mark.c.metric, _events.c.quantity.label("quantity"), _ONE.label("event_count")) \
        .select_from(_HoursFirst(mark.join(hour.table, true()), _events, and_(
            _events.c.tenant_id == tenant, _events.c.metric == mark.c.metric, _events.c.occurred_at_us >= start,
            _events.c.occurred_at_us < start + _HOUR_US))) \
        .where(marked, mark.c.dirty_hours.op(">>")(hour).op("&")(_ONE) == _ONE, in_span(hour))
    return parts + [(clean_hours, mark.c.metric), (dirty_hours, mark.c.metric)]


class _HoursFirst(Join):
    """A join of the marks and their hours to the events, the hours looped over first on SQLite too (CROSS JOIN),
    so that each dirty hour reads its own range of events_by_metric_time. SQLite's planner, which cannot tell
    how many rows json_each yields, otherwise walked every event of the tenant and each of the 24 hours for
    each: a backlog of dirty days made a GetUsage a hundred times slower."""

    inherit_cache = True


@compiles(_HoursFirst, "sqlite")
def _cross_join(join, compiler, **kw) -> str:
    kw.pop("asfrom", None)
    return (f"{compiler.process(join.left, asfrom=True, **kw)} CROSS JOIN "
            f"{compiler.process(join.right, asfrom=True, **kw)} ON {compiler.process(join.onclause, **kw)}")


def _row_of(mark, tenant):
    """The join condition of a day's dirty mark to that day's row `a`."""
    day = _aggregates.c
    return and_(day.tenant_id == tenant, day.metric == mark.c.metric, day.period == _DAY,
                day.period_start_us == mark.c.period_start_us)


def _day_hours(postgres: bool):
    """The hours of a day, 0 to 23, as a column of a FROM item (`.table`)."""
    if postgres:
        return func.generate_series(_ZERO, literal_column("23")).table_valued("value").render_derived(name="o").c.value
    return func.json_each(literal(json.dumps(list(range(24))))).table_valued("value", name="o").c.value


# A day row's running sums of its hours (migration usage_0012): [h + 1] sums the hours before hour h.
# PostgreSQL only, so not in tables.py, which both dialects share.
_RUNNING = (literal_column("a.hour_running_quantities", postgresql.ARRAY(BigInteger)),
            literal_column("a.hour_running_counts", postgresql.ARRAY(BigInteger)))


def _end_hours(tenant, hour_ranges: int, postgres: bool) -> tuple:
    """(statement, its metric column) with the hours of each end's day row in the plan, if unmarked."""
    day = _aggregates.c
    days = [bindparam(f"hour{n}_day") for n in range(hour_ranges)]
    if postgres:
        # One subtraction of running sums per row; unnesting the hours cost 50 us more per statement.
        def span(running, n):
            return running[bindparam(f"hour{n}_to") + _ONE] - running[bindparam(f"hour{n}_from") + _ONE]

        def of_its_end(running):
            if hour_ranges == 1:
                return span(running, 0)
            return case((day.period_start_us == days[0], span(running, 0)), else_=span(running, 1))

        statement = select(day.metric, of_its_end(_RUNNING[0]).label("quantity"),
                           of_its_end(_RUNNING[1]).label("event_count")) \
            .where(_unmarked_day(tenant), day.period_start_us.in_(days))
        return statement, day.metric
    offset, quantity, count, cells = _hour_cells(postgres)
    start = day.period_start_us
    ranges = [and_(start == days[n], offset >= bindparam(f"hour{n}_from"), offset < bindparam(f"hour{n}_to"))
              for n in range(hour_ranges)]
    statement = select(day.metric, quantity.label("quantity"), count.label("event_count")) \
        .join_from(_aggregates, cells, true()).where(_unmarked_day(tenant), start.in_(days), or_(*ranges))
    return statement, day.metric


def _unmarked_day(tenant):
    """The condition on a day row `a` of the tenant: its day has no dirty mark."""
    day = _aggregates.c
    mark = dirty_buckets.alias("m")
    return and_(day.tenant_id == tenant, day.period == _DAY, ~exists().where(
        mark.c.tenant_id == tenant, mark.c.metric == day.metric, mark.c.period == _DAY,
        mark.c.period_start_us == day.period_start_us))


def _hour_cells(postgres: bool):
    """(offset, quantity, event count, FROM item) of the hours of the day row `a`, one row per hour: the
    unnested arrays on PostgreSQL, the JSON lists walked by json_each on SQLite."""
    day = _aggregates.c
    if postgres:
        cells = func.unnest(day.hour_offsets, day.hour_quantities, day.hour_counts) \
            .table_valued("o", "q", "n").render_derived(name="h")
        return cells.c.o, cells.c.q, cells.c.n, cells
    cells = func.json_each(day.hour_offsets).table_valued("key", "value", name="h")
    position = func.printf("$[%d]", cells.c.key)
    return cells.c.value, func.json_extract(day.hour_quantities, position), \
        func.json_extract(day.hour_counts, position), cells


def list_events(session, where: EventFilter, *, after: tuple[int, str] | None, limit: int) -> list[StoredEvent]:
    """Events matching the filter, ordered by (occurred_at, event_id), resuming after `after`."""
    statement = select(events).where(events.c.tenant_id == where.tenant_id) \
        .order_by(events.c.occurred_at_us, events.c.event_id).limit(limit)
    for column, value in ((events.c.metric, where.metric), (events.c.actor_id, where.actor_id),
                          (events.c.source_service, where.source_service),
                          (events.c.correlation_id, where.correlation_id)):
        if value:
            statement = statement.where(column == value)
    if where.start_us is not None:
        statement = statement.where(events.c.occurred_at_us >= where.start_us)
    if where.end_us is not None:
        statement = statement.where(events.c.occurred_at_us < where.end_us)
    if after is not None:
        statement = statement.where(or_(events.c.occurred_at_us > after[0],
                                        and_(events.c.occurred_at_us == after[0], events.c.event_id > after[1])))
    return [_stored(row) for row in session.execute(statement)]


def _stored(row) -> StoredEvent:
    event = Event(row.event_id, row.metric, row.quantity, row.occurred_at_us, row.actor_id, row.source_service,
                  row.correlation_id or "", row.idempotency_key or "",
                  json.loads(row.metadata) if row.metadata else None)
    return StoredEvent(row.tenant_id, event, Classification[row.classification], row.received_at_us)
