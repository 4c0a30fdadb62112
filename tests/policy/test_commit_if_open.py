"""Commit's transaction in one message (entitlements.commit_if_open) on PostgreSQL, the only backend it sends on,
with both ways Policy's pool sends it (POLICY_DB_POOLING=DIRECT and TRANSACTION, as test_reserve_if_room.py): what
it commits and writes to the outbox, why its instant may be taken before its lock (a Reserve marks what it counted
as expired), the decision taken again when a Release comes between its read and its write, and that its
reservations are found by id (the primary key) however many the tenant has made; and that the outbox pass, which
marks expired reservations too, skips rows another transaction holds rather than deadlock with a Reserve's marks."""

from __future__ import annotations

import secrets
import threading
from dataclasses import replace

import pytest
from psycopg.sql import Literal
from sqlalchemy import select, text, update

from tests import support
from tollgate.services.policy import tables
from tollgate.services.policy.domain.entitlements import COMMITTED, EXPIRED, OPEN, RELEASED, Reservation, event_id_of
from tollgate.services.policy.domain.errors import ReservationNotOpen
from tollgate.services.policy.repository import entitlements
from tollgate.services.policy.service.entitlements import _commit_together
from tollgate.shared import driver
from tollgate.shared.clock import now_micros

METRIC, OTHER = "api.requests", "api.tokens"
HOUR_US = 3600 * 10**6
R, OUT = tables.reservations.c, tables.usage_outbox.c


def _open(policy_engine, tenant: str, amount: int, *, expires_us: int, metric: str = METRIC) -> Reservation:
    """An open reservation stored, after its metric's lock row is made (as a first Reserve makes it)."""
    now = now_micros()
    with policy_engine.begin() as connection:
        entitlements.held_under_lock(connection, tenant, metric, now, [entitlements.Asked("ann", ((now, now + 1),), 0)])
    made = Reservation(
        f"rsv_{secrets.token_hex(12)}", tenant, "ann", metric, amount, secrets.token_hex(6), OPEN, now, expires_us
    )
    with policy_engine.begin() as connection:
        entitlements.insert_reservations(connection, [made])
    return made


def _row(policy_engine, reservation_id: str):
    with policy_engine.connect() as connection:
        return connection.execute(select(tables.reservations).where(R.reservation_id == reservation_id)).one()


def _outbox(policy_engine, tenant: str) -> dict[str, tuple[int, int]]:
    with policy_engine.connect() as connection:
        rows = connection.execute(select(OUT.event_id, OUT.quantity, OUT.occurred_us).where(OUT.tenant_id == tenant))
        return {event_id: (quantity, occurred) for event_id, quantity, occurred in rows}


def test_it_commits_each_open_reservation_covering_its_amount_and_writes_the_usage_event_once(policy_engine):
    tenant, now = support.new_tenant(), now_micros()
    covered = _open(policy_engine, tenant, 3, expires_us=now + HOUR_US)
    short = _open(policy_engine, tenant, 2, expires_us=now + HOUR_US)
    free = _open(policy_engine, tenant, 4, expires_us=now + HOUR_US)
    passed = _open(
        policy_engine, tenant, 1, expires_us=now - 1
    )  # last: a lock taken for a Reserve would mark it expired
    asks = [(covered.reservation_id, 2), (short.reservation_id, 5), (passed.reservation_id, 1), ("rsv_none", 1)]
    with policy_engine.begin() as connection:
        before, done = entitlements.commit_if_open(connection, tenant, asks + [(free.reservation_id, 0)], now)
    assert done == {covered.reservation_id, free.reservation_id}
    assert before == {r.reservation_id: r for r in (covered, short, passed, free)}  # as they were: all open
    assert _outbox(policy_engine, tenant) == {event_id_of(covered.reservation_id): (2, now)}  # none for an amount of 0
    row = _row(policy_engine, covered.reservation_id)
    assert (row.state, row.committed_amount, row.finish_us, row.recorded_us) == (COMMITTED, 2, now, None)
    row = _row(policy_engine, free.reservation_id)  # nothing to record: recorded as it commits
    assert (row.state, row.committed_amount, row.finish_us, row.recorded_us) == (COMMITTED, 0, now, now)
    for untouched in (short, passed):
        assert _row(policy_engine, untouched.reservation_id).state == OPEN
    with policy_engine.begin() as connection:  # again: nothing is open any more, nothing written twice
        _, again = entitlements.commit_if_open(connection, tenant, [(covered.reservation_id, 2)], now + 1)
    assert again == set() and len(_outbox(policy_engine, tenant)) == 1


@pytest.mark.parametrize("reserve", ["in one message", "under the lock"])
def test_a_reserve_that_counted_a_reservation_as_expired_marks_it_so_an_earlier_commit_instant_cannot_use_it(
    policy_engine, reserve
):
    tenant, now = support.new_tenant(), now_micros()
    passed = _open(policy_engine, tenant, 5, expires_us=now)
    elsewhere = _open(policy_engine, tenant, 5, expires_us=now, metric=OTHER)  # no Reserve of its metric runs
    later = now + 1  # the Reserve's instant: the reservation counts for nothing
    asked = entitlements.Asked("ann", ((later - HOUR_US, later + HOUR_US),), 0, "k")
    with policy_engine.begin() as connection:
        if reserve == "in one message":
            taken = replace(passed, reservation_id=f"rsv_{secrets.token_hex(12)}", idempotency_key="k", create_us=later)
            tries = [entitlements.Try(taken, asked, [entitlements.Room(0, False, 0)])]
            [(held, inserted)] = entitlements.reserve_if_room(connection, tenant, METRIC, later, tries)
            assert inserted  # the room was 0: the passed reservation was not counted
        else:
            [held] = entitlements.held_under_lock(connection, tenant, METRIC, later, [asked])
        assert held.reserved == {}
    assert (_row(policy_engine, passed.reservation_id).state, _row(policy_engine, passed.reservation_id).finish_us) == (
        EXPIRED,
        later,
    )
    assert _row(policy_engine, elsewhere.reservation_id).state == OPEN
    asks = [(passed.reservation_id, 5), (elsewhere.reservation_id, 5)]
    with (
        policy_engine.begin() as connection
    ):  # a Commit whose instant came before the expiry, deciding after the Reserve
        before, done = entitlements.commit_if_open(connection, tenant, asks, now - 1)
    assert done == {elsewhere.reservation_id}
    assert before[passed.reservation_id].state == EXPIRED
    assert list(_outbox(policy_engine, tenant)) == [event_id_of(elsewhere.reservation_id)]


def test_a_release_between_the_read_and_the_write_of_the_message_is_answered_as_the_lock_path_answers_it(policy_engine):
    tenant = support.new_tenant()
    reservation = _open(policy_engine, tenant, 3, expires_us=now_micros() + HOUR_US)
    outcome: list = []
    with policy_engine.connect() as releasing:  # a Release, which takes no lock row, holding the reservation's row
        releasing.execute(
            update(tables.reservations)
            .where(R.reservation_id == reservation.reservation_id)
            .values(state=RELEASED, finish_us=now_micros())
        )
        pid = releasing.execute(text("SELECT pg_backend_pid()")).scalar()
        committing = threading.Thread(
            target=lambda: outcome.extend(
                _commit_together(tenant, [(reservation.reservation_id, 2)], transactions=policy_engine)
            )
        )
        committing.start()

        def waiting() -> bool:
            with policy_engine.connect() as watching:
                blocked = "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                return watching.execute(text(blocked), {"pid": pid}).scalar() > 0

        assert support.wait_until(waiting, seconds=10)
        releasing.commit()  # the message's read saw it open; its write finds it released and commits nothing
    committing.join(timeout=10)
    [answer] = outcome
    assert isinstance(answer, ReservationNotOpen) and "released" in str(answer)
    assert _row(policy_engine, reservation.reservation_id).state == RELEASED
    assert _outbox(policy_engine, tenant) == {}


def test_a_commits_reservations_are_found_by_id_however_many_the_tenant_has_made(policy_engine):
    # Reservations are never deleted: a plan that finds a Commit's few through the tenant's rows reads them all.
    tenant, now = support.new_tenant(), now_micros()
    asked = _open(policy_engine, tenant, 1, expires_us=now + HOUR_US)
    many = [replace(asked, reservation_id=f"rsv_{secrets.token_hex(12)}", idempotency_key=f"k{n}") for n in range(2000)]
    with policy_engine.begin() as connection:
        entitlements.insert_reservations(connection, many)
    values = {"tenant_id": tenant, "of_tenant": tenant, "now_us": now, "id_0": asked.reservation_id, "amount_0": 1}
    with policy_engine.connect() as connection:
        for statement in (*entitlements._locked_statements(1), entitlements._commit_statement(1)):
            done = driver.compiled(statement, connection.dialect)
            connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")  # as Policy's pools plan
            connection.exec_driver_sql(f"PREPARE probe AS {done.sql}")
            written = ", ".join(
                Literal(value).as_string(connection.connection.driver_connection) for value in done.values(values)
            )
            rows = connection.exec_driver_sql(f"EXPLAIN EXECUTE probe({written})")
            plan = "\n".join(row[0] for row in rows)
            connection.exec_driver_sql("DEALLOCATE probe")
            assert "reservations_tenant_key" not in plan and "reservations_pkey" in plan, plan
        connection.rollback()


def test_the_outbox_pass_skips_reservations_another_transaction_holds_instead_of_waiting_for_them(policy_engine):
    # A Reserve marking its metric's expired reservations holds their rows in its own order: a pass that waited
    # for one of them while holding another could deadlock with it.
    tenant, now = support.new_tenant(), now_micros()
    held = _open(policy_engine, tenant, 1, expires_us=now - 1)
    free = _open(policy_engine, tenant, 1, expires_us=now - 1, metric=OTHER)  # another metric: its lock marks none
    with policy_engine.connect() as holding:
        holding.execute(
            update(tables.reservations).where(R.reservation_id == held.reservation_id).values(finish_us=now)
        )
        with policy_engine.begin() as passing:
            passing.exec_driver_sql("SET LOCAL lock_timeout = '5s'")  # waiting would fail the pass, not hang it
            entitlements.outbox_pass(passing, now, now - HOUR_US, 10_000)
        holding.rollback()
    assert _row(policy_engine, free.reservation_id).state == EXPIRED
    assert _row(policy_engine, held.reservation_id).state == OPEN  # the next pass marks it
