"""SQL of a rollup pass on PostgreSQL: compute many dirty buckets in one snapshot, apply them in short transactions.

A pass (`compute_pass`) runs in one REPEATABLE READ transaction, so every statement in it reads the
same snapshot, and takes no row locks. In temp tables of that transaction it reads

1. up to `limit` dirty marks, whole series (tenant, metric) at a time, each with the row version it
   saw (ctid and xmin);
2. its DAY marks, each with its hours summed from raw events and packed into the day's row: the only
   raw events a pass reads (see rollup_days.py);
3. its WEEK and MONTH marks, each folded from its days: the ones just computed, and the stored
   aggregates of the clean ones.

Each level trusts a stored aggregate only when the bucket has no dirty mark, the rule GetUsage
follows too: a recomputed aggregate and the deletion of its mark commit together, so an unmarked
aggregate is exact in the snapshot. A pass holds every dirty bucket of a series below any bucket of
that series it holds (see _TAKE_MARKS), so a bucket below one in the pass and not in it is clean. A
late event thus costs its hour's events and three aggregate rows, not a re-read of its month.

The pass then hands its result to `usage.rollup_work` (an unlogged table, rows tagged with the
pass's id), not to a temp table: under PgBouncer's transaction pooling the transactions that follow
may run on another server connection. `apply_pass`, in short transactions, locks the marks that are
still the row version the pass saw (FOR UPDATE SKIP LOCKED), upserts their aggregates and deletes
them. An ingest that marks a bucket again writes a new version of its mark, so a bucket that gained
events after the pass read them stays dirty for the next pass; it is stored all the same, and a day's mark
narrowed to the hours marked since (_NARROW). Any number of workers may run passes at once.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from tollgate.services.usage.domain.buckets import DAY_US, MAX_TOTAL, WEEK_US, Period
from tollgate.services.usage.repository import rowcount
from tollgate.services.usage.repository.meters import rolled_up_metrics
from tollgate.services.usage.repository.postgres import meter_days, rollup_days
from tollgate.services.usage.repository.postgres.rollup_days import MARKS as _MARKS
from tollgate.services.usage.repository.postgres.rollup_days import WORK as _WORK
from tollgate.services.usage.repository.rollups import RefusedBucket
from tollgate.services.usage.tables import HOUR_COLUMNS

_PASSES = '"usage".rollup_work'
_HOURS = ", ".join(HOUR_COLUMNS)
STALE_US = 3600 * 1_000_000  # a pass's rows older than this belong to a worker that died: swept
# Dropped at commit: nothing is left on a server connection that PgBouncer hands to someone else.
_TEMP_TABLES = (
    """CREATE TEMP TABLE usage_rollup_marks (
        mark tid NOT NULL, version xid NOT NULL, series integer NOT NULL, tenant_id varchar(128) NOT NULL,
        metric varchar(128) NOT NULL, period smallint NOT NULL, period_start_us bigint NOT NULL,
        period_end_us bigint NOT NULL, dirty_hours integer NOT NULL) ON COMMIT DROP""",
    # One row per mark of the pass with its bucket's totals; `digest` is the exact sum of the events'
    # hashes (numeric), folded to 64 bits when stored. Quantities are exact sums (numeric) too: a total
    # beyond a bigint is found and left out at the hand-over, instead of failing the whole pass.
    """CREATE TEMP TABLE usage_rollup_work (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, mark tid NOT NULL, version xid NOT NULL,
        series integer NOT NULL, tenant_id varchar(128) NOT NULL, metric varchar(128) NOT NULL,
        period smallint NOT NULL, period_start_us bigint NOT NULL, total_quantity numeric NOT NULL,
        event_count bigint NOT NULL, digest numeric NOT NULL, hour_offsets smallint[], hour_quantities numeric[],
        hour_counts bigint[], hour_digests numeric[]) ON COMMIT DROP""",
)
_MONTH_END = (
    "(extract(epoch FROM (to_timestamp(d.period_start_us / 1000000.0) AT TIME ZONE 'UTC') "
    "+ interval '1 month') * 1000000)::bigint"
)
# Whole series (tenant, metric) in key order while they fit in `limit` marks; of the series that
# crosses the limit, its first marks in (period, start) order. Either way a pass holds, for each of
# its buckets, every dirty bucket of the same series below it. Grouping the marks by series needs no
# sort of all the marks, only of the series.
_MARK_COLUMNS = f"""d.ctid, d.xmin, c.series, d.tenant_id, d.metric, d.period, d.period_start_us,
    CASE d.period WHEN 2 THEN d.period_start_us + {DAY_US} WHEN 3 THEN d.period_start_us + {WEEK_US}
                  ELSE {_MONTH_END} END, d.dirty_hours"""
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
# The pass, handed over: the digest folded to 64 bits (to_hex of the two's complement bigint, 16 digits), and
# each bucket with the version of its stored aggregate the pass read (NULL: none), for _NARROW.
# A bucket whose total is beyond a bigint (its hours and running sums are not) stays behind, with its mark.
_HAND_OVER = f"""INSERT INTO {_PASSES} (pass_id, created_at_us, mark, version, tenant_id, metric, period,
                                      period_start_us, total_quantity, event_count, source_hash, {_HOURS}, row_version)
SELECT :pass, :now, w.mark, w.version, w.tenant_id, w.metric, w.period, w.period_start_us, w.total_quantity,
       w.event_count,
       lpad(to_hex((mod(mod(w.digest, {2**64}) + {2**64 + 2**63}, {2**64}) - {2**63})::bigint), 16, '0'),
       {", ".join(f"w.{column}" for column in HOUR_COLUMNS)}, a.xmin
FROM {_WORK} AS w LEFT JOIN "usage".aggregates AS a
  ON a.tenant_id = w.tenant_id AND a.metric = w.metric AND a.period = w.period AND a.period_start_us = w.period_start_us
WHERE w.total_quantity <= {MAX_TOTAL} ORDER BY w.seq"""
_REFUSED = f"""SELECT tenant_id, metric, period, period_start_us, total_quantity FROM {_WORK}
WHERE total_quantity > {MAX_TOTAL} ORDER BY tenant_id, metric, period, period_start_us"""
# Usage's connections plan prepared statements once (generic plans, for GetUsage); a pass and its
# applies are big, run rarely and depend on their values, so they are planned for each run.
_PASS_SETTINGS = ("jit = off", "plan_cache_mode = force_custom_plan", "enable_memoize = off")
_APPLY_SETTINGS = ("jit = off", "enable_memoize = off", "plan_cache_mode = force_custom_plan")
# The pass's rows of a CTE `rows` stored as the buckets' aggregates, in key order.
_STORE = f"""INSERT INTO "usage".aggregates (tenant_id, metric, period, period_start_us, total_quantity, event_count,
                                source_hash, computed_at_us, {_HOURS})
SELECT tenant_id, metric, period, period_start_us, total_quantity, event_count, source_hash, :now, {_HOURS}
FROM {{rows}} ORDER BY tenant_id, metric, period, period_start_us
ON CONFLICT (tenant_id, metric, period, period_start_us) DO UPDATE SET
    total_quantity = excluded.total_quantity, event_count = excluded.event_count,
    source_hash = excluded.source_hash, computed_at_us = excluded.computed_at_us,
    hour_offsets = excluded.hour_offsets, hour_quantities = excluded.hour_quantities,
    hour_counts = excluded.hour_counts, hour_digests = excluded.hour_digests"""
# Lock the marks of a chunk that are still the row version the pass saw (same ctid and xmin: an ingest that
# marks a bucket again writes a new version), skipping those another transaction holds; delete them and
# upsert their buckets, in one statement. A mark is matched by its tenant and its ctid, never by ctid alone:
# with dirty_buckets distributed by tenant_id (Citus) the same ctid exists in every shard. Each chunk row
# comes out of the lock beside the mark it locked, rather than being joined back to the locked marks: the
# planner sees both CTEs as one row and would compare every pair of a chunk.
_APPLY = f"""WITH chunk AS MATERIALIZED (
    SELECT * FROM {_PASSES} WHERE pass_id = :pass AND seq > :after AND seq <= :until),
held AS MATERIALIZED (
    SELECT chunk.*, d.xmin AS held_version
    FROM chunk JOIN "usage".dirty_buckets AS d ON d.tenant_id = chunk.tenant_id AND d.ctid = chunk.mark
    FOR UPDATE OF d SKIP LOCKED),
claimed AS MATERIALIZED (SELECT * FROM held WHERE held_version = version),
cleared AS (DELETE FROM "usage".dirty_buckets AS d USING claimed
            WHERE d.tenant_id = claimed.tenant_id AND d.ctid = claimed.mark)
{_STORE.format(rows="claimed")}
RETURNING tenant_id, metric, period, period_start_us"""
# Then the buckets of the chunk whose marks changed since the pass read them (an ingest marked them again) but
# whose stored aggregate is still the one the pass read, so no other apply touched the bucket since the pass's
# snapshot. Each is stored as the pass computed it, exact as of the snapshot, and keeps its mark, dated from the
# pass (the stored row misses no event older than it). A day's mark is also narrowed to the hours marked since it
# was made or last narrowed (fresh_hours), which hold every hour with an event the pass did not read: its other
# hours are exact in the row, and GetUsage reads them there. Without this, a day that gains events faster than a
# pass goes from its snapshot to its apply kept its mark for good, with every hour it ever had marked, and GetUsage
# read it raw whole; and every busy bucket looked as old as its first mark. A narrowed day's meter rows are stored
# with it (apply_pass), from the same snapshot, since QueryUsage reads them for the hours its mark does not name.
_NARROW = f"""WITH chunk AS MATERIALIZED (
    SELECT * FROM {_PASSES} WHERE pass_id = :pass AND seq > :after AND seq <= :until),
held AS MATERIALIZED (
    SELECT chunk.*
    FROM chunk JOIN "usage".dirty_buckets AS d
      ON d.tenant_id = chunk.tenant_id AND d.metric = chunk.metric AND d.period = chunk.period
     AND d.period_start_us = chunk.period_start_us
    WHERE d.xmin <> chunk.version
    FOR UPDATE OF d SKIP LOCKED),
unchanged AS MATERIALIZED (
    SELECT held.* FROM held LEFT JOIN "usage".aggregates AS a
      ON a.tenant_id = held.tenant_id AND a.metric = held.metric AND a.period = held.period
     AND a.period_start_us = held.period_start_us
    WHERE a.xmin IS NOT DISTINCT FROM held.row_version),
narrowed AS (UPDATE "usage".dirty_buckets AS d
             SET dirty_hours = CASE d.period WHEN {int(Period.DAY)} THEN d.fresh_hours ELSE d.dirty_hours END,
                 fresh_hours = 0, marked_at_us = unchanged.created_at_us
             FROM unchanged
             WHERE d.tenant_id = unchanged.tenant_id AND d.metric = unchanged.metric AND d.period = unchanged.period
               AND d.period_start_us = unchanged.period_start_us)
{_STORE.format(rows="unchanged")}
RETURNING tenant_id, metric, period, period_start_us"""


class Pass(NamedTuple):
    """A computed pass: the marks it read, the seq range of its rows in usage.rollup_work, and the buckets left out
    because their totals do not fit in a bigint (their marks stay)."""

    found: int
    first: int
    last: int
    refused: list[RefusedBucket]


def compute_pass(
    session: Session,
    pass_id: int,
    tenant_id: str | None,
    limit: int,
    now_us: int,
    *,
    scan_from: int,
    visible_enough: float,
) -> Pass:
    """Up to `limit` dirty marks, whole series first, each with its bucket's totals, into usage.rollup_work
    as pass `pass_id`.

    Must be the transaction's first statement (it sets REPEATABLE READ). From `scan_from` day marks on,
    when less than `visible_enough` of the events table is all-visible, the days read whole come from
    one sequential scan instead of one index range each.
    """
    session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    for setting in _PASS_SETTINGS:
        session.execute(text(f"SET LOCAL {setting}"))
    for statement in _TEMP_TABLES + _INDEXES:
        session.execute(text(statement))
    found = rowcount(
        session.execute(
            text(_TAKE_MARKS.format(scope="WHERE tenant_id = :tenant" if tenant_id else "")),
            {"tenant": tenant_id, "limit": limit},
        )
    )
    session.execute(text(f"ANALYZE {_MARKS}"))
    rollup_days.compute_days(session, tenant_id, scan_from=scan_from, visible_enough=visible_enough)
    session.execute(text(f"ANALYZE {_WORK} (series, period, period_start_us)"))  # not the arrays: slow, unused
    session.execute(text(_FOLD), {"below": int(Period.DAY), "periods": [int(Period.WEEK), int(Period.MONTH)]})
    session.execute(text(f"DELETE FROM {_PASSES} WHERE created_at_us < :stale"), {"stale": now_us - STALE_US})
    meter_days.sweep(session, None, now_us - STALE_US)
    meter_days.compute(session, pass_id, now_us, rolled_up_metrics(session))
    session.execute(text(_HAND_OVER), {"pass": pass_id, "now": now_us})
    first, last = session.execute(
        text(f"SELECT min(seq), max(seq) FROM {_PASSES} WHERE pass_id = :pass"), {"pass": pass_id}
    ).one()
    refused = [RefusedBucket(t, m, p, s, int(q)) for t, m, p, s, q in session.execute(text(_REFUSED))]
    return Pass(found, first or 0, last or 0, refused)


def apply_pass(session: Session, pass_id: int, after: int, size: int, now_us: int) -> int:
    """Store the buckets of the pass's rows after..after+size whose marks nobody changed since; clear those marks.
    Then store the buckets whose marks changed, keeping their marks, the days' narrowed (_NARROW). Replace the meter
    rows of the days among both (meter_days.py). How many buckets were stored."""
    for setting in _APPLY_SETTINGS:
        session.execute(text(f"SET LOCAL {setting}"))
    values = {"pass": pass_id, "after": after, "until": after + size, "now": now_us}
    stored = [*session.execute(text(_APPLY), values), *session.execute(text(_NARROW), values)]
    meter_days.apply(session, pass_id, [(t, m, s) for t, m, p, s in stored if p == Period.DAY], now_us)
    return len(stored)


def drop_pass(session: Session, pass_id: int) -> None:
    session.execute(text(f"DELETE FROM {_PASSES} WHERE pass_id = :pass"), {"pass": pass_id})
    meter_days.sweep(session, pass_id)
