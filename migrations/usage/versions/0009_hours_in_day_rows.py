"""Hours move into their day's aggregate row; dirty marks name days, weeks and months

Revision ID: usage_0009
Revises: usage_0008
"""

import json
from collections import defaultdict

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "usage_0009"
down_revision = "usage_0008"
branch_labels = None
depends_on = None

SCHEMA = "usage"
HOUR_US, DAY_US = 3_600_000_000, 86_400_000_000
ALL_HOURS = (1 << 24) - 1
_ARRAYS = (
    ("hour_offsets", sa.SmallInteger),
    ("hour_quantities", sa.BigInteger),
    ("hour_counts", sa.BigInteger),
    ("hour_digests", sa.Numeric(40, 0)),
)
_KEY = ("tenant_id", "metric", "period", "period_start_us")
# Every hour row of a day, packed into the day's row in hour order (PostgreSQL; SQLite packs in Python).
_PACK = f"""
UPDATE "usage".aggregates AS d
SET hour_offsets = h.offsets, hour_quantities = h.quantities, hour_counts = h.counts, hour_digests = h.digests
FROM (SELECT tenant_id, metric, period_start_us - period_start_us % {DAY_US} AS day_us,
             array_agg((period_start_us % {DAY_US} / {HOUR_US})::smallint ORDER BY period_start_us) AS offsets,
             array_agg(total_quantity ORDER BY period_start_us) AS quantities,
             array_agg(event_count ORDER BY period_start_us) AS counts,
             array_agg(('x' || right(lpad(source_hash, 16, '0'), 16))::bit(64)::bigint::numeric
                       ORDER BY period_start_us) AS digests
      FROM "usage".aggregates WHERE period = 1 GROUP BY 1, 2, 3) AS h
WHERE d.tenant_id = h.tenant_id AND d.metric = h.metric AND d.period = 2 AND d.period_start_us = h.day_us"""
_UNPACK = f"""
INSERT INTO "usage".aggregates (tenant_id, metric, period, period_start_us, total_quantity, event_count, source_hash,
                                computed_at_us)
SELECT d.tenant_id, d.metric, 1, d.period_start_us + h.offset_ * {HOUR_US}, h.quantity, h.events,
       lpad(to_hex((mod(mod(h.digest, {2**64}) + {2**64 + 2**63}, {2**64}) - {2**63})::bigint), 16, '0'),
       d.computed_at_us
FROM "usage".aggregates AS d
CROSS JOIN LATERAL unnest(d.hour_offsets, d.hour_quantities, d.hour_counts, d.hour_digests)
    AS h (offset_, quantity, events, digest)
WHERE d.period = 2"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, item in _ARRAYS:
        op.add_column(
            "aggregates",
            sa.Column(name, postgresql.ARRAY(item) if postgres else sa.JSON(), nullable=True),
            schema=_schema(),
        )
        if postgres:
            # Scratch rows of a pass (usage_0007), which now carry a day's hours too.
            op.add_column("rollup_work", sa.Column(name, postgresql.ARRAY(item), nullable=True), schema=SCHEMA)
    # Which hours of a marked day changed; every hour of the marks already there.
    op.add_column(
        "dirty_buckets",
        sa.Column("dirty_hours", sa.Integer, nullable=False, server_default=str(ALL_HOURS)),
        schema=_schema(),
    )
    if postgres:
        op.execute(_PACK)
    else:
        _pack_in_python()
    _mark_days_to_recompute()
    aggregates, dirty = _tables()
    op.get_bind().execute(dirty.delete().where(dirty.c.period == 1))
    op.get_bind().execute(aggregates.delete().where(aggregates.c.period == 1))


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(_UNPACK)
    else:
        _unpack_in_python()
    # The old rollup expects an hour mark beside each day mark it recomputes; days are recomputed whole.
    aggregates, dirty = _tables()
    hours = sa.select(
        aggregates.c.tenant_id, aggregates.c.metric, sa.literal(1), aggregates.c.period_start_us, sa.literal(0)
    ).where(
        aggregates.c.period == 1,
        sa.tuple_(aggregates.c.tenant_id, aggregates.c.metric).in_(
            sa.select(dirty.c.tenant_id, dirty.c.metric).where(dirty.c.period == 2)
        ),
    )
    op.get_bind().execute(dirty.insert().from_select(list(_KEY) + ["marked_at_us"], hours))
    with op.batch_alter_table("aggregates", schema=_schema()) as batch:  # SQLite: a copy of the table
        for name, _ in _ARRAYS:
            batch.drop_column(name)
    with op.batch_alter_table("dirty_buckets", schema=_schema()) as batch:
        batch.drop_column("dirty_hours")
    if postgres:
        for name, _ in _ARRAYS:
            op.drop_column("rollup_work", name, schema=SCHEMA)


def _schema() -> str | None:
    return None if op.get_bind().dialect.name == "sqlite" else SCHEMA  # SQLite has no schemas


def _tables():
    schema = _schema()
    aggregates = sa.table(
        "aggregates",
        *[sa.column(k) for k in _KEY],
        sa.column("total_quantity"),
        sa.column("event_count"),
        sa.column("source_hash"),
        sa.column("computed_at_us"),
        *[sa.column(name) for name, _ in _ARRAYS],
        schema=schema,
    )
    dirty = sa.table("dirty_buckets", *[sa.column(k) for k in _KEY], sa.column("marked_at_us"), schema=schema)
    return aggregates, dirty


def _mark_days_to_recompute() -> None:
    """Mark dirty, for a rollup to recompute from raw events, the day of every dirty hour, of every hour
    row without a day row, and every day row left without hours. Raw events of a dirty bucket are never
    purged, and a day row always had its hours, so these are the days whose hours were not final."""
    aggregates, dirty = _tables()
    day_row, mark = aggregates.alias("day_row"), dirty.alias("mark")

    def day_of(start):
        return start - start % DAY_US

    days = sa.union(
        sa.select(dirty.c.tenant_id, dirty.c.metric, day_of(dirty.c.period_start_us).label("day_us")).where(
            dirty.c.period == 1
        ),
        sa.select(aggregates.c.tenant_id, aggregates.c.metric, day_of(aggregates.c.period_start_us)).where(
            aggregates.c.period == 1,
            ~sa.exists().where(
                day_row.c.tenant_id == aggregates.c.tenant_id,
                day_row.c.metric == aggregates.c.metric,
                day_row.c.period == 2,
                day_row.c.period_start_us == day_of(aggregates.c.period_start_us),
            ),
        ),
        sa.select(aggregates.c.tenant_id, aggregates.c.metric, aggregates.c.period_start_us).where(
            aggregates.c.period == 2, aggregates.c.hour_offsets.is_(None)
        ),
    ).subquery("days")
    unmarked = sa.select(days.c.tenant_id, days.c.metric, sa.literal(2), days.c.day_us, sa.literal(0)).where(
        ~sa.exists().where(
            mark.c.tenant_id == days.c.tenant_id,
            mark.c.metric == days.c.metric,
            mark.c.period == 2,
            mark.c.period_start_us == days.c.day_us,
        )
    )
    op.get_bind().execute(dirty.insert().from_select(list(_KEY) + ["marked_at_us"], unmarked))


def _pack_in_python() -> None:
    """SQLite (a development database: small): the same packing as _PACK, as JSON lists."""
    bind = op.get_bind()
    aggregates, _ = _tables()
    days = defaultdict(lambda: ([], [], [], []))
    for tenant, metric, start, quantity, count, digest in bind.execute(
        sa.select(
            aggregates.c.tenant_id,
            aggregates.c.metric,
            aggregates.c.period_start_us,
            aggregates.c.total_quantity,
            aggregates.c.event_count,
            aggregates.c.source_hash,
        )
        .where(aggregates.c.period == 1)
        .order_by(aggregates.c.period_start_us)
    ):
        cells = days[(tenant, metric, start - start % DAY_US)]
        for cell, item in zip(cells, (start % DAY_US // HOUR_US, quantity, count, int(digest[-16:], 16))):
            cell.append(item)
    for (tenant, metric, day), cells in days.items():
        bind.execute(
            aggregates.update()
            .where(
                aggregates.c.tenant_id == tenant,
                aggregates.c.metric == metric,
                aggregates.c.period == 2,
                aggregates.c.period_start_us == day,
            )
            .values({name: json.dumps(cell) for (name, _), cell in zip(_ARRAYS, cells)})
        )


def _unpack_in_python() -> None:
    bind = op.get_bind()
    aggregates, _ = _tables()
    rows = []
    for row in bind.execute(
        sa.select(aggregates).where(aggregates.c.period == 2, aggregates.c.hour_offsets.is_not(None))
    ):
        cells = [json.loads(row._mapping[name]) for name, _ in _ARRAYS]
        for offset, quantity, count, digest in zip(*cells):
            rows.append(
                dict(
                    tenant_id=row.tenant_id,
                    metric=row.metric,
                    period=1,
                    period_start_us=row.period_start_us + offset * HOUR_US,
                    total_quantity=quantity,
                    event_count=count,
                    source_hash=format(digest % 2**64, "016x"),
                    computed_at_us=row.computed_at_us,
                )
            )
    if rows:
        bind.execute(aggregates.insert(), rows)
