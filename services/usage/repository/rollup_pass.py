"""SQL of a rollup pass on PostgreSQL: compute many dirty buckets in one snapshot, apply them in short transactions.

A pass (`compute_pass`) runs in one REPEATABLE READ transaction, so every statement in it reads the
same snapshot, and takes no row locks. In temp tables of that transaction it reads

1. up to `limit` dirty marks, whole series (tenant, metric) at a time, each with the row version it
   saw (ctid and xmin);
2. the hours of its HOUR marks, summed from raw events: the only raw events a pass reads;
3. its DAY marks, each folded from the day's hours: the ones just computed, and the stored hour
   aggregates of the day's clean hours;
4. its WEEK and MONTH marks, folded the same way from days.

Each level trusts a stored aggregate only when the bucket has no dirty mark, the rule GetUsage
follows too: a recomputed aggregate and the deletion of its mark commit together, so an unmarked
aggregate is exact in the snapshot. A pass holds every dirty bucket of a series below any bucket of
that series it holds (see _TAKE_MARKS), so a bucket below one in the pass and not in it is clean. A
late event thus costs its hour's events and a few dozen aggregate rows, not a re-read of its month.

The pass then hands its result to `usage.rollup_work` (an unlogged table, rows tagged with the
pass's id), not to a temp table: under PgBouncer's transaction pooling the transactions that follow
may run on another server connection. `apply_pass`, in short transactions, locks the marks that are
still the row version the pass saw (FOR UPDATE SKIP LOCKED), upserts their aggregates and deletes
them. An ingest that marks a bucket again writes a new version of its mark, so a bucket that gained
events after the pass read them stays dirty for the next pass. Any number of workers may run passes
at once. (Over the house's ~200 lines: the statements of one pass belong together.)
"""

from __future__ import annotations

from sqlalchemy import text

from services.usage.buckets import DAY_US, HOUR_US, WEEK_US

_MARKS, _WORK, _PASSES = "pg_temp.usage_rollup_marks", "pg_temp.usage_rollup_work", '"usage".rollup_work'
STALE_US = 3600 * 1_000_000  # a pass's rows older than this belong to a worker that died: swept
# Dropped at commit: nothing is left on a server connection that PgBouncer hands to someone else.
_TEMP_TABLES = (
    """CREATE TEMP TABLE usage_rollup_marks (
        mark tid NOT NULL, version xid NOT NULL, series integer NOT NULL, tenant_id varchar(128) NOT NULL,
        metric varchar(128) NOT NULL, period smallint NOT NULL, period_start_us bigint NOT NULL,
        period_end_us bigint NOT NULL) ON COMMIT DROP""",
    # One row per mark of the pass with its bucket's totals; `digest` is the exact sum of the events'
    # hashes (numeric), folded to 64 bits when stored.
    """CREATE TEMP TABLE usage_rollup_work (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, mark tid NOT NULL, version xid NOT NULL,
        series integer NOT NULL, tenant_id varchar(128) NOT NULL, metric varchar(128) NOT NULL,
        period smallint NOT NULL, period_start_us bigint NOT NULL, total_quantity bigint NOT NULL,
        event_count bigint NOT NULL, digest numeric NOT NULL) ON COMMIT DROP""",
)
_MONTH_END = ("(extract(epoch FROM (to_timestamp(d.period_start_us / 1000000.0) AT TIME ZONE 'UTC') "
              "+ interval '1 month') * 1000000)::bigint")
# Whole series (tenant, metric) in key order while they fit in `limit` marks; of the series that
# crosses the limit, its first marks in (period, start) order. Either way a pass holds, for each of
# its buckets, every dirty bucket of the same series below it. Grouping the marks by series needs no
# sort of all the marks, only of the series.
_MARK_COLUMNS = f"""d.ctid, d.xmin, c.series, d.tenant_id, d.metric, d.period, d.period_start_us,
    CASE d.period WHEN 1 THEN d.period_start_us + {HOUR_US} WHEN 2 THEN d.period_start_us + {DAY_US}
                  WHEN 3 THEN d.period_start_us + {WEEK_US} ELSE {_MONTH_END} END"""
_TAKE_MARKS = f"""INSERT INTO {_MARKS}
WITH per_series AS (
    SELECT tenant_id, metric, count(*) AS marks FROM "usage".dirty_buckets {{scope}} GROUP BY tenant_id, metric),
chosen AS MATERIALIZED (
    SELECT tenant_id, metric, series, least(marks, :limit - (running - marks)) AS taken, marks
    FROM (SELECT tenant_id, metric, marks, row_number() OVER taken AS series,
                 sum(marks) OVER (taken ROWS UNBOUNDED PRECEDING) AS running
          FROM per_series WINDOW taken AS (ORDER BY tenant_id, metric)) AS ordered
    WHERE running - marks < :limit)
SELECT {_MARK_COLUMNS}
FROM "usage".dirty_buckets AS d JOIN chosen AS c ON c.tenant_id = d.tenant_id AND c.metric = d.metric
WHERE c.taken = c.marks
UNION ALL
SELECT {_MARK_COLUMNS}
FROM chosen AS c CROSS JOIN LATERAL (
    SELECT ctid, xmin, * FROM "usage".dirty_buckets AS d WHERE d.tenant_id = c.tenant_id AND d.metric = c.metric
    ORDER BY d.period, d.period_start_us LIMIT c.taken) AS d
WHERE c.taken < c.marks"""
_EVENT_SUMS = ("sum(e.quantity) AS quantity, count(*) AS events, "
               "sum(hashtextextended(e.event_id || ':' || e.content_hash, 0)) AS digest")
# Hour marks with their events' sums. A backlog reads the pass's time range in one sequential scan
# and hashes it by hour; a few marks read their events by index, one range per run of adjacent hours.
_HOURS_BY_SCAN = f"""INSERT INTO {_WORK} (mark, version, series, tenant_id, metric, period, period_start_us,
                                          total_quantity, event_count, digest)
SELECT m.mark, m.version, m.series, m.tenant_id, m.metric, 1, m.period_start_us, coalesce(h.quantity, 0),
       coalesce(h.events, 0), coalesce(h.digest, 0)
FROM {_MARKS} AS m LEFT JOIN (
    SELECT e.tenant_id, e.metric, e.occurred_at_us - e.occurred_at_us % {HOUR_US} AS start_us, {_EVENT_SUMS}
    FROM "usage".events AS e
    WHERE e.occurred_at_us >= (SELECT min(period_start_us) FROM {_MARKS} WHERE period = 1)
      AND e.occurred_at_us < (SELECT max(period_end_us) FROM {_MARKS} WHERE period = 1) {{scope}}
    GROUP BY 1, 2, 3) AS h
  ON h.tenant_id = m.tenant_id AND h.metric = m.metric AND h.start_us = m.period_start_us
WHERE m.period = 1"""
_HOURS_BY_SPAN = f"""INSERT INTO {_WORK} (mark, version, series, tenant_id, metric, period, period_start_us,
                                          total_quantity, event_count, digest)
WITH spans AS (
    SELECT series, tenant_id, metric, min(period_start_us) AS low, max(period_end_us) AS high
    FROM (SELECT *, period_start_us - {HOUR_US} * row_number() OVER (PARTITION BY series ORDER BY period_start_us)
                    AS run
          FROM {_MARKS} WHERE period = 1) AS numbered
    GROUP BY series, tenant_id, metric, run),
hours AS (
    SELECT spans.series, h.start_us, h.quantity, h.events, h.digest
    FROM spans CROSS JOIN LATERAL (
        SELECT e.occurred_at_us - e.occurred_at_us % {HOUR_US} AS start_us, {_EVENT_SUMS}
        FROM "usage".events AS e
        WHERE e.tenant_id = spans.tenant_id AND e.metric = spans.metric AND e.occurred_at_us >= spans.low
          AND e.occurred_at_us < spans.high
        GROUP BY 1) AS h)
SELECT m.mark, m.version, m.series, m.tenant_id, m.metric, 1, m.period_start_us, coalesce(h.quantity, 0),
       coalesce(h.events, 0), coalesce(h.digest, 0)
FROM {_MARKS} AS m LEFT JOIN hours AS h ON h.series = m.series AND h.start_us = m.period_start_us
WHERE m.period = 1"""
# Marks of `period` folded from the level below: its buckets computed in this pass (in the work table),
# plus the stored aggregates of the others, which are clean (see the module's docstring). A stored
# digest is the 64-bit two's complement of the sum; adding it back as a signed bigint keeps the sum
# right mod 2**64.
_FOLD = f"""INSERT INTO {_WORK} (mark, version, series, tenant_id, metric, period, period_start_us,
                                 total_quantity, event_count, digest)
SELECT m.mark, m.version, m.series, m.tenant_id, m.metric, m.period, m.period_start_us,
       coalesce(sum(parts.quantity), 0), coalesce(sum(parts.events), 0), coalesce(sum(parts.digest), 0)
FROM {_MARKS} AS m LEFT JOIN LATERAL (
    SELECT w.total_quantity AS quantity, w.event_count AS events, w.digest
    FROM {_WORK} AS w
    WHERE w.series = m.series AND w.period = :below AND w.period_start_us >= m.period_start_us
      AND w.period_start_us < m.period_end_us
    UNION ALL
    SELECT a.total_quantity, a.event_count, ('x' || a.source_hash)::bit(64)::bigint
    FROM "usage".aggregates AS a
    WHERE a.tenant_id = m.tenant_id AND a.metric = m.metric AND a.period = :below
      AND a.period_start_us >= m.period_start_us AND a.period_start_us < m.period_end_us
      AND NOT EXISTS (SELECT 1 FROM {_WORK} AS w WHERE w.series = m.series AND w.period = :below
                      AND w.period_start_us = a.period_start_us)) AS parts ON true
WHERE m.period = ANY (:periods)
GROUP BY m.mark, m.version, m.series, m.tenant_id, m.metric, m.period, m.period_start_us"""
_INDEXES = (f"CREATE INDEX usage_rollup_work_key ON {_WORK} (series, period, period_start_us)",)
# The pass, handed over: the digest folded to 64 bits (to_hex of the two's complement bigint, 16 digits).
_HAND_OVER = f"""INSERT INTO {_PASSES} (pass_id, created_at_us, mark, version, tenant_id, metric, period,
                                      period_start_us, total_quantity, event_count, source_hash)
SELECT :pass, :now, mark, version, tenant_id, metric, period, period_start_us, total_quantity, event_count,
       lpad(to_hex((mod(mod(digest, {2**64}) + {2**64 + 2**63}, {2**64}) - {2**63})::bigint), 16, '0')
FROM {_WORK} ORDER BY seq"""
# For a backlog the planner's estimates of these temp tables are far off, and a sort of millions of rows
# spills to disk: it is told to aggregate and join by hashing, in memory.
_SCAN_SETTINGS = ("work_mem = '256MB'", "enable_sort = off", "enable_mergejoin = off")
# Usage's connections plan prepared statements once (generic plans, for GetUsage); a pass and its
# applies are big, run rarely and depend on their values, so they are planned for each run.
_PASS_SETTINGS = ("jit = off", "plan_cache_mode = force_custom_plan")
_APPLY_SETTINGS = ("jit = off", "enable_memoize = off", "plan_cache_mode = force_custom_plan")
# Lock the marks of a chunk that are still the row version the pass saw (same ctid and xmin: an ingest that
# marks a bucket again writes a new version), skipping those another transaction holds; delete them and
# upsert their buckets, in one statement.
_APPLY = f"""WITH chunk AS MATERIALIZED (
    SELECT * FROM {_PASSES} WHERE pass_id = :pass AND seq > :after AND seq <= :until),
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


def compute_pass(session, pass_id: int, tenant_id: str | None, limit: int, *, scan_from: int,
                 now_us: int) -> tuple[int, int, int]:
    """Up to `limit` dirty marks, whole series first, each with its bucket's totals, into usage.rollup_work
    as pass `pass_id`: (marks, first seq, last seq).

    Must be the transaction's first statement (it sets REPEATABLE READ). From `scan_from` hour marks on,
    the hours are summed from one sequential read of the events instead of index range reads.
    """
    session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    for setting in _PASS_SETTINGS:
        session.execute(text(f"SET LOCAL {setting}"))
    for statement in _TEMP_TABLES + _INDEXES:
        session.execute(text(statement))
    values = {"tenant": tenant_id, "limit": limit}
    found = session.execute(text(_TAKE_MARKS.format(scope="WHERE tenant_id = :tenant" if tenant_id else "")),
                            values).rowcount
    session.execute(text(f"ANALYZE {_MARKS}"))
    hours = session.execute(text(f"SELECT count(*) FROM {_MARKS} WHERE period = 1")).scalar_one()
    if hours >= scan_from:
        for setting in _SCAN_SETTINGS:
            session.execute(text(f"SET LOCAL {setting}"))
        session.execute(text(_HOURS_BY_SCAN.format(scope="AND e.tenant_id = :tenant" if tenant_id else "")), values)
    else:
        session.execute(text(_HOURS_BY_SPAN))
    for below, periods in ((1, (2,)), (2, (3, 4))):
        session.execute(text(f"ANALYZE {_WORK}"))
        session.execute(text(_FOLD), {"below": below, "periods": list(periods)})
    session.execute(text(f"DELETE FROM {_PASSES} WHERE created_at_us < :stale"), {"stale": now_us - STALE_US})
    session.execute(text(_HAND_OVER), {"pass": pass_id, "now": now_us})
    first, last = session.execute(text(f"SELECT min(seq), max(seq) FROM {_PASSES} WHERE pass_id = :pass"),
                                  {"pass": pass_id}).one()
    return found, first or 0, last or 0


def apply_pass(session, pass_id: int, after: int, size: int, now_us: int) -> int:
    """Store the buckets of the pass's rows after..after+size whose marks nobody changed since; clear those marks."""
    for setting in _APPLY_SETTINGS:
        session.execute(text(f"SET LOCAL {setting}"))
    return session.execute(text(_APPLY), {"pass": pass_id, "after": after, "until": after + size,
                                          "now": now_us}).rowcount


def drop_pass(session, pass_id: int) -> None:
    session.execute(text(f"DELETE FROM {_PASSES} WHERE pass_id = :pass"), {"pass": pass_id})
