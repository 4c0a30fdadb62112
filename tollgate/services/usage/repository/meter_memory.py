"""Past days kept in memory for QueryUsage on PostgreSQL (docs/usage.md, "Meters"): a cuboid's rows (running sums)
for SUM and COUNT, a UTC day's distinct values for a UNIQUE_COUNT without groups or filters.

A day's version (tables.meter_versions) is written anew in the transaction that stores its rollup, the only one
that changes its meter rows, and an event changes a day only by marking it dirty until such a rollup. Usage keeps
what it has read of days with their version, and answers a question with one statement that reads what memory
does not add (the raw parts, the marked days, the days without rows) and, in the same snapshot, which days are
marked and which versions are not the ones held: if none, the unmarked held days are added from memory; if
some, those days are forgotten and the question is read whole (meters.usage_rows). Exact as the statement
alone: what memory adds is what the statement would have read at the same versions.

Bounded by the bytes its days take, the least recently read first forgotten. Days holding a running sum beyond
int64 are not kept (their questions are read whole).
"""

from __future__ import annotations

import functools
import itertools
import secrets
import sys
import threading
import time
from array import array
from collections import Counter, OrderedDict, defaultdict
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Connection, bindparam, distinct, func, literal, null, select, union_all

from tollgate.services.usage.domain import meter_rollups
from tollgate.services.usage.domain.aggregations import Aggregation
from tollgate.services.usage.domain.buckets import DAY_US
from tollgate.services.usage.domain.meters import MeterPlan, MeterRow
from tollgate.services.usage.repository import meter_rollup_reads as rolled
from tollgate.services.usage.repository import meters as meters_sql
from tollgate.services.usage.tables import meter_days, meter_versions

_HOURS = 25  # running sums of a day: before hour 0, ..., after hour 23
_PIECE_SHAPES = 4  # the pieces of a day kept computed: a zone's day cuts a UTC day in two; more shapes are summed
# The distinct (day, value) pairs of a UNIQUE_COUNT one read keeps in memory at most: beyond, that read is dropped
# and its questions are read from raw events alone for REFUSED_SECONDS (a value per event, say, would cost memory
# and gain nothing).
MAX_VALUES, REFUSED_SECONDS = 100_000, 600.0
# Reading a UNIQUE_COUNT's days into memory costs a few times the question: done when a tenant's metric is asked
# about again within ASKED_SECONDS, so that a question asked once (a billing run) costs what it did.
ASKED_SECONDS = 600.0
_MAX_NOTED = 100_000
_NONE = -1  # a day without a version, as the statement is told


def new_version() -> int:
    """A version for rows written now: random, so that no two writes, in any database, share one."""
    return secrets.randbits(62)


class Day(NamedTuple):
    """A day's rows of one cuboid at `version` (None: never rolled up): by the cuboid's value ('' for the apex),
    the running quantities then the running event counts, _HOURS each. `pieces`: the (quantity, count) by value of
    hours [first, end) that have events, by (first, end), as questions asked for them (a few shapes at most)."""

    version: int | None
    rows: dict[str, array]
    pieces: dict[tuple[int, int], dict[str, tuple[int, int]]]

    def size(self) -> int:
        rows = sum(len(value) + 64 + 8 * len(sums) for value, sums in self.rows.items())
        return 64 + rows + _PIECE_SHAPES * (64 + 120 * len(self.rows))

    def piece(self, first: int, end: int) -> dict[str, tuple[int, int]]:
        found = self.pieces.get((first, end))
        if found is None:
            found = {
                value: (running[end] - running[first], running[_HOURS + end] - running[_HOURS + first])
                for value, running in self.rows.items()
                if running[_HOURS + end] != running[_HOURS + first]
            }
            if len(self.pieces) < _PIECE_SHAPES:  # a dict's get and set are atomic: the RPC threads share it
                self.pieces[(first, end)] = found
        return found


class Values(NamedTuple):
    """A UTC day's distinct values of what a UNIQUE_COUNT counts ('' among them when an event has none) and its
    number of events, at `version` (None: never rolled up)."""

    version: int | None
    values: frozenset[str]
    events: int

    def size(self) -> int:
        return 128 + 32 * len(self.values)  # a set's slots; the strings are interned, shared by the days holding them


class Answer(NamedTuple):
    """A SUM or COUNT question read beside memory with none of its held days with rows marked, kept to read it
    again: the statement to read it with (rolled.again_beside_memory) and its values but the raw spans (the held
    days' versions among them), the pieces of held days without rows (raw spans at every read), what the held days
    add to each window, and the parts, windows and rows of its last answer, with `serial`, a number no other rows
    are kept with. The statement is read for every question: a day whose version changed, a marked day, or parts
    of their own (a late event in a raw span) show in its rows, and the answer is made again from what changed."""

    statement: Any
    values: dict
    without_rows: list[tuple[int, int, int]]
    held: dict[int, dict[str, tuple[int, int]]]
    parts: Counter  # rows may repeat: a marked hour's part and its subtraction from the day's rows, say
    windows: tuple[tuple[int, int], ...]
    rows: list[MeterRow]
    serial: int

    def size(self) -> int:
        held = sum(len(by_value) for by_value in self.held.values())
        text = sum(len(value) for value in self.values.values() if isinstance(value, str))
        return 256 + 240 * (len(self.rows) + len(self.parts)) + 160 * held + text


_SERIALS = itertools.count(1)


class DayMemory:
    """The days read last, by (tenant, metric, cuboid, day), and the answers kept of questions read beside them
    (Answer, by question), at most about `max_bytes` of them. Shared by the RPC threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._days: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self.evicted = 0  # entries let go past the bound, ever
        self._lock = threading.Lock()
        self._refused: dict[tuple, float] = {}  # a dict's get and set are atomic
        self._asked: dict[tuple, float] = {}

    def get(self, key: tuple, days: list[int]) -> dict[int, Any]:
        found = {}
        with self._lock:
            for day in days:
                kept = self._days.get((*key, day))
                if kept is not None:
                    self._days.move_to_end((*key, day))
                    found[day] = kept[0]
        return found

    def put(self, key: tuple, days: dict[int, Day] | dict[int, Values]) -> None:
        with self._lock:
            for day, held in days.items():
                self._store((*key, day), held)

    def answer(self, question: tuple) -> Answer | None:
        """The answer kept of `question`, if any."""
        with self._lock:
            kept = self._days.get(question)
            if kept is None:
                return None
            self._days.move_to_end(question)
            return kept[0]

    def keep(self, question: tuple, answer: Answer | None) -> None:
        """Keep `answer` of `question` (None: keep none)."""
        with self._lock:
            if answer is None:
                self._drop(question)
            else:
                self._store(question, answer)

    def _store(self, key: tuple, held: Day | Values | Answer) -> None:
        size = held.size()
        old = self._days.pop(key, None)
        self._bytes += size - (old[1] if old else 0)
        self._days[key] = (held, size)
        while self._bytes > self.max_bytes and self._days:
            self._bytes -= self._days.popitem(last=False)[1][1]
            self.evicted += 1

    @property
    def size(self) -> int:
        """About how many bytes it holds now."""
        return self._bytes

    def forget(self, key: tuple, days: list[int]) -> None:
        with self._lock:
            for day in days:
                self._drop((*key, day))

    def _drop(self, key: tuple) -> None:
        old = self._days.pop(key, None)
        if old:
            self._bytes -= old[1]

    def asked_before(self, key: tuple) -> bool:
        """Whether `key` was asked for within ASKED_SECONDS; it is now."""
        now, before = time.monotonic(), self._asked.get(key)
        if len(self._asked) >= _MAX_NOTED:
            self._asked.clear()
        self._asked[key] = now
        return before is not None and now - before < ASKED_SECONDS

    def refuse(self, key: tuple) -> None:
        """Hold nothing of `key` for a while (its days were too large to read into memory)."""
        if len(self._refused) >= _MAX_NOTED:
            self._refused.clear()
        self._refused[key] = time.monotonic() + REFUSED_SECONDS

    def refused(self, key: tuple) -> bool:
        until = self._refused.get(key)
        return until is not None and time.monotonic() < until


def answers(plan: MeterPlan) -> bool:
    """Whether memory can serve the question: SUM or COUNT read from a cuboid's rows (their running sums)."""
    return plan.cuboid is not None and plan.aggregation in (Aggregation.SUM, Aggregation.COUNT)


def usage_rows(
    connection: Connection,
    pieces,
    plan: MeterPlan,
    memory: DayMemory,
    *,
    cells: tuple[str, str, str],
    after: tuple | None,
    limit: int,
) -> meters_sql.MeterRows | None:
    """As meters.usage_rows, what memory holds added; None when memory cannot serve the question, or a day changed
    since it was read (those days are then forgotten): the caller reads the question whole."""
    read = _sums if answers(plan) else _distinct if counts_values(plan) else None
    found = None if read is None else read(connection, pieces, plan, memory, cells)
    if found is None:
        return None
    rows, purged_before, current, kept = found
    if after is not None:
        rows = [row for row in rows if (row[0], *row[1]) > after]
    return meters_sql.MeterRows(rows[:limit], purged_before, current, None if kept is None else (*kept, after, limit))


def _sums(connection: Connection, pieces, plan: MeterPlan, memory: DayMemory, cells) -> meters_sql.MeterRows | None:
    """Every row of a SUM or COUNT question (answers), the unmarked days with rows added from memory, and as its
    `answer` the serial of the answer kept of it when this answer was the last one too (None: it is new)."""
    windows = tuple(plan.windows)
    cut = _split(windows, plan.first_window)
    # Kept by its day pieces, whole hours: a range ending "now" is the same question until the hour turns.
    question = ("answer", *plan[:4], *plan[5:], cells, cut.pieces)  # no day's key has as many parts
    kept = memory.answer(question)
    if kept is not None:
        values = {**kept.values, **pieces.table_rows("sp", rolled.SPANS, [*cut.raw, *kept.without_rows])}
        read = _Read(pieces.rows(connection, kept.statement, values))
        if not (read.stale or read.marked):
            parts = Counter(read.parts)
            if parts == kept.parts and windows == kept.windows:
                return meters_sql.MeterRows(kept.rows, read.purged_before, read.current, (kept.serial,))
            rows = _rows(plan, kept.held, parts)
            memory.keep(question, kept._replace(parts=parts, windows=windows, rows=rows, serial=next(_SERIALS)))
            return meters_sql.MeterRows(rows, read.purged_before, read.current)
        memory.keep(question, None)  # then read as a new question: its days again where they changed
    days = sorted({piece.day_us for piece in cut.pieces})
    key = (plan.tenant_id, plan.metric, plan.cuboid)
    held = memory.get(key, days)
    missing = [day for day in days if day not in held]
    if missing:
        fresh = _read_days(connection, pieces, plan, missing[0], missing[-1])
        if fresh is None:
            return None
        memory.put(key, fresh)
        held.update((day, fresh[day]) for day in missing)
    statement, values = _statement(pieces, plan, connection.dialect, cells, cut, held)
    read = _Read(pieces.rows(connection, statement, values))
    if read.stale:
        memory.forget(key, read.stale)  # the next question reads them again
        return None
    # By window, by the cuboid's value ('' when the question does not group by it): (quantity, count).
    added: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    allowed = set(plan.filters[0][1]) if plan.filters else None  # a cuboid answers one dimension at most
    for piece in cut.pieces:
        if piece.day_us not in read.marked:  # the statement read the marked days
            part = held[piece.day_us].piece(piece.first_hour, piece.end_hour)
            if allowed is not None:
                part = {value: both for value, both in part.items() if value in allowed}
            if not plan.group_by and part:
                part = {"": (sum(q for q, _ in part.values()), sum(c for _, c in part.values()))}
            _add(added[piece.n], part)
    parts = Counter(read.parts)
    rows = _rows(plan, added, parts)
    # Kept for a question asked again, and never with a marked day, whose hours are the statement's until its
    # rollup.
    if not read.marked and memory.asked_before(question):
        again, again_values = _again(pieces, plan, connection.dialect, cells, held)
        without_rows = [(p.n, *rolled.span(p)) for p in cut.pieces if not held[p.day_us].rows]
        answer = Answer(again, again_values, without_rows, dict(added), parts, windows, rows, next(_SERIALS))
        memory.keep(question, answer)
    return meters_sql.MeterRows(rows, read.purged_before, read.current)


@functools.lru_cache(maxsize=256)  # a 30-day series by day is some 7 KB of pieces
def _split(windows: tuple[tuple[int, int], ...], first_window: int) -> meter_rollups.Split:
    """meter_rollups.split, its lists made tuples, kept for the questions asked again (a range asked again is
    cut again otherwise)."""
    cut = meter_rollups.split(list(windows), first_window)
    return meter_rollups.Split(tuple(cut.pieces), tuple(cut.raw))


def _built(pieces, plan: MeterPlan, dialect, name: str, branches):
    """A SUM or COUNT question's statement beside memory: the rows of `branches` (of rolled) and the bookkeeping
    rows, built once per shape."""
    shape = (name, plan.aggregation, plan.group_by, tuple(filtered for filtered, _ in plan.filters))
    return meters_sql.built(
        pieces,
        shape,
        dialect,
        lambda: union_all(*branches(pieces, plan), *meters_sql.bookkeeping(len(plan.group_by), 1)),
    )


def _again(pieces, plan: MeterPlan, dialect, cells, held: dict[int, Day]):
    """The statement of rolled.again_beside_memory and its values but the raw spans."""
    statement = _built(pieces, plan, dialect, "memory: again", rolled.again_beside_memory)
    days = [(day, _NONE if held[day].version is None else held[day].version, int(bool(held[day].rows))) for day in held]
    values = meters_sql.question_values(plan, cells)
    values.update(pieces.table_rows("kv", rolled.HELD, days))
    return statement, values


def _rows(plan: MeterPlan, held: dict, parts: Counter) -> list[MeterRow]:
    """The rows of what held days add (`held`, by window, left as it is) and the statement's `parts`, ordered."""
    sums = {n: dict(by_value) for n, by_value in held.items()}
    for row in parts.elements():
        by_value = sums.get(row[0])
        if by_value is None:
            by_value = sums[row[0]] = {}
        _add(by_value, {row[1] if plan.group_by else "": (int(row[-2] or 0), row[-1])})
    rows: list[MeterRow] = []
    counts, grouped = plan.aggregation is Aggregation.COUNT, bool(plan.group_by)
    for n in sorted(sums):
        by_value = sums[n]
        for value in sorted(by_value):  # code point order, as PostgreSQL's "C" collation orders
            quantity, count = by_value[value]
            if count > 0:
                rows.append((n, (value,) if grouped else (), count if counts else quantity, count))
    return rows


class _Read:
    """The rows of a statement beside memory, sorted out: its parts (window n >= 0), the marked days, the days
    whose version changed, the tenant's purge horizon, and whether the metric's cells were still the plan's. The
    day, the horizon or the value is each such row's last column."""

    def __init__(self, rows: list):
        self.parts: list = []
        self.marked: set[int] = set()
        self.stale: list[int] = []
        self.purged_before: int | None = None
        self.current = True
        for row in rows:
            n = row[0]
            if n >= 0:
                self.parts.append(row)
            elif n == rolled.MARKED:
                self.marked.add(row[-1])
            elif n == rolled.STALE:
                self.stale.append(row[-1])
            elif n == meters_sql.HORIZON:
                self.purged_before = int(row[-1])
            else:
                self.current = False


def _add(sums: dict[str, tuple[int, int]], part: dict[str, tuple[int, int]]) -> None:
    """Add the (quantity, count) of each value of `part` to `sums`."""
    if not sums:
        sums.update(part)
        return
    for value, (quantity, count) in part.items():
        total = sums.get(value)
        sums[value] = (quantity, count) if total is None else (total[0] + quantity, total[1] + count)


_ROWS, _VERSIONS = meter_days.alias("md"), meter_versions.alias("mv")
_FIRST, _LAST = bindparam("first", type_=BigInteger()), bindparam("last", type_=BigInteger())


def _read_days(connection: Connection, pieces, plan: MeterPlan, first: int, last: int) -> dict[int, Day] | None:
    """The cuboid's rows and the versions of the days first..last, in one snapshot; None when a row's running sums
    are missing or beyond int64."""
    statement = meters_sql.built(pieces, ("memory: days",), connection.dialect, _days_statement)
    values = {"tenant": plan.tenant_id, "metric": plan.metric, "cuboid": plan.cuboid, "first": first, "last": last}
    rows: dict[int, dict[str, array]] = {day: {} for day in range(first, last + 1, DAY_US)}
    versions: dict[int, int] = {}
    for day, dimensions, quantities, counts, version in pieces.rows(connection, statement, values):
        if version is not None:
            versions[day] = version
            continue
        if quantities is None or counts is None:
            return None  # a row without running sums: the statement reads it as it is
        try:
            sums = array("q", [int(q) for q in quantities] + counts)
        except OverflowError:
            return None
        if len(sums) != 2 * _HOURS:
            return None
        rows[day][dimensions.get(plan.cuboid, "") if plan.cuboid else ""] = sums
    return {day: Day(versions.get(day), held, {}) for day, held in rows.items()}


def _days_statement():
    r, v = _ROWS.c, _VERSIONS.c
    rows = select(r.day_us, r.dimensions, r.running_quantities, r.running_counts, null()).where(
        r.tenant_id == meters_sql.TENANT,
        r.metric == meters_sql.METRIC,
        r.cuboid == bindparam("cuboid"),
        r.day_us >= _FIRST,
        r.day_us <= _LAST,
    )
    versions = select(v.day_us, null(), null(), null(), v.version).where(
        v.tenant_id == meters_sql.TENANT, v.metric == meters_sql.METRIC, v.day_us >= _FIRST, v.day_us <= _LAST
    )
    return union_all(rows, versions)


def _statement(pieces, plan: MeterPlan, dialect, cells, cut: meter_rollups.Split, held: dict[int, Day]):
    """The statement of rolled.beside_memory and its values."""
    statement = _built(pieces, plan, dialect, "memory: sums", rolled.beside_memory)
    values = meters_sql.question_values(plan, cells)
    parts = [
        (p.n, 1 if held[p.day_us].rows else 2, p.day_us, p.first_hour, p.end_hour, *rolled.span(p)) for p in cut.pieces
    ]
    parts += [(n, 0, 0, 0, 0, lo, hi) for n, lo, hi in cut.raw]
    values.update(pieces.table_rows("pc", rolled.PARTS, parts))
    values.update(pieces.table_rows("hr", rolled.HOURS, rolled.DAY_HOURS))
    values.update(_versions(pieces, held))
    values["cuboid"] = plan.cuboid
    return statement, values


def _versions(pieces, held: dict) -> dict:
    """The values of the statement's table "kv": each held day with the version it was read at (_NONE: none)."""
    rows = [(day, _NONE if held[day].version is None else held[day].version) for day in sorted(held)]
    return pieces.table_rows("kv", ("day", "version"), rows)


def counts_values(plan: MeterPlan) -> bool:
    """Whether memory can serve the question: a UNIQUE_COUNT without groups or filters, whose whole UTC days are
    held as their sets of values."""
    return plan.aggregation is Aggregation.UNIQUE_COUNT and not (plan.group_by or plan.filters or plan.actor_ids)


def _distinct(connection: Connection, pieces, plan: MeterPlan, memory: DayMemory, cells) -> meters_sql.MeterRows | None:
    """Every row of a UNIQUE_COUNT question (counts_values), the values of unmarked whole UTC days taken from
    memory and the rest from raw events."""
    cut = meter_rollups.split(plan.windows, plan.first_window)
    whole = [piece for piece in cut.pieces if piece.first_hour == 0 and piece.end_hour == 24 and piece.day_us >= 0]
    if not whole:
        return None  # nothing to add from memory: the question is read as usual
    days = sorted({piece.day_us for piece in whole})
    key = (plan.tenant_id, plan.metric, "", plan.unique_of)  # four parts: apart from the cuboids' keys of three
    if memory.refused(key):
        return None
    held = memory.get(key, days)
    missing = [day for day in days if day not in held]
    if missing and not memory.asked_before(key):
        return None
    if missing:
        fresh = _read_values(connection, pieces, plan, missing[0], missing[-1])
        if fresh is None:
            memory.refuse(key)
            return None
        memory.put(key, fresh)
        held.update((day, fresh[day]) for day in missing)
    statement, values = _unique_statement(pieces, plan, connection.dialect, cells, cut, whole, held)
    found: dict[int, tuple[set[str], list[int]]] = {}
    read = _Read(pieces.rows(connection, statement, values))
    for n, value, count in read.parts:
        seen, events = found.setdefault(n, (set(), [0]))
        seen.add(value)
        events[0] += count
    if read.stale:
        memory.forget(key, read.stale)
        return None
    for piece in whole:
        if piece.day_us not in read.marked:
            day = held[piece.day_us]
            if day.events:
                seen, events = found.setdefault(piece.n, (set(), [0]))
                seen |= day.values
                events[0] += day.events
    rows: list[MeterRow] = [
        (n, (), len(seen) - ("" in seen), events[0]) for n, (seen, events) in sorted(found.items()) if events[0]
    ]
    return meters_sql.MeterRows(rows, read.purged_before, read.current)


def _read_values(connection: Connection, pieces, plan: MeterPlan, first: int, last: int) -> dict[int, Values] | None:
    """The distinct values counted of the UTC days first..last, each with its events and version, in one snapshot;
    None when they are more than MAX_VALUES."""
    statement = meters_sql.built(
        pieces,
        ("memory: values", plan.unique_of),
        connection.dialect,
        lambda: _values_statement(pieces, plan.unique_of),
    )
    values = {"tenant": plan.tenant_id, "metric": plan.metric, "first": first, "end": last + DAY_US, "last": last}
    read: dict[int, tuple[frozenset[str], int]] = {}
    versions: dict[int, int] = {}
    for day, found, events, version in pieces.rows(connection, statement, values):
        if version is not None:
            versions[day] = version
        else:
            read[day] = frozenset(map(sys.intern, found)), events
    if sum(len(found) for found, _ in read.values()) > MAX_VALUES:
        return None
    none: tuple[frozenset[str], int] = (frozenset(), 0)
    return {day: Values(versions.get(day), *read.get(day, none)) for day in range(first, last + 1, DAY_US)}


def _values_statement(pieces, unique_of: str):
    """Per UTC day with events: its distinct values (an array: the rows of a day by value cost several times
    more to send and read) and its number of events; then the days' versions."""
    e, v = meters_sql.EVENTS.c, _VERSIONS.c
    day = (e.occurred_at_us - e.occurred_at_us % literal(DAY_US, BigInteger())).label("day")
    events = (
        select(day, func.array_agg(distinct(meters_sql.value_source(pieces, unique_of))), func.count(), null())
        .where(
            e.tenant_id == meters_sql.TENANT,
            e.metric == meters_sql.METRIC,
            e.occurred_at_us >= _FIRST,
            e.occurred_at_us < bindparam("end", type_=BigInteger()),
        )
        .group_by(day)
    )
    versions = select(v.day_us, null(), null(), v.version).where(
        v.tenant_id == meters_sql.TENANT, v.metric == meters_sql.METRIC, v.day_us >= _FIRST, v.day_us <= _LAST
    )
    return union_all(events, versions)


def _unique_statement(pieces, plan: MeterPlan, dialect, cells, cut: meter_rollups.Split, whole: list, held: dict):
    """The statement of rolled.unique_beside_memory (built once per shape) and its values."""
    statement = meters_sql.built(
        pieces,
        ("memory: unique", plan.unique_of),
        dialect,
        lambda: union_all(*rolled.unique_beside_memory(pieces, plan), *meters_sql.bookkeeping(1, 0)),
    )
    values = meters_sql.question_values(plan, cells)
    kept = set(whole)
    parts = [(p.n, 1, p.day_us, 0, 24, *rolled.span(p)) for p in whole]
    parts += [(p.n, 0, p.day_us, p.first_hour, p.end_hour, *rolled.span(p)) for p in cut.pieces if p not in kept]
    parts += [(n, 0, 0, 0, 0, lo, hi) for n, lo, hi in cut.raw]
    values.update(pieces.table_rows("pc", rolled.PARTS, parts))
    values.update(_versions(pieces, held))
    return statement, values
