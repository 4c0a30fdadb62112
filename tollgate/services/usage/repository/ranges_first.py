"""Joins of a few short ranges to a table (the events; meter_days, a day each), read range by range whatever each
backend's planner guesses.

`WindowsFirst`: the ranges looped over first on SQLite (a CROSS JOIN), whose planner cannot tell how many rows a
table made of JSON yields, and would otherwise walk the tenant's events once per range. `ShortRangesFirst`: on
PostgreSQL too, each range's events as a LATERAL subquery kept apart (OFFSET 0) that copies the columns its
subclass names (`READ`). Joined plainly, PostgreSQL's planner estimates a third of the tenant's events per bound,
or, without statistics (a new database, a table not analyzed yet), merge-joins every event of the tenant to the
ranges, and reads every event once instead, however short the ranges.
"""

from __future__ import annotations

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Join


class WindowsFirst(Join):
    inherit_cache = True


class ShortRangesFirst(WindowsFirst):
    inherit_cache = True
    READ = ""  # the columns the statement reads, as SQL over the joined table's alias


@compiles(ShortRangesFirst, "postgresql")
def _lateral_ranges(join, compiler, **kw) -> str:
    kw.pop("asfrom", None)
    right = join.right
    return (
        f"{compiler.process(join.left, asfrom=True, **kw)} CROSS JOIN LATERAL (SELECT {join.READ} FROM "
        f"{compiler.process(right, asfrom=True, **kw)} WHERE {compiler.process(join.onclause, **kw)} OFFSET 0) "
        f"AS {compiler.preparer.quote(right.name)}"
    )


@compiles(WindowsFirst, "sqlite")
def _cross_join(join, compiler, **kw) -> str:
    kw.pop("asfrom", None)
    return (
        f"{compiler.process(join.left, asfrom=True, **kw)} CROSS JOIN "
        f"{compiler.process(join.right, asfrom=True, **kw)} ON {compiler.process(join.onclause, **kw)}"
    )
