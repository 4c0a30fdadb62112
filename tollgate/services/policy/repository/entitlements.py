"""SQL over reservations, their per-(tenant, metric) lock rows and the outbox of committed usage."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from types import SimpleNamespace
from typing import NamedTuple

from sqlalchemy import (
    URL,
    BigInteger,
    CompoundSelect,
    Connection,
    Engine,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement, Executable

from tollgate.services.policy import tables
from tollgate.services.policy.domain.dimensions import Filters, matches
from tollgate.services.policy.domain.entitlements import (
    COMMITTED,
    EVENT_PREFIX,
    EXPIRED,
    OPEN,
    Reservation,
    reservation_of_event,
)
from tollgate.services.policy.domain.usage import OutboxEvent
from tollgate.services.policy.repository import rowcount
from tollgate.shared import driver

R, OUT, L = tables.reservations, tables.usage_outbox, tables.entitlement_locks
# Written into the statements, not bound: the planner uses the partial index of open reservations only for a
# condition it can see is the index's own (tables.reservations_open_idx).
_IS_OPEN = R.c.state == literal_column(str(OPEN))


def _of(row) -> Reservation:
    return Reservation(
        row.reservation_id,
        row.tenant_id,
        row.user_id,
        row.metric,
        row.amount,
        row.idempotency_key,
        row.state,
        row.create_us,
        row.expires_us,
        row.committed_amount,
        row.finish_us,
        row.recorded_us,
        row.dimensions,
    )


_LOCK = (
    select(L.c.tenant_id)
    .where(L.c.tenant_id == bindparam("tenant_id", type_=String), L.c.metric == bindparam("metric", type_=String))
    .with_for_update()
)


def lock(connection: Connection, tenant_id: str, metric: str) -> None:
    """Hold the (tenant, metric) lock row until the transaction ends, creating it on first use.

    On PostgreSQL the row is locked FOR UPDATE, so Reserve and Commit on one metric queue across replicas; on
    SQLite the transaction already holds the database's write lock (BEGIN IMMEDIATE)."""
    if connection.execute(_LOCK, {"tenant_id": tenant_id, "metric": metric}).first() is not None:
        return
    try:
        with connection.begin_nested():
            connection.execute(insert(L).values(tenant_id=tenant_id, metric=metric))
    except IntegrityError:  # another transaction created it first: wait for it like everyone else
        pass
    connection.execute(_LOCK, {"tenant_id": tenant_id, "metric": metric})


def last_delivered(connection: Connection) -> int:
    """The number of the latest delivery recorded: read before asking Usage, passed to `held` after."""
    return connection.execute(select(func.max(OUT.c.delivered_seq))).scalar() or 0


class Held(NamedTuple):
    """What Policy holds of a metric, by the dimension values it was reserved for (canonical JSON, '' for none), so
    that each quota counts what its filters allow."""

    reserved: dict[str, tuple[int, int]]  # open reservations: (the tenant's, the user's)
    waiting: dict[str, list[tuple[int, int]]]  # per window, committed amounts Usage may lack: (tenant's, user's)
    key_taken_by: str | None  # the reservation already holding the idempotency key asked about

    def reserved_in(self, filters: Filters) -> tuple[int, int]:
        """(the tenant's, the user's) open reservations a quota with `filters` counts."""
        held = [pair for dims, pair in self.reserved.items() if matches(filters, dims)]
        return sum(t for t, _ in held), sum(u for _, u in held)

    def waiting_in(self, filters: Filters, window: int) -> tuple[int, int]:
        """(the tenant's, the user's) committed amounts Usage may lack in the `window`-th window that a quota with
        `filters` counts."""
        held = [sums[window] for dims, sums in self.waiting.items() if matches(filters, dims)]
        return sum(t for t, _ in held), sum(u for _, u in held)

    def plus(self, dimensions: str, amount: int, user_amount: int) -> Held:
        """With `amount` more reserved for `dimensions` (`user_amount` of it by the user)."""
        tenant, user = self.reserved.get(dimensions, (0, 0))
        return self._replace(reserved={**self.reserved, dimensions: (tenant + amount, user + user_amount)})


class Asked(NamedTuple):
    """One question for `held`: whose reservations, over which windows, after which delivery, holding which key."""

    user_id: str
    windows: tuple[tuple[int, int], ...]
    delivered_after: int
    key: str = ""


def held(connection: Connection, tenant_id: str, metric: str, now_us: int, asked: Asked) -> Held:
    """What Policy holds of the metric, read in one statement so that a commit moving an amount from reserved to
    the outbox is seen on one side only; and, in the same round trip, which reservation holds the asked key.

    Usage's answer may lack an event not yet delivered, or delivered after `delivered_after` was read (it was
    read before Usage was asked): a delivery is recorded only once Usage holds the event, so one recorded
    before that read was in Usage before the question was sent."""
    [found] = driver.together(connection, [_held_read(tenant_id, metric, now_us, asked)])
    return _held_of(found)


def held_under_lock(
    connection: Connection, tenant_id: str, metric: str, now_us: int, asked: Sequence[Asked]
) -> list[Held]:
    """`held` for each question, read after taking the (tenant, metric) lock (`lock`), all in one round trip
    where the driver allows; the open reservations those reads count as expired are marked so (_expire_passed)."""
    reads = [_expire_passed(tenant_id, metric, now_us)] + [_held_read(tenant_id, metric, now_us, one) for one in asked]
    got_lock, _, *found = driver.in_one_query(connection, [(_LOCK, {"tenant_id": tenant_id, "metric": metric})] + reads)
    if not got_lock:  # the metric's first reservation: the lock row is made, and the reads done again after it
        lock(connection, tenant_id, metric)
        _, *found = driver.in_one_query(connection, reads)
    if len(_LOCK_ROWS) >= _MOST_LOCK_ROWS:
        _LOCK_ROWS.clear()  # forgetting one only costs its next Reserve the longer way
    _LOCK_ROWS.add((connection.engine.url, tenant_id, metric))
    return [_held_of(rows) for rows in found]


# The (database, tenant, metric) lock rows this process has seen: rows are made once and never deleted, so
# reserve_if_room's lock, sent before its answer is read, locks a row that exists.
_LOCK_ROWS: set[tuple[URL, str, str]] = set()
_MOST_LOCK_ROWS = 100_000


def reserves_at_once(engine: Engine, tenant_id: str, metric: str) -> bool:
    """Whether reserve_if_room can decide a Reserve of the metric on the engine's database."""
    return engine.dialect.name == "postgresql" and (engine.url, tenant_id, metric) in _LOCK_ROWS


class Room(NamedTuple):
    """What one quota leaves a reservation: at most `room` held (open reservations and committed amounts Usage may
    lack, in the question's `window`-th window), the user's own if `per_user`, else the tenant's."""

    window: int
    per_user: bool
    room: int


class Try(NamedTuple):
    """One reservation for reserve_if_room: inserted if every room holds, decided by what `asked` reads."""

    reservation: Reservation
    asked: Asked
    rooms: Sequence[Room]


def reserve_if_room(
    connection: Connection, tenant_id: str, metric: str, now_us: int, tries: Sequence[Try]
) -> list[tuple[Held, bool]] | None:
    """Reserve's transaction in one message where it can be: the (tenant, metric) lock, the reservations it counts as
    expired marked so (_expire_passed), then for each try in turn one statement that reads `held` and inserts the
    reservation if every room holds and no reservation has the asked key, then COMMIT. Per try (what was held before
    its insert, whether it was inserted); None, with nothing sent, where it cannot be (SQLite, or a lock row this
    process has not seen yet): held_under_lock then.

    Each read and its insert are one statement, so they see one snapshot: a Release committed between two statements
    would otherwise free room the read did not see. A later try's statement sees the earlier tries' inserts (one
    transaction). The caller decides from `held` as held_under_lock's caller does; the rooms are that decision's own
    bounds, so a statement inserts exactly when that decision holds."""
    if not reserves_at_once(connection.engine, tenant_id, metric):
        return None
    statements = [(_LOCK, {"tenant_id": tenant_id, "metric": metric}), _expire_passed(tenant_id, metric, now_us)]
    for one in tries:
        statement, values = _held_read(tenant_id, metric, now_us, one.asked)
        values.update((f"new_{name}", getattr(one.reservation, name)) for name in _INSERTED)
        values.update((f"room_{n}", room.room) for n, room in enumerate(one.rooms))
        shape = tuple((room.window, room.per_user) for room in one.rooms)
        statements.append((_if_room_statement(len(one.asked.windows), shape), values))
    got_lock, _, *found = driver.in_one_query(connection, statements, commit=True)
    if not got_lock:  # the row is gone (never by this service): the statements inserted nothing without it
        _LOCK_ROWS.discard((connection.engine.url, tenant_id, metric))
        return None
    return [
        (
            _held_of([row for row in rows if row[0] != _INSERTED_PART]),
            any(part == _INSERTED_PART and sums[0] for part, _, *sums in rows),
        )
        for rows in found
    ]


def _expire_passed(tenant_id: str, metric: str, now_us: int) -> tuple[Executable, dict]:
    """The statement marking EXPIRED the metric's open reservations past their expiry at `now_us`, which a Reserve
    deciding at that instant counts as free: in its transaction, under its lock, so that a Commit deciding after it
    (behind the lock) finds them expired whatever its own instant (commit_if_open)."""
    return _EXPIRE_PASSED, {"of_tenant": tenant_id, "of_metric": metric, "now_us": now_us}


def _expire_statement() -> Executable:
    now_us = bindparam("now_us", type_=BigInteger)
    of_metric = and_(
        R.c.tenant_id == bindparam("of_tenant", type_=String), R.c.metric == bindparam("of_metric", type_=String)
    )
    return update(R).where(of_metric, _IS_OPEN, R.c.expires_us <= now_us).values(state=EXPIRED, finish_us=now_us)


_EXPIRE_PASSED = _expire_statement()


def _held_read(tenant_id: str, metric: str, now_us: int, asked: Asked) -> tuple[Executable, dict]:
    values = {"tenant_id": tenant_id, "metric": metric, "user_id": asked.user_id, "now_us": now_us}
    values.update(key=asked.key, delivered_after=asked.delivered_after)
    for n, (start, end) in enumerate(asked.windows):
        values[f"start_{n}"], values[f"end_{n}"] = start, end
    return _held_statement(len(asked.windows)), values


_RESERVED, _WAITING, _KEY = 0, 1, 2  # the parts of `held`'s statement


def _held_of(rows: Sequence[Sequence]) -> Held:
    reserved: dict[str, tuple[int, int]] = {}
    waiting: dict[str, list[tuple[int, int]]] = {}
    key_taken_by = None
    for part, name, *sums in rows:
        if part == _KEY:
            key_taken_by = name
        elif part == _RESERVED:
            reserved[name] = (int(sums[0]), int(sums[1]))
        else:
            waiting[name] = [(int(sums[i]), int(sums[i + 1])) for i in range(2, len(sums), 2)]
    return Held(reserved, waiting, key_taken_by)


@functools.cache
def _held_statement(windows: int) -> CompoundSelect:
    """`held`'s statement for that many windows, built once: its parameters are bound at each execution. One row
    per dimension values of the open reservations, one per those of the amounts Usage may lack, and one naming the
    reservation holding the key: (part, dimension values or reservation id, reserved, user's reserved, then per
    window waiting and user's waiting), each part's other columns 0."""
    tenant_id, metric, user_id = (bindparam(name, type_=String) for name in ("tenant_id", "metric", "user_id"))
    zero: list[ColumnElement] = [literal_column("0") for _ in range(2 * windows)]
    open_ = and_(R.c.tenant_id == tenant_id, R.c.metric == metric, _IS_OPEN, R.c.expires_us > bindparam("now_us"))
    # Labelled, so that reserve_if_room's statement can sum them by name.
    named_zero = [column.label(f"w{n // 2}_{'u' if n % 2 else 't'}") for n, column in enumerate(zero)]
    reserved = (
        select(
            literal_column(str(_RESERVED)).label("part"),
            R.c.dimensions.label("name"),
            func.sum(R.c.amount).label("r_t"),
            func.coalesce(func.sum(R.c.amount).filter(R.c.user_id == user_id), 0).label("r_u"),
            *named_zero,
        )
        .where(open_)
        .group_by(R.c.dimensions)
    )
    # Two ranges of one index, not one range filtered: delivered rows stay an hour, and would all be read.
    metric_rows = select(OUT.c.quantity, OUT.c.user_id, OUT.c.occurred_us, OUT.c.dimensions).where(
        OUT.c.tenant_id == tenant_id, OUT.c.metric == metric
    )
    missing = union_all(
        metric_rows.where(OUT.c.delivered_seq.is_(None)),
        metric_rows.where(OUT.c.delivered_seq > bindparam("delivered_after")),
    ).subquery()
    sums = []
    for n in range(windows):
        in_window = and_(
            missing.c.occurred_us >= bindparam(f"start_{n}"), missing.c.occurred_us < bindparam(f"end_{n}")
        )
        sums.append(func.coalesce(func.sum(missing.c.quantity).filter(in_window), 0))
        sums.append(func.coalesce(func.sum(missing.c.quantity).filter(in_window, missing.c.user_id == user_id), 0))
    waiting = select(
        literal_column(str(_WAITING)), missing.c.dimensions, literal_column("0"), literal_column("0"), *sums
    ).group_by(missing.c.dimensions)
    key_taken = and_(R.c.tenant_id == tenant_id, R.c.idempotency_key == bindparam("key", type_=String))
    key = select(literal_column(str(_KEY)), R.c.reservation_id, literal_column("0"), literal_column("0"), *zero).where(
        key_taken
    )
    return union_all(reserved, waiting, key)


_INSERTED_PART = 3  # reserve_if_room's row saying how many reservations it inserted (0 or 1)


@functools.cache
def _if_room_statement(windows: int, shape: tuple[tuple[int, bool], ...]) -> CompoundSelect:
    """reserve_if_room's statement for that many windows and rooms of that shape: `held`'s rows, then one row
    (_INSERTED_PART) counting the reservation inserted by its data-modifying CTE."""
    held = _held_statement(windows).cte("held")
    h = held.c
    tenant_id, metric = bindparam("tenant_id", type_=String), bindparam("metric", type_=String)
    conditions: list[ColumnElement] = [
        ~exists().where(h.part == _KEY),
        exists().where(L.c.tenant_id == tenant_id, L.c.metric == metric),
    ]
    for n, (window, per_user) in enumerate(shape):
        whose = "u" if per_user else "t"
        used = func.coalesce(func.sum(h[f"r_{whose}"] + h[f"w{window}_{whose}"]), 0)
        conditions.append(select(used).scalar_subquery() <= bindparam(f"room_{n}", type_=BigInteger))
    new = select(*[cast(bindparam(f"new_{name}"), R.c[name].type) for name in _INSERTED]).where(*conditions)
    inserted = insert(R).from_select(list(_INSERTED), new).returning(R.c.reservation_id).cte("inserted")
    zero: list[ColumnElement] = [literal_column("0") for _ in range(1 + 2 * windows)]
    count = select(func.count()).select_from(inserted).scalar_subquery()
    return union_all(select(held), select(literal_column(str(_INSERTED_PART)), literal_column("''"), count, *zero))


def find_by_key(connection: Connection, tenant_id: str, idempotency_key: str) -> Reservation | None:
    row = connection.execute(
        select(R).where(R.c.tenant_id == tenant_id, R.c.idempotency_key == idempotency_key)
    ).first()
    return _of(row) if row else None


def get(connection: Connection, tenant_id: str, reservation_id: str, *, for_update: bool = False) -> Reservation | None:
    query = select(R).where(_OF_TENANT, R.c.reservation_id == reservation_id)
    values = {"tenant_id": tenant_id}
    row = connection.execute(query.with_for_update() if for_update else query, values).first()
    return _of(row) if row else None


_INSERTED = (
    "reservation_id",
    "tenant_id",
    "user_id",
    "metric",
    "amount",
    "idempotency_key",
    "state",
    "create_us",
    "expires_us",
    "committed_amount",
    "dimensions",
)
_INSERT_RESERVATION = insert(R).values({name: bindparam(name, type_=R.c[name].type) for name in _INSERTED})


def _owned_by(name: str) -> ColumnElement[bool]:
    """The reservation belongs to the tenant bound as `name`, in a condition no index serves: reservations asked for
    by id are found through the primary key, and the check only drops another tenant's. Written plainly, the
    planner may serve it with reservations_tenant_key instead (a generic plan, or statistics from before the table
    grew), and read every reservation the tenant ever made to find a few."""
    return (R.c.tenant_id + literal_column("''")) == bindparam(name, type_=String)


_OF_TENANT = _owned_by("tenant_id")


def _padded(items: Sequence) -> list:
    """`items` with the last repeated up to the next power of two: statements built per count of ids (an IN list)
    then come in a few sizes, and stay among each connection's prepared ones (driver.PREPARED_PER_CONNECTION)
    rather than being prepared again for every batch size met. A repeated id matches the rows it already does."""
    padded = list(items)
    if padded:
        padded += padded[-1:] * ((1 << (len(padded) - 1).bit_length()) - len(padded))
    return padded


@functools.cache
def _locked_statements(count: int) -> tuple[Executable, Executable]:
    """For `count` reservations of a tenant: their (tenant, metric) lock rows, taken in the metrics' order (so that
    two transactions locking several never wait on each other in a cycle), then the reservations' own rows."""
    ids = R.c.reservation_id.in_([bindparam(f"id_{n}", type_=String) for n in range(count)])
    of_tenant = L.c.tenant_id == bindparam("tenant_id", type_=String)
    locks = (
        select(L.c.metric)
        .where(of_tenant, L.c.metric.in_(select(R.c.metric).where(_OF_TENANT, ids)))
        .order_by(L.c.metric)
        .with_for_update(of=L)
    )
    return locks, select(R).where(_OF_TENANT, ids).with_for_update(of=R)


def locked_reservations(
    connection: Connection, tenant_id: str, reservation_ids: Sequence[str]
) -> dict[str, Reservation]:
    """The tenant's reservations among `reservation_ids`, by id, as they are once their (tenant, metric) locks
    (`lock`) and their own rows are held, asked in one round trip where the driver allows."""
    wanted = _padded(sorted(set(reservation_ids)))
    values = {"tenant_id": tenant_id, **{f"id_{n}": rid for n, rid in enumerate(wanted)}}
    locks, rows = _locked_statements(len(wanted))
    locked, found = driver.in_one_query(connection, [(locks, values), (rows, values)])
    reservations = [_of(_named(row)) for row in found]
    missing = sorted({r.metric for r in reservations} - {metric for (metric,) in locked})
    if missing:  # a lock row Reserve made is gone (never deleted today): made again, then the rows reread
        for metric in missing:
            lock(connection, tenant_id, metric)
        [found] = driver.in_one_query(connection, [(rows, values)])
        reservations = [_of(_named(row)) for row in found]
    return {r.reservation_id: r for r in reservations}


def commits_at_once(engine: Engine) -> bool:
    """Whether commit_if_open can decide Commits on the engine's database."""
    return engine.dialect.name == "postgresql"


def commit_if_open(
    connection: Connection, tenant_id: str, asks: Sequence[tuple[str, int]], now_us: int
) -> tuple[dict[str, Reservation], set[str]]:
    """Commit's transaction in one message (commits_at_once): the (tenant, metric) locks of the asked reservations
    (as locked_reservations takes them), then one statement that commits each asked (reservation id, amount) still
    open at `now_us` whose reserved amount covers the amount, and writes its usage event to the outbox, then COMMIT.
    The asked reservations as they were before that statement, by id, and the ids it committed. Ids are distinct.

    The instant is taken before the locks, yet a Commit cannot use room a Reserve gave away: a Reserve that counted
    an open reservation as expired marked it so under the same lock (_expire_passed), and the statement, which
    reads after the lock is granted, commits only what is still open. A change the lock does not order (a Release,
    the outbox loop's sweep), or a lock row gone, can make the statement skip a reservation its read saw open: the
    caller then decides again (the read and the ids committed disagree)."""
    values: dict[str, object] = {"tenant_id": tenant_id, "of_tenant": tenant_id, "now_us": now_us}
    padded = _padded(asks)
    for n, (reservation_id, amount) in enumerate(padded):
        values[f"id_{n}"], values[f"amount_{n}"] = reservation_id, amount
    locks, _ = _locked_statements(len(padded))
    statements = [(locks, values), (_commit_statement(len(padded)), values)]
    _, found = driver.in_one_query(connection, statements, commit=True)
    width = len(R.c)
    before = {row[0]: _of(_named(row[:width])) for row in found}
    return before, {row[0] for row in found if row[width]}


@functools.cache
def _commit_statement(count: int) -> Executable:
    """commit_if_open's statement for `count` reservations: their rows as they were, each with whether the
    data-modifying CTE committed it, and (for the CTE writing the outbox to run) how many events it wrote."""
    ids = [bindparam(f"id_{n}", type_=String) for n in range(count)]
    amount = case(*[(R.c.reservation_id == ids[n], bindparam(f"amount_{n}", type_=BigInteger)) for n in range(count)])
    now_us = bindparam("now_us", type_=BigInteger)
    of_tenant = _owned_by("of_tenant")  # not "tenant_id": SQLAlchemy keeps an UPDATE's column names for their values
    done = (
        update(R)
        .where(
            of_tenant,
            R.c.reservation_id.in_(ids),
            _IS_OPEN,
            R.c.expires_us > now_us,
            amount <= R.c.amount,
            exists().where(L.c.tenant_id == R.c.tenant_id, L.c.metric == R.c.metric),
        )
        .values(
            state=literal_column(str(COMMITTED)),
            committed_amount=amount,
            finish_us=now_us,
            recorded_us=case((amount == 0, now_us), else_=null()),
        )
        .returning(R.c.reservation_id, R.c.tenant_id, R.c.metric, R.c.user_id, R.c.committed_amount, R.c.dimensions)
        .cte("done")
    )
    event = select(
        literal(EVENT_PREFIX, String) + done.c.reservation_id,
        done.c.tenant_id,
        done.c.metric,
        done.c.user_id,
        done.c.committed_amount,
        now_us,
        literal_column("0"),
        now_us,
        literal_column("''"),
        done.c.dimensions,
    ).where(done.c.committed_amount > 0)
    written = insert(OUT).from_select(list(_OUTBOX_ROW), event).returning(OUT.c.event_id).cte("written")
    committed = R.c.reservation_id.in_(select(done.c.reservation_id))
    written_count = select(func.count()).select_from(written).scalar_subquery()
    return select(*R.c, committed, written_count).where(of_tenant, R.c.reservation_id.in_(ids))


def _named(row: tuple) -> SimpleNamespace:
    """A row of `select(R)` from the driver, its columns by name as `_of` reads them."""
    return SimpleNamespace(**dict(zip(R.c.keys(), row)))


def insert_reservations(connection: Connection, reservations: Sequence[Reservation], *, commit: bool = False) -> None:
    """Insert open reservations; `commit`: and commit the transaction in the same round trip where the driver
    allows (the transaction's last statements)."""
    statements = [(_INSERT_RESERVATION, {name: getattr(r, name) for name in _INSERTED}) for r in reservations]
    driver.in_one_query(connection, statements, commit=commit)


_FINISH = (
    update(R)
    .where(R.c.reservation_id == bindparam("finished_id", type_=String))
    .values(
        state=bindparam("state"),
        committed_amount=bindparam("committed"),
        finish_us=bindparam("finish_us"),
        recorded_us=bindparam("recorded_us"),
    )
)
_OUTBOX_ROW = (
    "event_id",
    "tenant_id",
    "metric",
    "user_id",
    "quantity",
    "occurred_us",
    "attempts",
    "next_attempt_us",
    "last_error",
    "dimensions",
)
_INSERT_OUTBOX = insert(OUT).values({name: bindparam(name, type_=OUT.c[name].type) for name in _OUTBOX_ROW})


class Finishing(NamedTuple):
    """A reservation to end in `state`, and with `event`, its usage to the outbox in the same transaction."""

    reservation_id: str
    state: int
    committed: int
    event: OutboxEvent | None = None


def finish(connection: Connection, finishing: Sequence[Finishing], *, now_us: int, commit: bool = False) -> None:
    """End the reservations (not recorded in Usage yet); `commit`: and commit the transaction, all in one round
    trip where the driver allows (its last statements)."""
    statements: list[tuple[Executable, dict]] = []
    for one in finishing:
        finished = {"finished_id": one.reservation_id, "state": one.state, "committed": one.committed}
        statements.append((_FINISH, {**finished, "finish_us": now_us, "recorded_us": None}))
        if one.event is not None:
            row = {"attempts": 0, "next_attempt_us": now_us, "last_error": ""}
            row.update({name: getattr(one.event, name) for name in _OUTBOX_ROW if name not in row})
            statements.append((_INSERT_OUTBOX, row))
    if statements:
        driver.in_one_query(connection, statements, commit=commit)


def delivered(connection: Connection, event_ids: Sequence[str], now_us: int, *, commit: bool = False) -> None:
    """Usage holds the events: number their delivery (all one more than the latest: a Reserve that noted a number
    at least theirs noted it after Usage held them, whichever transaction numbered it) and mark their reservations
    recorded; events recorded before keep their number. `commit`: and commit the transaction, in one round trip
    where the driver allows (its last statements)."""
    if not event_ids:
        return
    values: dict[str, object] = {"now_us": now_us}
    padded = _padded(event_ids)
    for n, event_id in enumerate(padded):
        values[f"event_{n}"], values[f"reservation_{n}"] = event_id, reservation_of_event(event_id)
    driver.in_one_query(connection, [(s, values) for s in _delivered_statements(len(padded))], commit=commit)


@functools.cache
def _delivered_statements(count: int) -> tuple[Executable, Executable]:
    """`delivered`'s two updates for `count` events, built once: their parameters are bound at each execution."""
    latest = select(func.coalesce(func.max(OUT.c.delivered_seq), 0) + 1).scalar_subquery()
    now_us = bindparam("now_us", type_=OUT.c.delivered_us.type)
    events = OUT.c.event_id.in_([bindparam(f"event_{n}", type_=String) for n in range(count)])
    reservations = R.c.reservation_id.in_([bindparam(f"reservation_{n}", type_=String) for n in range(count)])
    return (
        # Numbered only if not yet, but not said as "delivered_seq IS NULL": that would let the planner scan the
        # partial index of every undelivered row (usage_outbox_due_idx), all tenants', rather than find these few
        # by their ids; a row numbered before keeps its number and time.
        update(OUT)
        .where(events)
        .values(
            delivered_seq=func.coalesce(OUT.c.delivered_seq, latest),
            delivered_us=func.coalesce(OUT.c.delivered_us, now_us),
        ),
        update(R).where(reservations, R.c.recorded_us.is_(None)).values(recorded_us=now_us),
    )


def drop(connection: Connection, event_id: str) -> bool:
    """Delete an event from the outbox; whether it was there (the loop and a commit's own send may both send it)."""
    return rowcount(connection.execute(delete(OUT).where(OUT.c.event_id == event_id))) > 0


def attempts(connection: Connection, event_id: str) -> int:
    return connection.execute(select(OUT.c.attempts).where(OUT.c.event_id == event_id)).scalar() or 0


def postpone(connection: Connection, event_id: str, next_us: int, error: str) -> None:
    connection.execute(
        update(OUT)
        .where(OUT.c.event_id == event_id)
        .values(attempts=OUT.c.attempts + 1, next_attempt_us=next_us, last_error=error[:500])
    )


def outbox_pass(
    connection: Connection, now_us: int, forget_before_us: int, limit: int, *, commit: bool = False
) -> list[OutboxEvent]:
    """The outbox loop's pass, in one round trip where the driver allows: up to `limit` open reservations past
    their expiry marked EXPIRED (they already count for nothing), delivered rows older than `forget_before_us`
    deleted (the latest kept, so the numbering never restarts), then up to `limit` committed events not delivered
    yet whose next attempt is due, oldest first. `commit`: and commit the transaction with them."""
    values = {"now_us": now_us, "forget_before_us": forget_before_us}
    *_, due = driver.in_one_query(connection, [(s, values) for s in _pass_statements(limit)], commit=commit)
    return [OutboxEvent(*row) for row in due]


@functools.cache
def _pass_statements(limit: int) -> tuple[Executable, Executable, Executable]:
    """outbox_pass's statements, built once: their parameters are bound at each execution."""
    now_us = bindparam("now_us", type_=BigInteger)
    # Rows another transaction holds are skipped, never waited for: a Reserve marking its metric's expired
    # reservations (_expire_passed) or a Commit holds several, taken in their own order, and the pass taking them in
    # another would deadlock with it. What it skips, that transaction ends or the next pass marks.
    expired = (
        select(R.c.reservation_id)
        .where(_IS_OPEN, R.c.expires_us <= now_us)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    latest = select(func.max(OUT.c.delivered_seq)).scalar_subquery()
    return (
        update(R).where(R.c.reservation_id.in_(expired), _IS_OPEN).values(state=EXPIRED, finish_us=now_us),
        delete(OUT).where(
            OUT.c.delivered_us < bindparam("forget_before_us", type_=BigInteger), OUT.c.delivered_seq < latest
        ),
        select(*(OUT.c[field.name] for field in dataclasses.fields(OutboxEvent)))
        .where(OUT.c.delivered_seq.is_(None), OUT.c.next_attempt_us <= now_us)
        .order_by(OUT.c.next_attempt_us, OUT.c.event_id)
        .limit(limit),
    )
