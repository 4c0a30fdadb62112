"""GetUsage's statement on PostgreSQL stays within psycopg's cache of converted queries for every shape a question
can take: over it, psycopg parses the whole text again on every call."""

import itertools

import pytest
from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH
from sqlalchemy.dialects import postgresql

from tollgate.services.usage.domain import read_plan
from tollgate.services.usage.domain.buckets import DAY_US, HOUR_US
from tollgate.services.usage.domain.queries import UsageQuery
from tollgate.services.usage.repository import totals
from tollgate.services.usage.repository.postgres import totals as pg_totals

DAY = 20_000 * DAY_US


def _shapes() -> set[tuple]:
    """The shape of every question over ranges starting and ending on a day, on an hour or off the hour, a few
    minutes to a few days long, for the tenant or per actor, with or without metrics named."""
    edges = (0, 3 * HOUR_US, 3 * HOUR_US + 7)
    lengths = (10 * 60_000_000, 5 * HOUR_US, 3 * DAY_US, 3 * DAY_US + 2 * HOUR_US)
    askers = ({}, {"actor_id": "alice"}, {"group_by_actor": True}, {"metrics": ("api.requests",)})
    found = set()
    for start, end, length, asker in itertools.product(edges, edges, lengths, askers):
        query = UsageQuery("t", DAY + start, DAY + start + length + end, **asker)
        plan = read_plan.plan(query.start_us, query.end_us, use_aggregates=not query.by_actor)
        found.add(totals.shape(query, plan))
    return found


def test_the_questions_take_every_part_of_the_statement():
    raw, hours, days = zip(*(shape[3:] for shape in _shapes()))
    assert (set(raw), set(hours), set(days)) == ({0, 1, 2}, {0, 1, 2}, {False, True})


@pytest.mark.parametrize("shape", sorted(_shapes()))
def test_every_shape_of_getusage_is_short_enough_for_psycopgs_query_cache(shape):
    sql, _ = pg_totals._driver_statement(shape, postgresql.psycopg.dialect())
    assert len(sql.encode()) <= MAX_CACHED_STATEMENT_LENGTH, len(sql.encode())
