"""SQL of a rollup pass's meter days (see rollup_pass.py; docs/usage.md, "Meters"): each day mark of a metric rolled
up with dimensions recomputed whole from its raw events into its cuboids' rows, handed to the applies through
usage.meter_work, which write them with the day's aggregates and the deletion (or narrowing) of its mark.

A marked day is read whole (its events are all there: a purge keeps a dirty day's events), not hour by hour as
the aggregates are: its rows are then exact as of the pass's snapshot, and a question reads them for the hours the
day's mark, if any, does not name.
"""

from __future__ import annotations

import json

from sqlalchemy import text
from sqlalchemy.orm import Session

from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US
from tollgate.services.usage.repository import meter_memory
from tollgate.services.usage.repository.postgres.rollup_days import MARKS
from tollgate.shared import clock

WORK = '"usage".meter_work'
_HOURS = """hour_offsets, hour_quantities, hour_counts, hour_mins, hour_maxes, hour_latest_at, hour_latest_ids,
    hour_latest_quantities, running_quantities, running_counts"""
_ROW = f"tenant_id, metric, cuboid, day_us, dimensions, {_HOURS}"
_NAMES = [c.strip() for c in _HOURS.split(",")]
_SHIFT = -clock.MIN_MICROS
# Every event of a marked day of a rolled-up metric (`names`, with its declared dimensions `declared` as JSON lists)
# in each cuboid: '' (every event) and each declared dimension (its value, '' without one);
# summed per row and hour, then packed per row with the running sums. The latest event of an hour is the largest
# (occurred_at, event_id, quantity) as a text array in code point order, occurred_at shifted to be non-negative and
# written in 20 digits so that text order is time order: a plain max(), so both levels group by hashing (an ordered
# aggregate would sort every event), and the arrays of a row are filled in one order, so they stay aligned.
_COMPUTE = f"""INSERT INTO {WORK} (pass_id, created_at_us, {_ROW})
SELECT :pass, :now, h.tenant_id, h.metric, h.cuboid, h.day_us, h.dims,
       array_agg(h.o), array_agg(h.q), array_agg(h.c), array_agg(h.lo), array_agg(h.hi),
       array_agg(h.latest[1]::bigint - {_SHIFT}), array_agg(h.latest[2]), array_agg(h.latest[3]::bigint),
       "usage".meter_running_sums(array_agg(h.o), array_agg(h.q)),
       "usage".running_hour_sums(array_agg(h.o), array_agg(h.c))
FROM (
    SELECT m.tenant_id, m.metric, m.period_start_us AS day_us, x.cuboid, x.dims,
           ((e.occurred_at_us - m.period_start_us) / {HOUR_US})::smallint AS o,
           sum(e.quantity) AS q, count(*) AS c, min(e.quantity) AS lo, max(e.quantity) AS hi,
           max(ARRAY[lpad((e.occurred_at_us + {_SHIFT})::text, 20, '0'), e.event_id::text, e.quantity::text]
               COLLATE "C") AS latest
    FROM {MARKS} AS m
    JOIN unnest(CAST(:names AS text[]), CAST(:declared AS text[])) AS k (metric, declared) ON k.metric = m.metric
    JOIN "usage".events AS e ON e.tenant_id = m.tenant_id AND e.metric = m.metric
     AND e.occurred_at_us >= m.period_start_us AND e.occurred_at_us < m.period_start_us + {DAY_US}
    CROSS JOIN LATERAL (SELECT coalesce(e.dimensions::jsonb, '{{}}'::jsonb) AS d) AS j
    CROSS JOIN LATERAL (
        SELECT '' AS cuboid, '{{}}'::jsonb AS dims
        UNION ALL SELECT n.name, jsonb_build_object(n.name, coalesce(j.d ->> n.name, ''))
        FROM jsonb_array_elements_text(k.declared::jsonb) AS n (name)) AS x
    WHERE m.period = 2
    GROUP BY 1, 2, 3, 4, 5, 6) AS h
GROUP BY h.tenant_id, h.metric, h.cuboid, h.day_us, h.dims"""
# The planner takes each declared dimension for a hundred rows, sorts, and spills; told to hash, in memory.
_SETTINGS = (
    "work_mem = '256MB'",
    "hash_mem_multiplier = 4",
    "enable_sort = off",
    "enable_incremental_sort = off",
)
# For the applies (rollup_pass.apply_pass), in the transaction that deleted the days' marks: the rows of the
# claimed days are replaced by the pass's. Deleting them all first also removes a row the pass did not compute
# again (a metric no longer rolled up, a cuboid no longer declared), so a day's rows are never older than its
# last rollup.
_DELETE = """DELETE FROM "usage".meter_days AS r
USING unnest(CAST(:tenants AS text[]), CAST(:metrics AS text[]), CAST(:days AS bigint[])) AS c (tenant_id, metric, day)
WHERE r.tenant_id = c.tenant_id AND r.metric = c.metric AND r.day_us = c.day"""
# A new version of each of them: their rows, and their events since the last one, may have changed.
_VERSION = """INSERT INTO "usage".meter_versions (tenant_id, metric, day_us, version)
SELECT DISTINCT c.tenant_id, c.metric, c.day, :version
FROM unnest(CAST(:tenants AS text[]), CAST(:metrics AS text[]), CAST(:days AS bigint[])) AS c (tenant_id, metric, day)
ON CONFLICT (tenant_id, metric, day_us) DO UPDATE SET version = excluded.version"""
_WRITE = f"""INSERT INTO "usage".meter_days ({_ROW}, computed_at_us)
SELECT {", ".join(f"w.{c}" for c in ["tenant_id", "metric", "cuboid", "day_us", "dimensions", *_NAMES])}, :now
FROM unnest(CAST(:tenants AS text[]), CAST(:metrics AS text[]), CAST(:days AS bigint[])) AS c (tenant_id, metric, day)
JOIN {WORK} AS w ON w.pass_id = :pass AND w.tenant_id = c.tenant_id AND w.metric = c.metric AND w.day_us = c.day"""


def apply(session: Session, pass_id: int, days: list[tuple[str, str, int]], now_us: int) -> None:
    """Replace the rows of these claimed (tenant, metric, day) with the pass's, and their versions."""
    if not days:
        return
    keys = {"tenants": [d[0] for d in days], "metrics": [d[1] for d in days], "days": [d[2] for d in days]}
    session.execute(text(_VERSION), {**keys, "version": meter_memory.new_version()})
    session.execute(text(_DELETE), keys)
    session.execute(text(_WRITE), {**keys, "pass": pass_id, "now": now_us})


def compute(session: Session, pass_id: int, now_us: int, rolled_up: dict[str, list[str]]) -> None:
    """The pass's meter days of the metrics rolled up with dimensions (name -> declared dimensions), into meter_work."""
    if not rolled_up:
        return
    names = sorted(rolled_up)
    for setting in _SETTINGS:
        session.execute(text(f"SET LOCAL {setting}"))
    session.execute(
        text(_COMPUTE),
        {
            "pass": pass_id,
            "now": now_us,
            "names": names,
            "declared": [json.dumps(sorted(rolled_up[name])) for name in names],
        },
    )
    for setting in _SETTINGS:
        session.execute(text(f"RESET {setting.split()[0]}"))


def sweep(session: Session, pass_id: int | None, stale_us: int | None = None) -> None:
    """Delete the pass's rows (or, with stale_us, every pass's rows older than it)."""
    if stale_us is not None:
        session.execute(text(f"DELETE FROM {WORK} WHERE created_at_us < :stale"), {"stale": stale_us})
    if pass_id is not None:
        session.execute(text(f"DELETE FROM {WORK} WHERE pass_id = :pass"), {"pass": pass_id})
