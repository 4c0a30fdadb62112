"""SQL of rollups: mark buckets dirty, recompute them from raw events, read aggregates.

source_hash, the digest of the events a bucket covers, is the same function of the events on both
dialects: 16 lower-case hex digits (zero-padded) of

    ( sum over the bucket's events e of H(utf8(e.event_id + ":" + e.content_hash)) ) mod 2**64

where H(b) is PostgreSQL's hashtextextended(b, 0) read as an unsigned 64-bit integer: Bob Jenkins'
lookup3 hash_bytes_extended of the bytes with seed 0, as PostgreSQL computes it on a little-endian
machine in a UTF-8 database. `pg_hash_text` ports it to Python for SQLite; the tests hold it to
PostgreSQL's. A bucket without events has "0000000000000000". The sum is a digest of the set (event
ids are unique per tenant), needs no sort, and composes: a day's is the sum of its hours', so one
read of the events serves the four periods. It detects change, not tampering (64 bits, not a
cryptographic hash). Aggregates stored under the previous definition (SHA-256 of sorted lines, 64
digits) get the new digest when next recomputed.

On PostgreSQL a rollup runs in passes (see services/usage/service/rollups.py). `compute_pass`
reads a batch of dirty marks and every total they need in ONE statement (one snapshot, no row
locks: the four periods share one read of the events) into a temp table of the session. Then
`apply_pass`, in short transactions, locks the marks that are still the row version that statement
saw (same ctid and xmin; FOR UPDATE SKIP LOCKED), upserts their aggregates and deletes them. An
ingest that marks a bucket again writes a new version of its mark, so a bucket that gained events
after the pass read them stays dirty for the next pass. SQLite, whose writers are serialised,
recomputes bucket by bucket. (Longer than the house's ~200 lines: the pass is one statement, and
SQLite needs PostgreSQL's hash in Python.)
"""

from __future__ import annotations

from sqlalchemy import and_, func, select, text

from services.usage.buckets import DAY_US, HOUR_US, WEEK_US, Period, next_start
from services.usage.repository import dialect_insert, is_postgres
from services.usage.source_hash import pg_hash_text
from services.usage.tables import aggregates, dirty_buckets, events, rollup_runs

_KEY = ("tenant_id", "metric", "period", "period_start_us")


def mark_dirty(session, tenant_id: str, buckets: set[tuple[str, int, int]], now_us: int) -> None:
    """Mark (metric, period, start) buckets dirty in one statement, in key order.

    DO UPDATE (not DO NOTHING) on purpose: on PostgreSQL it waits for a rollup holding the row and,
    once that rollup deleted it, inserts it again, so an event committed after the rollup read the
    bucket always leaves it dirty.
    """
    if not buckets:
        return
    rows = [dict(tenant_id=tenant_id, metric=m, period=p, period_start_us=s, marked_at_us=now_us)
            for m, p, s in sorted(buckets)]
    statement = dialect_insert(session, dirty_buckets)
    statement = statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={"marked_at_us": func.max(statement.excluded.marked_at_us, dirty_buckets.c.marked_at_us)
              if not is_postgres(session) else func.greatest(statement.excluded.marked_at_us,
                                                             dirty_buckets.c.marked_at_us)})
    session.execute(statement, rows)


# --- PostgreSQL: a pass computes many buckets in one statement, short transactions apply it ------------------------

_WORK = "pg_temp.usage_rollup_work"
_WORK_DDL = """CREATE TEMP TABLE IF NOT EXISTS usage_rollup_work (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, mark tid NOT NULL, version xid NOT NULL,
    tenant_id varchar(128) NOT NULL, metric varchar(128) NOT NULL, period smallint NOT NULL,
    period_start_us bigint NOT NULL, total_quantity bigint NOT NULL, event_count bigint NOT NULL,
    source_hash varchar(64) NOT NULL)"""
_NEXT_MONTH = ("(extract(epoch FROM (to_timestamp({us} / 1000000.0) AT TIME ZONE 'UTC') + interval '1 month')"
               " * 1000000)::bigint")
_MONTH_OF = ("(extract(epoch FROM date_trunc('month', to_timestamp({us} / 1000000.0) AT TIME ZONE 'UTC'))"
             " * 1000000)::bigint")
_EVENT_SUMS = (f"e.occurred_at_us - e.occurred_at_us % {HOUR_US} AS start_us, sum(e.quantity) AS quantity, "
               "count(*) AS events, sum(hashtextextended(e.event_id || ':' || e.content_hash, 0)) AS digest")
# The dirty marks of the pass in key order, each with the row version this statement saw (ctid and xmin), the
# end of its bucket and a number per (tenant, metric), so that what follows joins and groups on integers.
_MARKS = f"""marks AS MATERIALIZED (
    SELECT dense_rank() OVER (ORDER BY tenant_id, metric) AS series, mark, version, tenant_id, metric, period,
           period_start_us,
           CASE period WHEN 1 THEN period_start_us + {HOUR_US} WHEN 2 THEN period_start_us + {DAY_US}
                       WHEN 3 THEN period_start_us + {WEEK_US} ELSE {_NEXT_MONTH.format(us="period_start_us")}
           END AS period_end_us
    FROM (SELECT ctid AS mark, xmin AS version, tenant_id, metric, period, period_start_us
          FROM "usage".dirty_buckets {{scope}}
          ORDER BY tenant_id, metric, period, period_start_us LIMIT :limit) AS m),
series AS (SELECT DISTINCT series, tenant_id, metric FROM marks)"""
# Hourly sums of every event in the pass's time range (and tenant): one sequential read, for a backlog.
_HOURS_BY_SCAN = f"""hours AS MATERIALIZED (
    SELECT s.series, h.start_us, h.quantity, h.events, h.digest
    FROM (SELECT e.tenant_id, e.metric, {_EVENT_SUMS}
          FROM "usage".events AS e
          WHERE e.occurred_at_us >= (SELECT min(period_start_us) FROM marks)
            AND e.occurred_at_us < (SELECT max(period_end_us) FROM marks) {{scope}}
          GROUP BY 1, 2, 3) AS h
    JOIN series AS s ON s.tenant_id = h.tenant_id AND s.metric = h.metric)"""
# Hourly sums of the events in the union of the marks' ranges per series: an index range read per span.
_HOURS_BY_SPAN = f"""ranges AS (
    SELECT series, period_start_us, period_end_us,
           period_start_us > max(period_end_us) OVER (PARTITION BY series
               ORDER BY period_start_us, period_end_us ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           IS NOT FALSE AS opens
    FROM marks),
spans AS (
    SELECT series, min(period_start_us) AS low, max(period_end_us) AS high
    FROM (SELECT *, count(*) FILTER (WHERE opens) OVER (PARTITION BY series
                        ORDER BY period_start_us, period_end_us ROWS UNBOUNDED PRECEDING) AS span
          FROM ranges) AS numbered
    GROUP BY series, span),
hours AS MATERIALIZED (
    SELECT s.series, h.start_us, h.quantity, h.events, h.digest
    FROM spans JOIN series AS s USING (series) CROSS JOIN LATERAL (
        SELECT {_EVENT_SUMS} FROM "usage".events AS e
        WHERE e.tenant_id = s.tenant_id AND e.metric = s.metric AND e.occurred_at_us >= spans.low
          AND e.occurred_at_us < spans.high
        GROUP BY 1) AS h)"""
# Days from hours; weeks and months from days; then one row per mark, numbered (seq) as written. Digests
# are summed in numeric and folded to 64 bits at the end (to_hex of the two's complement bigint).
_PASS = f"""WITH {_MARKS}, {{hours}},
days AS (
    SELECT series, start_us - start_us % {DAY_US} AS start_us, sum(quantity) AS quantity, sum(events) AS events,
           sum(digest) AS digest
    FROM hours GROUP BY 1, 2),
totals AS (
    SELECT series, 1 AS period, start_us, quantity, events, digest FROM hours
    UNION ALL
    SELECT d.series, b.period, b.start_us, sum(d.quantity), sum(d.events), sum(d.digest)
    FROM days AS d CROSS JOIN LATERAL (VALUES
        (2, d.start_us), (3, d.start_us - (d.start_us + {3 * DAY_US}) % {WEEK_US}),
        (4, {_MONTH_OF.format(us="d.start_us")})) AS b (period, start_us)
    GROUP BY 1, 2, 3)
INSERT INTO {_WORK} (mark, version, tenant_id, metric, period, period_start_us, total_quantity, event_count,
                     source_hash)
SELECT m.mark, m.version, m.tenant_id, m.metric, m.period, m.period_start_us,
       coalesce(t.quantity, 0), coalesce(t.events, 0),
       lpad(to_hex((mod(mod(coalesce(t.digest, 0), {2**64}) + {2**64 + 2**63}, {2**64}) - {2**63})::bigint), 16, '0')
FROM marks AS m LEFT JOIN totals AS t ON t.series = m.series AND t.period = m.period
     AND t.start_us = m.period_start_us"""
# For a backlog: the planner's row estimates for these CTEs are off by orders of magnitude, and a sort of
# millions of rows spills to disk; it is told to aggregate and join by hashing, in memory.
_SCAN_SETTINGS = ("work_mem = '256MB'", "enable_sort = off", "enable_mergejoin = off")
_APPLY_SETTINGS = ("jit = off", "enable_memoize = off", "plan_cache_mode = force_custom_plan")
# Usage's connections plan prepared statements once (generic plans, for GetUsage); a pass and its
# applies are big, run rarely and depend on their values, so they are planned for each run.
_PASS_SETTINGS = ("jit = off", "plan_cache_mode = force_custom_plan")
# Lock the marks of a chunk that are still the row version the pass saw (same ctid and xmin: an ingest that
# marks a bucket again writes a new version), skipping those another transaction holds; delete them and
# upsert their buckets, in one statement.
_APPLY = f"""WITH chunk AS MATERIALIZED (SELECT * FROM {_WORK} WHERE seq > :after AND seq <= :until),
held AS MATERIALIZED (
    SELECT ctid AS mark, xmin AS version FROM "usage".dirty_buckets
    WHERE ctid = ANY (ARRAY(SELECT mark FROM chunk))
    FOR UPDATE SKIP LOCKED),
claimed AS MATERIALIZED (SELECT chunk.* FROM chunk JOIN held USING (mark, version)),
cleared AS (DELETE FROM "usage".dirty_buckets WHERE ctid = ANY (ARRAY(SELECT mark FROM claimed)))
INSERT INTO "usage".aggregates (tenant_id, metric, period, period_start_us, total_quantity, event_count,
                                source_hash, computed_at_us)
SELECT tenant_id, metric, period, period_start_us, total_quantity, event_count, source_hash, :now
FROM claimed ORDER BY tenant_id, metric, period, period_start_us
ON CONFLICT (tenant_id, metric, period, period_start_us) DO UPDATE SET
    total_quantity = excluded.total_quantity, event_count = excluded.event_count,
    source_hash = excluded.source_hash, computed_at_us = excluded.computed_at_us"""


def count_dirty(session, tenant_id: str | None, limit: int) -> int:
    """How many dirty marks (at most `limit`) the next pass would read."""
    scope = "WHERE tenant_id = :tenant" if tenant_id else ""
    return session.execute(text(f'SELECT count(*) FROM (SELECT 1 FROM "usage".dirty_buckets {scope} LIMIT :limit) '
                                "AS m"), {"tenant": tenant_id, "limit": limit}).scalar_one()


def compute_pass(session, tenant_id: str | None, limit: int, *, scan: bool) -> int:
    """Into the session's work table: up to `limit` dirty marks in key order, each with its bucket's totals.

    One statement, so marks and events are read in one snapshot; it takes no row locks. `scan` reads
    the events of the pass's time range sequentially (a backlog); otherwise by index, span by span.
    """
    hours = (_HOURS_BY_SCAN if scan else _HOURS_BY_SPAN).format(
        scope="AND e.tenant_id = :tenant" if tenant_id and scan else "")
    statement = _PASS.format(hours=hours, scope="WHERE tenant_id = :tenant" if tenant_id else "")
    session.execute(text(_WORK_DDL))
    session.execute(text(f"TRUNCATE {_WORK} RESTART IDENTITY"))
    for setting in _PASS_SETTINGS + (_SCAN_SETTINGS if scan else ()):
        session.execute(text(f"SET LOCAL {setting}"))
    found = session.execute(text(statement), {"tenant": tenant_id, "limit": limit}).rowcount
    session.execute(text(f"ANALYZE {_WORK}"))
    return found


def apply_pass(session, after: int, size: int, now_us: int) -> int:
    """Store the buckets of work rows after..after+size whose marks nobody changed since the pass; clear those marks."""
    for setting in _APPLY_SETTINGS:
        session.execute(text(f"SET LOCAL {setting}"))
    return session.execute(text(_APPLY), {"after": after, "until": after + size, "now": now_us}).rowcount


def drop_work(session) -> None:
    session.execute(text(f"DROP TABLE IF EXISTS {_WORK}"))


# --- SQLite: writers are serialised, so a claim is simply the first marks; one bucket at a time -------------------

def claim_dirty(session, tenant_id: str | None, limit: int) -> list[tuple]:
    """Up to `limit` dirty buckets: (tenant, metric, period, start, marked_at)."""
    statement = select(dirty_buckets).order_by(*[dirty_buckets.c[k] for k in _KEY]).limit(limit)
    if tenant_id:
        statement = statement.where(dirty_buckets.c.tenant_id == tenant_id)
    return [tuple(row) for row in session.execute(statement)]


def recompute(session, tenant_id: str, metric: str, period: int, start_us: int, now_us: int) -> None:
    """Recompute one bucket from raw events and store it (deterministic: same events, same row)."""
    end_us = next_start(Period(period), start_us)
    statement = select(events.c.event_id, events.c.content_hash, events.c.quantity) \
        .where(events.c.tenant_id == tenant_id, events.c.metric == metric,
               events.c.occurred_at_us >= start_us, events.c.occurred_at_us < end_us)
    digest, total, count = 0, 0, 0
    for event_id, content_hash, quantity in session.execute(statement):
        digest += pg_hash_text(f"{event_id}:{content_hash}".encode())
        total += quantity
        count += 1
    row = dict(tenant_id=tenant_id, metric=metric, period=period, period_start_us=start_us, total_quantity=total,
               event_count=count, source_hash=format(digest % 2**64, "016x"), computed_at_us=now_us)
    upsert = dialect_insert(session, aggregates)
    session.execute(upsert.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={k: upsert.excluded[k] for k in ("total_quantity", "event_count", "source_hash", "computed_at_us")}),
        row)


def clear_dirty(session, claimed: tuple) -> None:
    """Delete the dirty mark only if no event re-marked it since it was claimed."""
    tenant_id, metric, period, start_us, marked_at_us = claimed
    session.execute(dirty_buckets.delete().where(
        dirty_buckets.c.tenant_id == tenant_id, dirty_buckets.c.metric == metric,
        dirty_buckets.c.period == period, dirty_buckets.c.period_start_us == start_us,
        dirty_buckets.c.marked_at_us == marked_at_us))


def record_run(session, tenant_id: str | None, now_us: int, buckets: int) -> None:
    upsert = dialect_insert(session, rollup_runs)
    session.execute(upsert.on_conflict_do_update(
        index_elements=["tenant_id"], set_={"last_run_us": upsert.excluded.last_run_us,
                                            "last_run_buckets": upsert.excluded.last_run_buckets}),
        dict(tenant_id=tenant_id or "", last_run_us=now_us, last_run_buckets=buckets))


def dirty_summary(session, tenant_id: str | None) -> tuple[int, int | None]:
    """(dirty bucket count, oldest marked_at) of one tenant or of all."""
    statement = select(func.count(), func.min(dirty_buckets.c.marked_at_us))
    if tenant_id:
        statement = statement.where(dirty_buckets.c.tenant_id == tenant_id)
    count, oldest = session.execute(statement).one()
    return int(count), oldest


def last_run(session, tenant_id: str | None) -> tuple[int, int] | None:
    """(last_run_us, buckets) of the latest run covering the scope (a tenant's own or an all-tenant run)."""
    scopes = ["", tenant_id] if tenant_id else [""]
    statement = select(rollup_runs.c.last_run_us, rollup_runs.c.last_run_buckets) \
        .where(rollup_runs.c.tenant_id.in_(scopes)).order_by(rollup_runs.c.last_run_us.desc()).limit(1)
    row = session.execute(statement).first()
    return (row[0], row[1]) if row else None


def list_aggregates(session, tenant_id: str, metric: str, period: int, start_us: int | None, end_us: int | None,
                    *, after: int | None, limit: int) -> list[tuple]:
    """Aggregate rows with a dirty flag, oldest first, resuming after the bucket starting at `after`."""
    joined = aggregates.outerjoin(dirty_buckets, and_(*[aggregates.c[k] == dirty_buckets.c[k] for k in _KEY]))
    statement = select(aggregates, dirty_buckets.c.marked_at_us.is_not(None).label("dirty")).select_from(joined) \
        .where(aggregates.c.tenant_id == tenant_id, aggregates.c.metric == metric, aggregates.c.period == period) \
        .order_by(aggregates.c.period_start_us).limit(limit)
    if start_us is not None:
        statement = statement.where(aggregates.c.period_start_us >= start_us)
    if end_us is not None:
        statement = statement.where(aggregates.c.period_start_us < end_us)
    if after is not None:
        statement = statement.where(aggregates.c.period_start_us > after)
    return [row for row in session.execute(statement)]
