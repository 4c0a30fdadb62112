"""SQL of a rollup pass's days (see rollup_pass.py): each day mark with its hours summed from raw events,
packed into the day's row, into the pass's work table.

A day is read from events_by_metric_time alone (index only: the index covers quantity and each
event's digest, migration usage_0010), one range per day, or per dirty hour when the day's stored row
still holds for its other hours. A backlog whose events the visibility map does not cover yet is read
with one sequential scan instead.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from tollgate.services.usage.domain.buckets import ALL_HOURS, DAY_US, HOUR_US

# The temp tables of a pass (created by rollup_pass.compute_pass): its marks, and its computed buckets.
MARKS, WORK = "pg_temp.usage_rollup_marks", "pg_temp.usage_rollup_work"
# e.digest is the event's hashtextextended(event_id || ':' || content_hash, 0), filled on insert by a
# trigger and held in events_by_metric_time beside quantity (migration usage_0010).
_EVENT_SUMS = "sum(e.quantity) AS quantity, count(*) AS events, sum(e.digest) AS digest"
# A day's hours packed into its row (tables.aggregates): hour sums in, one row per day out. The arrays
# are filled in the same order, so their positions stay aligned; no ORDER BY inside the aggregates, which
# would forbid hashing the groups (a backlog would sort all its events for it). An hour's digest is kept as the
# exact sum (numeric), like the pass's own digests: no conversion per hour.
_PACK_HOURS = """sum(h.quantity) AS quantity, sum(h.events) AS events, sum(h.digest) AS digest,
    array_agg(h.offset_) AS offsets, array_agg(h.quantity) AS quantities, array_agg(h.events) AS counts,
    array_agg(h.digest) AS digests"""
_DAY_COLUMNS = """(mark, version, series, tenant_id, metric, period, period_start_us, total_quantity, event_count,
                  digest, hour_offsets, hour_quantities, hour_counts, hour_digests)"""
_DAY_VALUES = """m.mark, m.version, m.series, m.tenant_id, m.metric, 2, m.period_start_us, coalesce(d.quantity, 0),
       coalesce(d.events, 0), coalesce(d.digest, 0), coalesce(d.offsets, ARRAY[]::smallint[]),
       coalesce(d.quantities, ARRAY[]::numeric[]), coalesce(d.counts, ARRAY[]::bigint[]),
       coalesce(d.digests, ARRAY[]::numeric[])"""
# Day marks with their hours, each day read from events_by_metric_time, index only. A day with no clean
# hour to keep (every hour dirty, as in a backlog, or no stored row yet) is read as one range, its hours
# grouped by hashing (at most 24 groups).
_READ_WHOLE = f"""(m.dirty_hours = {ALL_HOURS} OR NOT EXISTS (
    SELECT FROM "usage".aggregates AS a WHERE a.tenant_id = m.tenant_id AND a.metric = m.metric AND a.period = 2
    AND a.period_start_us = m.period_start_us))"""
_WHOLE_DAYS = f"""INSERT INTO {WORK} {_DAY_COLUMNS}
SELECT {_DAY_VALUES}
FROM {MARKS} AS m CROSS JOIN LATERAL (
    SELECT {_PACK_HOURS}
    FROM (SELECT (e.occurred_at_us % {DAY_US} / {HOUR_US})::smallint AS offset_, {_EVENT_SUMS}
          FROM "usage".events AS e
          WHERE e.tenant_id = m.tenant_id AND e.metric = m.metric AND e.occurred_at_us >= m.period_start_us
            AND e.occurred_at_us < m.period_start_us + {DAY_US}
          GROUP BY 1) AS h) AS d
WHERE m.period = 2 AND {_READ_WHOLE}"""
# The same days read with one sequential scan of the pass's time range, hashed by (series, hour): for a
# backlog whose events the visibility map does not yet cover (a bulk load before VACUUM), where reading
# day by day from the index would visit each event's table page at random (figures in bench/RESULTS.md);
# the scan takes the same time whatever the map says.
_WHOLE_DAYS_BY_SCAN = f"""INSERT INTO {WORK} {_DAY_COLUMNS}
SELECT {_DAY_VALUES}
FROM {MARKS} AS m LEFT JOIN (
    SELECT h.tenant_id, h.metric, h.day_us, {_PACK_HOURS}
    FROM (SELECT e.tenant_id, e.metric, e.occurred_at_us - e.occurred_at_us % {DAY_US} AS day_us,
                 (e.occurred_at_us % {DAY_US} / {HOUR_US})::smallint AS offset_, {_EVENT_SUMS}
          FROM "usage".events AS e
          WHERE e.occurred_at_us >= :low AND e.occurred_at_us < :high {{scope}}
          GROUP BY 1, 2, 3, 4) AS h
    GROUP BY 1, 2, 3) AS d
  ON d.tenant_id = m.tenant_id AND d.metric = m.metric AND d.day_us = m.period_start_us
WHERE m.period = 2 AND {_READ_WHOLE}"""
# For that scan the planner's estimates are far off (array_agg's state counts as 8 kB per group): left
# alone it walks an index in order and sorts millions of rows. It is told to read the table
# sequentially and aggregate and join by hashing, in memory; for that statement only.
_SCAN_SETTINGS = (
    "work_mem = '256MB'",
    "hash_mem_multiplier = 4",
    "enable_sort = off",
    "enable_incremental_sort = off",
    "enable_mergejoin = off",
    "enable_indexscan = off",
    "enable_bitmapscan = off",
)
# The share of the events table's pages the visibility map marked all-visible at the last VACUUM, over
# its size at the last VACUUM or ANALYZE (autoanalyze follows bulk inserts sooner than autovacuum).
_VISIBLE_SHARE = """SELECT relallvisible::float8 / greatest(relpages, 1) FROM pg_class
WHERE oid = '"usage".events'::regclass"""
# Any other day (late or live events into a stored day) reads its dirty hours one range each and takes
# the others from its stored row: they had no event since it was computed (see tables.dirty_buckets).
_PARTLY_DIRTY_DAYS = f"""INSERT INTO {WORK} {_DAY_COLUMNS}
SELECT {_DAY_VALUES}
FROM {MARKS} AS m CROSS JOIN LATERAL (
    SELECT {_PACK_HOURS}
    FROM (SELECT o.offset_, {_EVENT_SUMS}
          FROM generate_series(0, 23) AS o (offset_)
          JOIN "usage".events AS e ON e.tenant_id = m.tenant_id AND e.metric = m.metric
           AND e.occurred_at_us >= m.period_start_us + o.offset_ * {HOUR_US}
           AND e.occurred_at_us < m.period_start_us + (o.offset_ + 1) * {HOUR_US}
          WHERE (m.dirty_hours >> o.offset_) & 1 = 1
          GROUP BY o.offset_
          UNION ALL
          SELECT c.offset_, c.quantity, c.events, c.digest
          FROM "usage".aggregates AS a, unnest(a.hour_offsets, a.hour_quantities, a.hour_counts, a.hour_digests)
              AS c (offset_, quantity, events, digest)
          WHERE a.tenant_id = m.tenant_id AND a.metric = m.metric AND a.period = 2
            AND a.period_start_us = m.period_start_us AND (m.dirty_hours >> c.offset_) & 1 = 0) AS h) AS d
WHERE m.period = 2 AND NOT {_READ_WHOLE}"""


def compute_days(session: Session, tenant_id: str | None, *, scan_from: int, visible_enough: float) -> None:
    """Every day mark of the pass with its totals and hours, into the work table."""
    days, low, high = session.execute(
        text(f"SELECT count(*), min(period_start_us), max(period_end_us) FROM {MARKS} WHERE period = 2")
    ).one()
    if days >= scan_from and session.execute(text(_VISIBLE_SHARE)).scalar_one() < visible_enough:
        for setting in _SCAN_SETTINGS:
            session.execute(text(f"SET LOCAL {setting}"))
        # The range as values, not a subquery: the planner then sees how much of the table it covers.
        session.execute(
            text(_WHOLE_DAYS_BY_SCAN.format(scope="AND e.tenant_id = :tenant" if tenant_id else "")),
            {"tenant": tenant_id, "low": low, "high": high},
        )
        for setting in _SCAN_SETTINGS:
            session.execute(text(f"RESET {setting.split()[0]}"))
    else:
        session.execute(text(_WHOLE_DAYS))
    session.execute(text(_PARTLY_DIRTY_DAYS))
